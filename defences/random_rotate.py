"""A random rotation by an angle uniform in ``[-angle, angle]`` degrees, nearest neighbour, corners filled black.

As torchvision's ``RandomRotation(angle)`` of the source benchmark: the angle drawn by ``uniform_``, the
image rotated about its centre by nearest-neighbour interpolation, the size kept. Each image its own
angle (:mod:`iqa_robustness.defences.base`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .base import Defence, Draw, register_defence


@register_defence
@dataclasses.dataclass(frozen=True)
class RandomRotate(Defence):
    """Largest angle ``angle`` (grid 10, 15, 20, 30, 50)."""

    name = "random-rotate"
    short = "rotate"
    label_field = "angle"
    random = True
    aliases = ("rotate",)
    description = "random rotation within +-angle degrees, nearest neighbour"

    angle: float = 15.0

    def draw(self, image: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:
        return {"angle": float(torch.empty(1).uniform_(-self.angle, self.angle, generator=generator))}

    def apply(self, image: torch.Tensor, draw: Draw) -> torch.Tensor:
        return F.rotate(image, float(draw["angle"]), interpolation=InterpolationMode.NEAREST)
