"""Median filter, ``k`` x ``k`` window, reflect padding; the gradient is the median's subgradient.

Neither torchvision nor scikit-image has a batched, differentiable median filter on tensors, so it is
written here: the windows of a reflect-padded image (``unfold``), and their median.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as nnf

from .base import Defence, register_defence
from .gaussian_blur import check_kernel


@register_defence
@dataclasses.dataclass(frozen=True)
class MedianBlur(Defence):
    """Kernel ``k`` (grid 3, 5, 7, 9, 11)."""

    name = "median-blur"
    short = "median"
    label_field = "k"
    aliases = ("median",)
    description = "median filter, kernel k, reflect padding"

    k: int = 3

    def __post_init__(self) -> None:
        check_kernel(self.name, self.k)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        pad = self.k // 2
        n, c, h, w = x.shape
        padded = nnf.pad(x, (pad, pad, pad, pad), mode="reflect")
        windows = padded.unfold(2, self.k, 1).unfold(3, self.k, 1)  # (N, C, H, W, k, k)
        return windows.reshape(n, c, h, w, self.k * self.k).median(dim=-1).values
