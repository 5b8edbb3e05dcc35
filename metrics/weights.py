"""Where parameter files come from.

Order: an explicit folder (``--weights-dir`` / ``weights=PATH``), the folder in the environment
variable ``IQA_ROBUSTNESS_WEIGHTS`` (it may hold pyiqa-named files and original-release files,
flat or under ``pyiqa/`` and ``original/``), pyiqa's cache (``$TORCH_HOME/hub/pyiqa``), and
finally the file's public URL, downloaded into that cache. Offline, a missing file raises
:class:`MissingWeightsError` naming the file and where to put it.

Offline mode (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1`` or ``IQA_ROBUSTNESS_OFFLINE=1``) skips
the download attempt, so a missing file fails at once instead of after network time-outs.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ENV_VAR = "IQA_ROBUSTNESS_WEIGHTS"
OFFLINE_ENV_VARS = ("IQA_ROBUSTNESS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_SUBFOLDERS = ("", "pyiqa", "original")
_TRUE = {"1", "true", "yes", "on"}


class MissingWeightsError(FileNotFoundError):
    """A parameter file is not on disk and could not be downloaded."""


def offline_mode() -> bool:
    """True when the environment asks for no network access (read at call time)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in OFFLINE_ENV_VARS)


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
    return list(dict.fromkeys(dirs))  # --weights-dir and the variable often name the same folder


def find_weight_file(
    filename: str, weights_dir: str | Path | None = None, extra_dirs: Iterable[str | Path] = ()
) -> Path | None:
    """First existing ``filename`` in :func:`search_dirs`, then in ``extra_dirs``; None if absent."""
    for folder in [*search_dirs(weights_dir), *(Path(d) for d in extra_dirs)]:
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def resolve_weight_file(
    filename: str,
    weights_dir: str | Path | None = None,
    urls: Iterable[str] = (),
    cache_dir: str | Path | None = None,
) -> Path:
    """Path of a parameter file, downloading it into a cache when it is nowhere on disk.

    Args:
        filename: the file's name.
        weights_dir: an explicit folder searched first.
        urls: where to download the file from, tried in order (skipped in offline mode).
        cache_dir: where a download goes and a further folder searched; pyiqa's cache by default.

    Raises:
        MissingWeightsError: the file is not on disk and no URL worked (offline, or the download failed).
    """
    cache = Path(cache_dir) if cache_dir is not None else pyiqa_cache_dir()
    found = find_weight_file(filename, weights_dir, extra_dirs=(cache,))
    if found is not None:
        log.debug("weights %s found at %s", filename, found)
        return found
    target = cache / filename
    urls = list(urls)
    if urls and offline_mode():
        raise missing_weights_error(filename, weights_dir, cache, why=" Offline mode: no download attempted.")
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
    why = f" Download failed ({'; '.join(errors)})." if errors else ""
    raise missing_weights_error(filename, weights_dir, cache, why=why)


def missing_weights_error(
    filename: str, weights_dir: str | Path | None = None, cache_dir: str | Path | None = None, why: str = ""
) -> MissingWeightsError:
    """The error for a file that is nowhere on disk: names the file and every folder that would do."""
    folders = search_dirs(weights_dir)
    if cache_dir is not None and Path(cache_dir) not in folders:
        folders.append(Path(cache_dir))
    searched = ", ".join(str(d) for d in folders)
    return MissingWeightsError(
        f"weight file {filename!r} not found.{why} Put it in one of: {searched} "
        f"(or point {ENV_VAR} / --weights-dir at a folder holding it), "
        "or use weights='random' (--random-weights) for a smoke run without real weights."
    )


def torch_hub_checkpoints() -> Path:
    """torch.hub's download cache, ``$TORCH_HOME/hub/checkpoints``: where torchvision and ``load_url`` look first."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def place_in_torch_hub(filename: str, url: str, weights_dir: str | Path | None = None) -> Path:
    """Make sure a file that a library loads through torch.hub is in torch.hub's cache.

    Libraries such as piq and torchmetrics load their files and torchvision's ImageNet backbones
    with ``torch.hub.load_state_dict_from_url``, which reads ``$TORCH_HOME/hub/checkpoints`` and
    downloads what is not there. The suite's folders come first (:func:`search_dirs`): a file found
    there is copied into that cache, so the library reads it and never reaches for the network;
    a file found nowhere is downloaded from ``url`` as the library would (skipped in offline mode).

    Raises:
        MissingWeightsError: the file is nowhere on disk and could not be downloaded.
    """
    checkpoints = torch_hub_checkpoints()
    found = resolve_weight_file(filename, weights_dir, urls=(url,), cache_dir=checkpoints)
    target = checkpoints / filename
    if found != target and (not target.is_file() or target.stat().st_size != found.stat().st_size):
        checkpoints.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found, target)
        log.debug("copied %s to torch.hub's cache %s", found, checkpoints)
    return target
