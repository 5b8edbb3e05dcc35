"""Unsharp masking: ``clamp(x + amount (x - blur(x)))``, a Gaussian blur of kernel ``k`` and ``sigma``."""

from __future__ import annotations

import dataclasses

import torch
from torchvision.transforms import functional as F  # the one the source's GaussianBlur calls: its kernels bit for bit

from .base import Defence, register_defence
from .gaussian_blur import check_kernel


@register_defence
@dataclasses.dataclass(frozen=True)
class Unsharp(Defence):
    """Kernel ``k`` (grid 3, 5, 7, 9, 11), sigma 1, amount 1."""

    name = "unsharp"
    label_field = "k"
    description = "unsharp mask, kernel k, sigma 1, amount 1"

    k: int = 5
    sigma: float = 1.0
    amount: float = 1.0

    def __post_init__(self) -> None:
        check_kernel(self.name, self.k)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        blurred = F.gaussian_blur(x, [self.k, self.k], [self.sigma, self.sigma])
        return (x + self.amount * (x - blurred)).clamp(0, 1)
