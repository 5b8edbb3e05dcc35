"""Optimized-UAP: a universal perturbation trained with Adam.

Shumitskaya et al., "Universal perturbation attack on differentiable no-reference image- and
video-quality metrics", BMVC 2022, as trained by the MSU Metrics Robustness Benchmark
(Antsiferova et al., AAAI 2024) and the CVIU 2024 fast-attacks paper.

delta (1, 3, 256, 256) starts at 1e-4 everywhere; each step minimises the batch mean of
J(clamp(x + delta)) with Adam (lr 1e-3) and clips delta to [-eps, eps] (eps = 0.1); 5 epochs.
As in the MSU code the clamp of the image is invisible to the gradient (it clamps ``res.data``).
"""

from __future__ import annotations

import dataclasses

import torch

from iqa_robustness.metrics.base import Metric

from .base import register_attack
from .budget import Budget
from .perturbation import Perturbation
from .training import Batches, clamp_passing_gradient
from .universal import UniversalAttack


@register_attack
@dataclasses.dataclass(frozen=True)
class OptimizedUAP(UniversalAttack):
    """Optimized-UAP.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        eps: L-inf bound of the perturbation.
        lr: Adam learning rate.
        init: starting value of every pixel of the perturbation.
    """

    name = "uap"
    budget = Budget.linf_times_amplitude("eps")  # delta is clipped to [-eps, eps] after every step

    epochs: int = 5
    batch_size: int = 8
    eps: float = 0.1
    lr: float = 1e-3
    init: float = 1e-4

    def _train(self, metric: Metric, batches: Batches) -> Perturbation:
        delta = torch.full((1, 3, 256, 256), self.init, device=batches.device, requires_grad=True)
        optimizer = torch.optim.Adam([delta], lr=self.lr)
        for step, x in enumerate(batches):
            loss = metric.loss(clamp_passing_gradient(x + delta)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                delta.clamp_(-self.eps, self.eps)
            batches.report(step, loss.item())
        return Perturbation(delta=delta.detach().cpu())
