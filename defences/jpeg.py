"""JPEG coding in front of the metric: 8 bits by truncation, encoded at quality ``q``, decoded.

As the follow-up benchmark of defences: ``uint8(255 x)`` truncates (unlike the benchmark's JPEG
inputs for full-reference metrics, which round), then libjpeg through ``torchvision.io`` encodes and
decodes each image (the standard tables scaled to ``q``, 4:2:0 chroma subsampling). No gradient:
attacks pass it straight through (BPDA).
"""

from __future__ import annotations

import dataclasses

import torch
from torchvision.io import decode_jpeg, encode_jpeg

from .base import Defence, register_defence


def libjpeg(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """Each (3, H, W) uint8 image of ``pixels`` JPEG-coded at ``quality`` by libjpeg, as floats in [0, 1] on the CPU."""
    out = [decode_jpeg(encode_jpeg(image, quality=quality)) for image in pixels.cpu()]
    return torch.stack(out).float() / 255.0


def check_quality(name: str, q: int) -> None:
    if not 1 <= q <= 100:
        raise ValueError(f"{name}: q must be a quality from 1 to 100, not {q}")


@register_defence
@dataclasses.dataclass(frozen=True)
class Jpeg(Defence):
    """JPEG at quality ``q`` (grid 10, 30, 50, 70, 90)."""

    name = "jpeg"
    label_field = "q"
    differentiable = False
    description = "JPEG encode/decode at quality q; BPDA"

    q: int = 50

    def __post_init__(self) -> None:
        check_quality(self.name, self.q)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        pixels = (x.detach().clamp(0, 1) * 255).to(torch.uint8)  # truncation, as the source
        return libjpeg(pixels, self.q).to(device=x.device, dtype=x.dtype)
