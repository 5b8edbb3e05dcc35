"""Additive Gaussian noise of standard deviation ``sigma``, clamped to [0, 1]."""

from __future__ import annotations

import dataclasses

import torch

from .base import Defence, register_defence


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

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator).to(x)
        return (x + self.sigma * noise).clamp(0, 1)
