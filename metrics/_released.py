"""Shared parts of the metrics that load an original authors' release directly (not through pyiqa).

The released checkpoints of LinearityIQA, KonCept512 and SPAQ were written by old PyTorch versions
(1.1 to 1.3) and are hosted on file-sharing services. This module resolves such a file, loads it
with ``torch.load(weights_only=True)`` where its content allows, and recognises the usual failure
of a blocked download (an HTML page saved under the checkpoint's name).

It also holds the one differentiable resize these metrics use in place of PIL's.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .weights import MissingWeightsError, resolve_weight_file

log = logging.getLogger(__name__)

#: Normalisation of torchvision's ImageNet models (LinearityIQA's ``normalize`` call).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def google_drive_url(file_id: str) -> str:
    """A direct download link of a public Google Drive file.

    ``drive.usercontent.google.com`` with ``confirm=t`` skips the "cannot scan this file for viruses"
    page that Google Drive shows instead of files over 100 MB.
    """
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


def resolve_release_file(filename: str, weights_dir: str | Path | None, urls: Iterable[str], release_page: str) -> Path:
    """:func:`metrics.weights.resolve_weight_file`, with the original release page in the error message."""
    try:
        return resolve_weight_file(filename, weights_dir, urls=urls)
    except MissingWeightsError as exc:
        raise MissingWeightsError(f"{exc} The authors publish {filename!r} at {release_page}.") from exc


def _looks_like_html(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def load_release_checkpoint(path: str | Path, release_page: str) -> Any:
    """Load a released checkpoint on the CPU, as safely as its content allows.

    ``weights_only=True`` first. A file that pickles other Python objects (the optimiser or AMP
    state some releases carry) fails that check; it is then loaded with ``weights_only=False``,
    with a warning saying why, since it comes from the authors' own release.

    Raises:
        ValueError: the file is an HTML page (a download that was redirected or blocked) or not a
            PyTorch checkpoint at all (e.g. an archive of the release folder).
    """
    path = Path(path)
    by_hand = f"Delete it, download the file by hand from {release_page} and put it in the same folder."
    if _looks_like_html(path):
        raise ValueError(f"{path} is an HTML page, not a checkpoint: the download was redirected or blocked. {by_hand}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as exc:  # torch's reader reports a foreign or truncated archive this way
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({exc}). {by_hand}") from exc
    except pickle.UnpicklingError:
        log.warning(
            "%s pickles Python objects other than tensors and containers, which "
            "torch.load(weights_only=True) refuses; loading it with weights_only=False because it is "
            "the authors' released file (%s)",
            path,
            release_page,
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({exc}). {by_hand}") from exc


def state_dict_from(checkpoint: Any, key: str | None, path: str | Path) -> Mapping[str, torch.Tensor]:
    """The parameter dict inside a loaded checkpoint: ``checkpoint[key]``, or the checkpoint itself."""
    if key is not None and isinstance(checkpoint, Mapping) and key in checkpoint:
        checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping) or not all(torch.is_tensor(v) for v in checkpoint.values()):
        where = f"under {key!r} " if key is not None else ""
        raise ValueError(
            f"{path} does not hold a state dict {where}as the original release does; check that it is the right file"
        )
    return checkpoint


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Differentiable stand-in for PIL's bilinear resize of an (N, C, H, W) batch to ``size`` (H, W).

    ``antialias=True`` widens the triangle filter when shrinking, as PIL does; upscaling is plain
    bilinear interpolation in both. PIL works on 8-bit pixels and rounds the result, this does not,
    so values differ from a PIL-resized image by up to about one grey level. A batch already at
    ``size`` passes unchanged (PIL's resize to the same size is a copy).
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def shorter_side_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """Output (H, W) of torchvision's ``Resize(shorter)``: the shorter side becomes ``shorter``,
    the longer one ``int(shorter * longer / shorter_side)`` (truncated, as torchvision does)."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter
