"""Differentiable JPEG: the JPEG pipeline (YCbCr, 4:2:0, 8 x 8 DCT, quantisation at quality ``q``) with
straight-through rounding, from kornia (``kornia.enhance.jpeg_codec_differentiable``, Shin and Song's
differentiable JPEG). Its output approximates libjpeg's; the gradient is real, not BPDA.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import Defence, register_defence


@register_defence
@dataclasses.dataclass(frozen=True)
class DiffJpeg(Defence):
    """JPEG at quality ``q`` (grid 10, 30, 50, 70, 90), differentiable."""

    name = "diffjpeg"
    label_field = "q"
    description = "differentiable JPEG at quality q (kornia), straight-through rounding"

    q: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.q <= 100:
            raise ValueError(f"diffjpeg: q must be a quality from 1 to 100, not {self.q}")

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        from kornia.enhance import jpeg_codec_differentiable

        quality = torch.tensor([float(self.q)], device=x.device, dtype=x.dtype)
        return jpeg_codec_differentiable(x.clamp(0, 1), quality)
