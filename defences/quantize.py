"""Bit-depth reduction: ``round(x (L - 1)) / (L - 1)`` with ``L`` levels per channel; BPDA (no gradient)."""

from __future__ import annotations

import dataclasses

import torch

from .base import Defence, register_defence


@register_defence
@dataclasses.dataclass(frozen=True)
class Quantize(Defence):
    """``levels`` grey levels per channel (grid 2, 5, 16, 20, 25)."""

    name = "quantize"
    short = "quant"
    label_field = "levels"
    differentiable = False
    aliases = ("bit-depth", "bits")
    description = "bit-depth reduction to L levels; BPDA"

    levels: int = 16

    def __post_init__(self) -> None:
        if self.levels < 2:
            raise ValueError(f"quantize: levels must be at least 2, not {self.levels}")

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        steps = self.levels - 1
        return torch.round(x.clamp(0, 1) * steps) / steps
