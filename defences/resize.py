"""Downscaling: the metric sees the image resized by ``scale`` (bilinear, antialiased; differentiable).

As the source benchmark: the new size is ``int(h * scale) x int(w * scale)``, the product taken in float32
(torch's) and truncated, then torchvision's ``Resize`` with its defaults.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torchvision.transforms.v2 import functional as F

from .base import Defence, register_defence


def scaled_size(x: torch.Tensor, scale: float) -> list[int]:
    """``[int(h * scale), int(w * scale)]`` as the source computes it (float32 product, truncated), at least 1."""
    return [max(1, int(side)) for side in (torch.tensor(x.shape[-2:]) * scale).tolist()]


@register_defence
@dataclasses.dataclass(frozen=True)
class Resize(Defence):
    """Resize by ``scale`` (grid 0.1, 0.25, 0.5, 0.75, 0.9)."""

    name = "resize"
    label_field = "scale"
    shrinks: ClassVar[bool] = True
    changes_size: ClassVar[bool] = True
    description = "bilinear downscaling by scale; the metric sees the small image"

    scale: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 1:
            raise ValueError(f"resize: scale must be in (0, 1], not {self.scale}")

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return F.resize(x, scaled_size(x, self.scale), antialias=True)
