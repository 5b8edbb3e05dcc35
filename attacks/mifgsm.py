"""MI-FGSM (Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018) as the MSU
Metrics Robustness Benchmark runs it (Antsiferova et al., AAAI 2024).

It is the I-FGSM loop of :mod:`attacks.ifgsm` with momentum ``g_t = grad_t + nu * g_{t-1}``. Unlike
the paper, the MSU code does not L1-normalise the gradient before accumulating it; this follows the
code.
"""

from __future__ import annotations

import dataclasses

import torch

from iqa_robustness.metrics.base import Metric

from .base import Attack, register_attack
from .budget import Budget
from .ifgsm import sign_steps_on_perturbation


@register_attack
@dataclasses.dataclass(frozen=True)
class MIFGSM(Attack):
    """Momentum iterative FGSM.

    Attributes:
        eps: L-inf budget.
        alpha: step size.
        iters: number of steps.
        nu: momentum factor.
    """

    name = "mifgsm"
    family = "iterative"
    budget = Budget.linf("eps")  # p is clipped to [-eps, eps] after every step
    budget_step = ("alpha", "iters")  # at a budget b: alpha = b / iters, as the default 1/255 = (10/255) / 10

    eps: float = 10 / 255
    alpha: float = 1 / 255
    iters: int = 10
    nu: float = 1.0

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        return sign_steps_on_perturbation(metric, images, eps=self.eps, alpha=self.alpha, iters=self.iters, nu=self.nu)
