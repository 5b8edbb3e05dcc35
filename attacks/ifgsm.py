"""I-FGSM (Kurakin et al., "Adversarial examples in the physical world", ICLR 2017 workshop) as
the MSU Metrics Robustness Benchmark runs it (Antsiferova et al., AAAI 2024).

The MSU code optimises a perturbation ``p`` rather than the image: the metric sees
``clamp(x + p, 0, 1)``, the gradient passes the clamp unchanged (it is taken with respect to the
clamped image), ``p`` steps by ``alpha * sign`` and is clipped to ``[-eps, eps]``. The returned image
is ``clamp(x + p, 0, 1)``. MI-FGSM (:mod:`attacks.mifgsm`) is the same loop with momentum.
"""

from __future__ import annotations

import dataclasses

import torch

from iqa_robustness.metrics.base import Metric

from .base import Attack, loss_grad, project_linf, register_attack
from .budget import Budget


def sign_steps_on_perturbation(
    metric: Metric, images: torch.Tensor, *, eps: float, alpha: float, iters: int, nu: float = 0.0
) -> torch.Tensor:
    """The I-FGSM / MI-FGSM loop of the MSU code, on a batch.

    Args:
        metric: the attacked metric.
        images: clean batch (N, 3, H, W) in [0, 1].
        eps: L-inf bound of the perturbation.
        alpha: step size.
        iters: number of gradient steps.
        nu: momentum factor; ``g_t = grad_t + nu * g_{t-1}`` without L1 normalisation (0 = I-FGSM).

    Returns:
        ``clamp(images + p, 0, 1)``.
    """
    p = torch.zeros_like(images)
    g = torch.zeros_like(images)
    for _ in range(iters):
        g = loss_grad(metric, (images + p).clamp(0.0, 1.0)) + nu * g
        p = project_linf(p - alpha * g.sign(), eps)
    return (images + p).clamp(0.0, 1.0)


@register_attack
@dataclasses.dataclass(frozen=True)
class IFGSM(Attack):
    """Iterative FGSM.

    Attributes:
        eps: L-inf budget.
        alpha: step size.
        iters: number of steps.
    """

    name = "ifgsm"
    family = "iterative"
    budget = Budget.linf("eps")  # p is clipped to [-eps, eps] after every step
    budget_step = ("alpha", "iters")  # at a budget b: alpha = b / iters, as the default 1/255 = (10/255) / 10

    eps: float = 10 / 255
    alpha: float = 1 / 255
    iters: int = 10

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        return sign_steps_on_perturbation(metric, images, eps=self.eps, alpha=self.alpha, iters=self.iters)
