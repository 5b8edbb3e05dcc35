"""FGSM: one signed gradient step (Goodfellow et al., "Explaining and Harnessing Adversarial
Examples", ICLR 2015), as the MSU Metrics Robustness Benchmark runs it on quality metrics
(Antsiferova et al., AAAI 2024): ``x - eps * sign(grad J(x))``, clamped to [0, 1].
"""

from __future__ import annotations

import dataclasses

import torch

from iqa_robustness.metrics.base import Metric

from .base import Attack, loss_grad, register_attack
from .budget import Budget


@register_attack
@dataclasses.dataclass(frozen=True)
class FGSM(Attack):
    """Fast gradient sign method.

    Attributes:
        eps: step size, which is also the L-inf budget (10/255 in the MSU code).
    """

    name = "fgsm"
    family = "iterative"
    iterations_attr = None
    budget = Budget.linf("eps")  # one step of eps * sign, then a clamp that only moves pixels back

    eps: float = 10 / 255

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        return (images - self.eps * loss_grad(metric, images).sign()).clamp(0.0, 1.0)
