"""Cumulative-UAP: a universal perturbation built by accumulating raw loss gradients.

Shumitskaya et al., "Towards adversarial robustness verification of no-reference image- and
video-quality metrics", CVIU 2024, as trained by the MSU Metrics Robustness Benchmark
(Antsiferova et al., AAAI 2024).

delta (1, 3, 256, 256) starts at 1e-4 everywhere; each step subtracts the raw gradient of the
batch mean of J(x + delta) (no step size, no sign, the image not clamped) and clips delta to
[-eps, eps] (eps = 0.1); 5 epochs.
"""

from __future__ import annotations

import dataclasses

import torch

from iqa_robustness.metrics.base import Metric

from .base import register_attack
from .budget import Budget
from .perturbation import Perturbation
from .training import Batches
from .universal import UniversalAttack


@register_attack
@dataclasses.dataclass(frozen=True)
class CumulativeUAP(UniversalAttack):
    """Cumulative-UAP.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        eps: L-inf bound of the perturbation.
        init: starting value of every pixel of the perturbation.
    """

    name = "cumulative-uap"
    budget = Budget.linf_times_amplitude("eps")  # delta is clipped to [-eps, eps] after every step

    epochs: int = 5
    batch_size: int = 8
    eps: float = 0.1
    init: float = 1e-4

    def _train(self, metric: Metric, batches: Batches) -> Perturbation:
        delta = torch.full((1, 3, 256, 256), self.init, device=batches.device)
        for step, x in enumerate(batches):
            delta.requires_grad_(True)
            loss = metric.loss(x + delta).mean()
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() - grad).clamp(-self.eps, self.eps)
            batches.report(step, loss.item())
        return Perturbation(delta=delta.detach().cpu())
