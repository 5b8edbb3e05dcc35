"""What makes two runs of a case the same computation: the case fingerprint ``--resume`` matches on.

A fingerprint is the SHA-256 of everything that decides a case's numbers: the metric (its name,
class, weights mode and a checksum of its parameter values, which covers the weight files it
loaded), the attack with every hyperparameter, the test images' content (file bytes, names,
the size they are read at), the training images' content and training length for universal
attacks, the amplitude, the seed, the suite options that change scores and the suite's version.
Device, batch size and timing do not enter: they do not change a result beyond float noise.

Content checksums are computed once per file per process (keyed by path, size and modification
time), so a session of many cases over one dataset reads each file once. docs/results.md, "Long runs",
says how ``--resume``, shards and ``merge`` use it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from iqa_robustness import __version__
from iqa_robustness.attacks import Attack

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}
_CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) for the process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with p.open("rb") as fh:
            while block := fh.read(_CHUNK):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def source_digest(path: Path | None, source: str) -> str:
    """The content of an image's or clip's source: a file's digest, a folder's files' digests, else its name."""
    if path is None:
        return source  # built-in pixels (skimage data, generated clips): the description names them
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.iterdir() if p.is_file()):
            digest.update(f"{child.name}:{file_digest(child)};".encode())
        return digest.hexdigest()
    return file_digest(path)


def dataset_identity(dataset: Any) -> str:
    """Digest of a dataset as opened: per image (or clip), its name, its content and its reading options."""
    digest = hashlib.sha256(str(getattr(dataset, "name", "")).encode())
    items = getattr(dataset, "items", None)
    if items is None:
        items = getattr(dataset, "clips", ())
    for item in items:
        name = getattr(item, "image_name", None) or getattr(item, "clip_name", "")
        options = [getattr(item, "size", None), getattr(item, "max_frames", None)]
        if hasattr(item, "quality"):  # a JPEG copy: its coding decides the pixels
            options += [item.quality, item.colour]
        # a frame of a video file: the file's digest; its index is in the name (``clip/0003``)
        content = source_digest(getattr(item, "path", None), str(getattr(item, "source", "")))
        digest.update(json.dumps([name, content, options], default=str).encode())
    for name in getattr(dataset, "skipped", ()):
        digest.update(f"skipped:{name};".encode())
    return digest.hexdigest()


def case_fingerprint(
    *,
    metric: str,
    attack: Attack,
    dataset: str,
    amplitude: float | None,
    train_dataset: str | None,
    seed: int,
    options: dict[str, Any],
) -> str:
    """The fingerprint of one case from the identities of its parts (see the module docstring).

    Args:
        metric: :func:`metric_identity` of the metric.
        attack: the attack with its hyperparameters.
        dataset: :func:`dataset_identity` of the test images.
        amplitude, train_dataset: a universal case's amplitude and :func:`dataset_identity` of its
            training images (``None`` otherwise).
        seed: the case's seed.
        options: the suite options that change scores (image size, clamping, autocast, ...).
    """
    fields = {
        "suite_version": __version__,
        "metric": metric,
        "attack": attack.name,
        "hyperparameters": attack.hyperparameters(),
        "dataset": dataset,
        "amplitude": amplitude,
        "train_dataset": train_dataset,
        "seed": seed,
        "options": options,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def clear_digest_memo() -> None:
    """Forget the remembered file digests (tests that rewrite a file within one timestamp tick)."""
    _FILE_DIGESTS.clear()


__all__ = [
    "case_fingerprint",
    "clear_digest_memo",
    "dataset_identity",
    "file_digest",
    "source_digest",
]
