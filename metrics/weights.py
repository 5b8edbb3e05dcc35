"""Where parameter files come from.

Order: an explicit folder (``--weights-dir`` / ``weights=PATH``), the folder in the environment
variable ``IQA_ROBUSTNESS_WEIGHTS`` (it may hold pyiqa-named files and original-release files,
flat or under ``pyiqa/`` and ``original/``), pyiqa's cache (``$TORCH_HOME/hub/pyiqa``), and
finally the file's public URL, downloaded into that cache. Offline, a missing file raises
:class:`MissingWeightsError` naming the file and where to put it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ENV_VAR = "IQA_ROBUSTNESS_WEIGHTS"
_SUBFOLDERS = ("", "pyiqa", "original")


class MissingWeightsError(FileNotFoundError):
    """A parameter file is not on disk and could not be downloaded."""


def pyiqa_cache_dir() -> Path:
    """pyiqa's download cache: ``$TORCH_HOME/hub/pyiqa`` (``~/.cache/torch/hub/pyiqa`` by default)."""
    return Path(torch.hub.get_dir()) / "pyiqa"


def search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for parameter files, first match wins."""
    roots: list[Path] = []
    if weights_dir is not None:
        roots.append(Path(weights_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        roots.append(Path(env).expanduser())
    dirs = [root / sub if sub else root for root in roots for sub in _SUBFOLDERS]
    dirs.append(pyiqa_cache_dir())
    return dirs


def find_weight_file(filename: str, weights_dir: str | Path | None = None) -> Path | None:
    for folder in search_dirs(weights_dir):
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def resolve_weight_file(
    filename: str,
    weights_dir: str | Path | None = None,
    urls: Iterable[str] = (),
) -> Path:
    """Path of a parameter file, downloading it into pyiqa's cache when it is nowhere on disk.

    Raises:
        MissingWeightsError: the file is not on disk and no URL worked (e.g. offline).
    """
    found = find_weight_file(filename, weights_dir)
    if found is not None:
        log.debug("weights %s found at %s", filename, found)
        return found
    target = pyiqa_cache_dir() / filename
    errors: list[str] = []
    for url in urls:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            log.info("downloading %s from %s", filename, url)
            torch.hub.download_url_to_file(url, str(target), progress=False)
            return target
        except Exception as exc:  # network errors come in many types
            errors.append(f"{url}: {exc}")
            target.unlink(missing_ok=True)
    searched = ", ".join(str(d) for d in search_dirs(weights_dir))
    why = f" Download failed ({'; '.join(errors)})." if errors else ""
    raise MissingWeightsError(
        f"weight file {filename!r} not found.{why} Put it in one of: {searched} "
        f"(or point {ENV_VAR} / --weights-dir at a folder holding it), "
        "or use weights='random' (--random-weights) for a smoke run without real weights."
    )
