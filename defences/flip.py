"""Both axes flipped (differentiable, deterministic)."""

from __future__ import annotations

import dataclasses

import torch

from .base import Defence, register_defence


@register_defence
@dataclasses.dataclass(frozen=True)
class Flip(Defence):
    name = "flip"
    description = "flips both axes"

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.flip(x, dims=(-2, -1))
