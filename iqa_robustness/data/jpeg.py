"""The distorted inputs of full-reference cases: JPEG copies of the clean images, as the benchmark makes them.

The MSU benchmark's code (``robustness_benchmark/methods/utils/evaluate.py``, ``compress``) hands
the RGB float image times 255 to OpenCV's ``imencode('.jpg', ...)`` and divides ``imdecode`` by
255. So, exactly:

- float to 8 bits by round-half-to-even with saturation (``clip(rint(255 x), 0, 255)``, as
  OpenCV's ``saturate_cast`` does; 100.5 becomes 100, 101.5 becomes 102);
- OpenCV reads the array as BGR: the encoder's colour conversion (the weights of R and B in the
  luma) and its 4:2:0 chroma subsampling run with R and B swapped, and the decoded array comes
  back in the order it went in (RGB);
- quality ``q`` is OpenCV's ``IMWRITE_JPEG_QUALITY`` (libjpeg's quality scaling).

``colour="code"`` (the default) is that behaviour; ``colour="rgb"`` encodes a correct RGB JPEG
(the channels reversed to BGR for OpenCV and back after decoding). The two differ pixel-wise.
OpenCV (a pyiqa dependency) does the coding: the point is to reproduce the benchmark's inputs,
which another encoder would not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from iqa_robustness.data.images import Dataset, ImageItem

JpegColour = Literal["code", "rgb"]
#: the qualities the benchmark's follow-up uses when none is given
DEFAULT_QUALITY = 80


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as 8-bit values: ``clip(rint(255 x), 0, 255)`` (round half to even)."""
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def compress_array(image: np.ndarray, quality: int, colour: JpegColour = "code") -> np.ndarray:
    """One (H, W, 3) RGB float image in [0, 1] through a JPEG of ``quality``, back as float in [0, 1].

    Raises:
        ValueError: a quality outside 1..100, an unknown colour mode, or not an (H, W, 3) image.
    """
    import cv2

    if not 1 <= int(quality) <= 100 or int(quality) != quality:
        raise ValueError(f"JPEG quality must be an integer from 1 to 100, not {quality!r}")
    if colour not in ("code", "rgb"):
        raise ValueError(f"unknown JPEG colour mode {colour!r}: use 'code' (the benchmark's) or 'rgb'")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    pixels = to_uint8(array)
    if colour == "rgb":
        pixels = np.ascontiguousarray(pixels[..., ::-1])
    ok, buffer = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {array.shape[1]}x{array.shape[0]} image as JPEG")
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if colour == "rgb":
        decoded = decoded[..., ::-1]
    return decoded.astype(np.float64) / 255.0


def compress(batch: torch.Tensor, quality: int, colour: JpegColour = "code") -> torch.Tensor:
    """An (N, 3, H, W) batch in [0, 1] through JPEG, image by image; same dtype and device as ``batch``."""
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected an (N, 3, H, W) batch, got shape {tuple(batch.shape)}")
    images = batch.detach().cpu().double().permute(0, 2, 3, 1).numpy()
    out = np.stack([compress_array(image, quality, colour) for image in images])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(dtype=batch.dtype, device=batch.device)


def jpeg_name(image_name: str, quality: int) -> str:
    """The row name of an image's JPEG copy: ``<file name with extension>-jpeg<q>`` (benchmark code)."""
    return f"{image_name}-jpeg{int(quality)}"


@dataclasses.dataclass(frozen=True)
class JpegItem(ImageItem):
    """An image's JPEG copy: the original decoded (and resized) as usual, then through :func:`compress_array`."""

    quality: int = DEFAULT_QUALITY
    colour: JpegColour = "code"
    original_name: str = ""

    def load(self) -> torch.Tensor:
        return compress(self.reference()[None], self.quality, self.colour)[0]

    def reference(self) -> torch.Tensor:
        """The clean image this copy was made from (the reference of a full-reference metric)."""
        return super().load()


def jpeg_dataset(dataset: Dataset, qualities: Sequence[int], colour: JpegColour = "code") -> Dataset:
    """The dataset's images as their JPEG copies, one per quality, named ``<image>-jpeg<q>`` (image by image).

    The attacks then perturb the JPEG copies, and PSNR, SSIM and MSE compare the attacked image
    with the JPEG it came from, as the benchmark's code does.

    Raises:
        ValueError: no quality, or one outside 1..100.
    """
    qualities = [int(q) for q in qualities]
    if not qualities or any(not 1 <= q <= 100 for q in qualities):
        raise ValueError(f"JPEG qualities must be integers from 1 to 100, got {list(qualities)}")
    items = tuple(
        JpegItem(
            **{f.name: getattr(item, f.name) for f in dataclasses.fields(ImageItem)}
            | {"image_name": jpeg_name(item.image_name, q)},
            quality=q,
            colour=colour,
            original_name=item.image_name,
        )
        for item in dataset.items
        for q in qualities
    )
    return dataclasses.replace(dataset, items=items)
