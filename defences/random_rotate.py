"""A random rotation by an angle uniform in ``[-angle, angle]`` degrees, bilinear, each image its own (torchvision)."""

from __future__ import annotations

import dataclasses

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .base import Defence, register_defence


@register_defence
@dataclasses.dataclass(frozen=True)
class RandomRotate(Defence):
    """Largest angle ``angle`` (grid 10, 15, 20, 30, 50)."""

    name = "random-rotate"
    short = "rotate"
    label_field = "angle"
    random = True
    aliases = ("rotate",)
    description = "random rotation within +-angle degrees"

    angle: float = 15.0

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        angles = (torch.rand(x.shape[0], generator=generator) * 2 - 1) * self.angle
        return torch.stack(
            [
                F.rotate(image, float(a), interpolation=InterpolationMode.BILINEAR)
                for image, a in zip(x, angles, strict=True)
            ]
        )
