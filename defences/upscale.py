"""Down and up again: resized by ``scale`` as ``resize`` does, then bilinear back to the input size (differentiable).

The source benchmark upsamples to a fixed 384 x 512 (``torch.nn.Upsample``, bilinear): the size of its
KonIQ-10k images, so there the same as the input size, which is what this goes back to on any image.
"""

from __future__ import annotations

import dataclasses

import torch
from torchvision.transforms.v2 import functional as F

from .base import Defence, register_defence
from .resize import scaled_size


@register_defence
@dataclasses.dataclass(frozen=True)
class Upscale(Defence):
    """Resize by ``scale`` (grid 0.1, 0.25, 0.5, 0.75, 0.9) and back."""

    name = "upscale"
    label_field = "scale"
    description = "bilinear down by scale and back up to the input size"

    scale: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 1:
            raise ValueError(f"upscale: scale must be in (0, 1], not {self.scale}")

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        small = F.resize(x, scaled_size(x, self.scale), antialias=True)
        return F.resize(small, list(x.shape[-2:]), antialias=False)
