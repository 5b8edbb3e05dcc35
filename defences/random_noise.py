"""Additive Gaussian noise of standard deviation ``sigma``, clamped to [0, 1].

An image's draw is the seed of its noise field (recorded per image, so the field can be made again).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .base import Defence, Draw, register_defence

#: noise seeds are below this (exact as the float a CSV cell holds)
_SEEDS = 2**31 - 1


@register_defence
@dataclasses.dataclass(frozen=True)
class RandomNoise(Defence):
    """``sigma`` (grid 0.01, 0.025, 0.05, 0.075, 0.1)."""

    name = "random-noise"
    short = "noise"
    label_field = "sigma"
    random = True
    aliases = ("noise",)
    description = "additive Gaussian noise, clamped"

    sigma: float = 0.01

    def draw(self, image: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:
        return {"noise_seed": int(torch.randint(0, _SEEDS, size=(1,), generator=generator))}

    def apply(self, image: torch.Tensor, draw: Draw) -> torch.Tensor:
        field = torch.randn(image.shape, generator=torch.Generator().manual_seed(int(draw["noise_seed"])))
        return (image + self.sigma * field.to(image)).clamp(0, 1)
