"""MAD competition as an attack (Wang & Simoncelli, "Maximum differentiation (MAD) competition",
Journal of Vision 2008), as the MSU Metrics Robustness Benchmark runs it (Antsiferova et al.,
AAAI 2024): raise the metric while holding the RMSE to the clean image.

MSU code (implemented): ``iters`` steps of ``x <- x - step * sign(pg)``, where ``pg`` is the metric
loss gradient projected orthogonally to the gradient of ``RMSE(x - x0)`` (per image; on the first
step ``x = x0`` and the gradient is used as is). After each step, while an image's RMSE exceeds
``eps`` it moves ``pull_step * sign(grad RMSE)`` back towards ``x0`` and is clamped to [0, 1]; then
the batch is clamped to [0, 1].

The gradient of ``RMSE(x - x0)`` is ``(x - x0) / (n * RMSE)``, a positive multiple of ``x - x0``:
the projection and the pull-back direction use ``x - x0`` directly, which is exact and has no 0/0 at
``x = x0``.

With ``linf`` set (``--eps``), each step ends with a projection onto the L-inf ball of that radius
around the clean image (after the pull-back; it only moves pixels towards the clean image, so the
RMSE stays within ``eps``); the default ``None`` is the benchmark's attack.

Published text (not implemented): a binary search restores the MSE after each step (precision
0.04). With the default hyperparameters the two coincide: 8 steps of 0.001 move no pixel further
than 0.008, so the RMSE never reaches ``eps = 10/255`` and no restoration ever runs.
"""

from __future__ import annotations

import dataclasses

import torch

from iqa_robustness.metrics.base import Metric

from .base import Attack, loss_grad, project_onto_ball, register_attack
from .budget import Budget

_DIMS = (1, 2, 3)


def rmse(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image root-mean-square difference, (N,)."""
    return (x - reference).square().mean(dim=_DIMS).sqrt()


def project_out(g: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``g`` minus its per-image component along ``d`` (unchanged where ``d`` is zero)."""
    dd = (d * d).sum(dim=_DIMS, keepdim=True)
    gd = (g * d).sum(dim=_DIMS, keepdim=True)
    return g - torch.where(dd > 0, gd / dd.clamp_min(torch.finfo(d.dtype).tiny), 0.0) * d


@register_attack
@dataclasses.dataclass(frozen=True)
class MADC(Attack):
    """Metric gradient steps tangent to the RMSE sphere, with an RMSE budget.

    Budget: RMSE ``eps`` per image. The pull-back runs until every image is back within ``eps``
    (it terminates because ``pull_step < eps``), and the final clamp to [0, 1] only moves pixels
    towards the clean image. L-inf ``linf`` when it is set; without it there is no L-inf bound: a
    pixel may move more than ``eps``.

    Attributes:
        iters: number of steps.
        step: sign step size.
        eps: RMSE budget.
        pull_step: sign step size of the pull-back towards the clean image.
        linf: radius of the L-inf ball around the clean image each step ends on; ``None`` (default,
            the benchmark) for no ball.
    """

    name = "madc"
    family = "perceptual"
    budget = (Budget.rmse("eps"), Budget.linf("linf", optional=True))

    iters: int = 8
    step: float = 0.001
    eps: float = 10 / 255
    pull_step: float = 0.0005
    linf: float | None = None

    def __post_init__(self) -> None:
        # The pull-back ends once every pixel is within pull_step of the clean one, so it needs
        # pull_step < eps to terminate.
        if not 0 < self.pull_step < self.eps:
            raise ValueError(f"madc: pull_step must lie in (0, eps={self.eps}), got {self.pull_step}")
        if self.linf is not None and not self.linf > 0:
            raise ValueError(f"madc: linf must be a positive radius (or unset), got {self.linf}")

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        x = images
        for _ in range(self.iters):
            x = x - self.step * project_out(loss_grad(metric, x), x - images).sign()
            while (over := rmse(x, images) > self.eps).any():
                pulled = (x - self.pull_step * (x - images).sign()).clamp(0.0, 1.0)
                x = torch.where(over.view(-1, 1, 1, 1), pulled, x)
            x = project_onto_ball(x, images, self.linf).clamp(0.0, 1.0)
        return x
