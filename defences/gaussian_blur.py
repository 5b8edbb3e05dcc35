"""Gaussian blur with a ``k`` x ``k`` kernel and OpenCV's sigma for it, ``0.3((k - 1)/2 - 1) + 0.8`` (torchvision)."""

from __future__ import annotations

import dataclasses

import torch
from torchvision.transforms import functional as F  # the one the source's GaussianBlur calls: its kernels bit for bit

from .base import Defence, register_defence


def check_kernel(name: str, k: int) -> None:
    if k < 1 or k % 2 == 0:
        raise ValueError(f"{name}: k must be an odd kernel size (3, 5, ...), not {k}")


@register_defence
@dataclasses.dataclass(frozen=True)
class GaussianBlur(Defence):
    """Kernel ``k`` (grid 3, 5, 7, 9, 11)."""

    name = "gaussian-blur"
    short = "gauss"
    label_field = "k"
    aliases = ("blur", "gaussian")
    description = "Gaussian blur, kernel k, sigma 0.3((k-1)/2-1)+0.8"

    k: int = 3

    def __post_init__(self) -> None:
        check_kernel(self.name, self.k)

    @property
    def sigma(self) -> float:
        return 0.3 * ((self.k - 1) / 2 - 1) + 0.8

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return F.gaussian_blur(x, [self.k, self.k], [self.sigma, self.sigma])
