"""Decoding image files to float RGB tensors (3, H, W) in [0, 1], and resizing them.

Pillow decodes; the rules (grayscale, palettes, alpha composited on white, 16-bit pixels, EXIF
orientation not applied) are in :mod:`iqa_robustness.data.images`. Unreadable files raise
:class:`~iqa_robustness.data.errors.ImageReadError` naming every bad file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqa_robustness.data.errors import ImageReadError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp"})

OnError = Literal["raise", "skip"]
Size = int | tuple[int, int] | None
"""``None``: native size; ``int``: shrink so the longer side is at most this; ``(H, W)``: exact size."""


# --------------------------------------------------------------------------- decoding


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """Convert a Pillow image of any mode to a float32 RGB tensor (3, H, W) in [0, 1].

    See the module docstring for how grayscale, palette, 16-bit and alpha images are converted.
    """
    mode = image.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("RGBa", "La"):  # premultiplied alpha
        image = image.convert(mode.upper())
    elif mode not in ("1", "L", "LA", "I", "F", "RGB", "RGBA") and not mode.startswith("I;16"):
        image = image.convert("RGB")

    array = np.asarray(image)
    if array.dtype == np.bool_ or array.dtype.kind == "f":
        values = array.astype(np.float32)
    elif array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    else:  # I;16* (uint16) and I (int32): 16-bit sources, the only integer images Pillow reads as such
        values = array.astype(np.float32) / 65535.0
    values = np.clip(values, 0.0, 1.0)
    if values.ndim == 2:
        values = values[:, :, None]

    channels = values.shape[2]
    if channels in (2, 4):  # LA or RGBA: composite on white
        colour, alpha = values[:, :, :-1], values[:, :, -1:]
        values = colour * alpha + (1.0 - alpha)
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))


def target_size(native: tuple[int, int], size: Size) -> tuple[int, int]:
    """The (H, W) an image of native size (H, W) gets under the ``size`` option.

    Args:
        native: (height, width) of the decoded image.
        size: ``None`` keeps the native size; an int shrinks the image (never enlarges it) so that
            its longer side is at most that many pixels, keeping the aspect ratio; ``(H, W)`` is an
            exact size.
    """
    check_size(size)
    height, width = native
    if size is None:
        return height, width
    if isinstance(size, int):
        longer = max(height, width)
        if longer <= size:
            return height, width
        scale = size / longer
        return max(1, round(height * scale)), max(1, round(width * scale))
    return int(size[0]), int(size[1])


def resize_image(image: torch.Tensor, size: Size) -> torch.Tensor:
    """Resize a (3, H, W) or (N, 3, H, W) tensor under the ``size`` option (bilinear, antialiased)."""
    new = target_size((image.shape[-2], image.shape[-1]), size)
    if new == tuple(image.shape[-2:]):
        return image
    batch = image if image.ndim == 4 else image.unsqueeze(0)
    out = F.interpolate(batch, size=new, mode="bilinear", align_corners=False, antialias=True)
    out = out.clamp_(0.0, 1.0)
    return out if image.ndim == 4 else out[0]


def load_image(path: str | os.PathLike[str], *, size: Size = None) -> torch.Tensor:
    """Decode one image file to a float32 RGB tensor (3, H, W) in [0, 1].

    Raises:
        ImageReadError: the file cannot be decoded; the message names it and what to do.
    """
    path = Path(path)
    return decode_item(open_file, path, str(path), path.name, size)


def open_file(path: Path) -> Image.Image:
    return Image.open(path)


def decode_item(
    reader: Callable[..., Image.Image], arg: object, source: str, image_name: str, size: Size
) -> torch.Tensor:
    try:
        with reader(arg) as image:
            tensor = image_to_tensor(image)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        reason = reason_of(exc)
        raise ImageReadError(
            f"cannot read image {source}: {reason}. Replace or remove the file, or load the dataset "
            "with on_error='skip' to leave unreadable images out with a warning.",
            {image_name: reason},
        ) from exc
    return resize_image(tensor, size)


def list_bad(bad: dict[str, str]) -> str:
    return "\n".join(f"  {name}: {reason}" for name, reason in bad.items())


def unreadable_error(summary: str, bad: dict[str, str]) -> ImageReadError:
    return ImageReadError(
        f"{summary}:\n{list_bad(bad)}\n"
        "Remove or replace them, or pass on_error='skip' to leave them out with a warning.",
        bad,
    )


def reason_of(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_dataset_options(max_images: int | None, size: Size, on_error: str) -> None:
    check_size(size)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")


def check_size(size: Size) -> None:
    if size is None:
        return
    if isinstance(size, bool):
        raise ValueError(f"size must be None, an int or (height, width), not {size!r}")
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"size (longest side) must be a positive number of pixels, got {size}")
        return
    if (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        return
    raise ValueError(
        f"size must be None (native size), a positive int (longest side) or a pair of positive ints "
        f"(height, width), got {size!r}"
    )
