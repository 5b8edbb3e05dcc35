"""AMI-FGSM: momentum sign steps on the image itself, as the MSU Metrics Robustness Benchmark
runs it (Antsiferova et al., AAAI 2024; attack after Sang et al.'s adaptive MI-FGSM for NR-IQA).

MSU code (the default, ``bound="none"``): ``g_t = grad_t + nu * g_{t-1}``,
``x <- clamp(x - (eps / iters) * sign(g_t), 0, 1)``, with no projection onto an eps-ball (the
total travel is still at most ``eps`` per pixel, because there are ``iters`` steps of
``eps / iters``).

Published text (``bound="niqe"``): every step is followed by ``Clip_{I, 1/NIQE(I)}``. Here that
means: NIQE of each clean image ``I`` is computed once (pyiqa's NIQE, no gradient), the radius
``r = 1 / NIQE(I)`` is taken in the same [0, 1] pixel units as ``eps``, and after every step the
image is clipped elementwise to ``[I - r, I + r]`` and then to [0, 1]. With the default
hyperparameters this bound only binds where ``r < eps``, i.e. for images with NIQE above ``1 / eps = 25.5``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import torch

from iqa_robustness.metrics.base import Metric

from .base import Attack, loss_grad, register_attack
from .budget import Budget

_BOUNDS = ("none", "niqe")


@functools.lru_cache(maxsize=4)
def _niqe(device: str) -> Metric:
    from iqa_robustness.metrics.registry import create_metric

    return create_metric("niqe", device=device)


def niqe_radius(images: torch.Tensor) -> torch.Tensor:
    """Per-image L-inf radius ``1 / NIQE(I)`` as a (N, 1, 1, 1) tensor, in [0, 1] pixel units."""
    with torch.no_grad():
        niqe = _niqe(str(images.device))(images).to(images.dtype)
    return (1.0 / niqe.clamp_min(torch.finfo(images.dtype).eps)).view(-1, 1, 1, 1)


@register_attack
@dataclasses.dataclass(frozen=True)
class AMIFGSM(Attack):
    """Momentum sign steps on the image, optionally bounded per image by ``1 / NIQE``.

    Budget: L-inf ``eps``. There is no projection, but none is needed: ``iters`` steps of
    ``eps / iters`` move a pixel at most ``eps``, and the clamps to [0, 1] and to the NIQE box
    both contain the clean image, so they only move pixels towards it.

    Attributes:
        eps: total step budget; each step is ``eps / iters``.
        iters: number of steps.
        nu: momentum factor (no L1 normalisation, as the MSU code).
        bound: ``"none"`` (MSU code) or ``"niqe"`` (published text, see the module docstring).
    """

    name = "amifgsm"
    family = "iterative"
    budget = Budget.linf("eps")

    eps: float = 10 / 255
    iters: int = 10
    nu: float = 1.0
    bound: Literal["none", "niqe"] = "none"

    def __post_init__(self) -> None:
        if self.bound not in _BOUNDS:
            raise ValueError(f"amifgsm: bound must be one of {_BOUNDS}, got {self.bound!r}")

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        radius = niqe_radius(images) if self.bound == "niqe" else None
        x, g = images, torch.zeros_like(images)
        for _ in range(self.iters):
            g = loss_grad(metric, x) + self.nu * g
            x = x - (self.eps / self.iters) * g.sign()
            if radius is not None:
                x = torch.min(torch.max(x, images - radius), images + radius)
            x = x.clamp(0.0, 1.0)
        return x
