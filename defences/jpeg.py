"""JPEG coding in front of the metric: 8 bits by truncation, encoded at quality ``q``, decoded.

As the follow-up benchmark of defences: ``uint8(255 x)`` truncates (unlike the benchmark's JPEG
inputs for full-reference metrics, which round), then libjpeg through ``torchvision.io`` encodes and
decodes each image. No gradient: attacks pass it straight through (BPDA).
"""

from __future__ import annotations

import dataclasses

import torch
from torchvision.io import decode_jpeg, encode_jpeg

from .base import Defence, register_defence


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
        if not 1 <= self.q <= 100:
            raise ValueError(f"jpeg: q must be a quality from 1 to 100, not {self.q}")

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        pixels = (x.detach().clamp(0, 1) * 255).to(torch.uint8).cpu()  # truncation, as the source
        out = [decode_jpeg(encode_jpeg(image, quality=self.q)) for image in pixels]
        return torch.stack(out).to(device=x.device, dtype=x.dtype) / 255.0
