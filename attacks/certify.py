"""The ``certify`` kind: a metric's median-smoothing certificate, and an L2 attack on its smoothed score.

Median smoothing (Chiang et al., "Detection as regression: certified object detection by median
smoothing", NeurIPS 2020; for quality metrics Shumitskaya et al., katiashh/certified-iqa-defenses)
replaces a metric ``f`` by ``h(x) = median of f(clamp(x + N(0, sigma^2 I), 0, 1))`` and certifies,
for each image, an interval that ``h`` keeps under every perturbation of L2 norm at most ``eps``
(docs/certify.md). A ``certify`` case (:mod:`iqa_robustness.runner.certify`) estimates ``h`` and the
interval from ``n`` noisy copies of each image, and measures how far attacks inside the same L2 ball
actually move ``h``: the session's image attacks with their perturbations projected onto the ball
(``projected``), and this class's own attack, an L2 PGD (Madry et al., ICLR 2018) on the Monte-Carlo
estimate of the smoothed metric with expectation over transformation (Athalye et al., ICML 2018):
each step follows the mean gradient of ``f`` over ``eot`` noise draws.

The class is configuration, as every attack: its fields are the certificate's parameters (the
source's defaults: sigma 0.12, eps 0.05, confidence 0.999, 1000 samples) and the attack's. ``n``
left unset takes 1000 samples on a GPU and a smaller number on the CPU (the suite records which).
Only its own name selects it (``--attack certify`` or ``--certify``; ``all`` leaves it out), and it
runs once per metric and dataset whatever the L-inf budgets of ``--eps``.
"""

from __future__ import annotations

import dataclasses

import torch

from iqa_robustness.metrics.base import Metric

from .base import Attack, project_l2, register_attack
from .budget import Budget

#: the kind's family and marker name
CERTIFY = "certify"
#: samples per image on a GPU (the source's); the CPU default is smaller (``conventions.CPU_CERTIFY_SAMPLES``)
GPU_SAMPLES = 1000
#: Madry et al.'s step: 2.5 times the radius over the number of steps
STEP_FACTOR = 2.5


@register_attack
@dataclasses.dataclass(frozen=True)
class Certify(Attack):
    """Median-smoothing certificate parameters, and an L2 PGD with EoT against the smoothed metric.

    Attributes:
        sigma: standard deviation of the Gaussian noise (pixel units, images in [0, 1]).
        eps: L2 radius certified, and the attacks' budget (pixel units, over all pixels and channels).
        n: noise samples per image for the certificate and for each smoothed score; ``None``: 1000 on
            a GPU, the CPU cap on the CPU.
        alpha: the probability each of the two bounds may fail (the source's confidence 0.999).
        iters: steps of the L2 PGD on the smoothed metric (0: no attack of its own).
        step: L2 length of a step; ``None``: ``2.5 * eps / iters``.
        eot: noise draws averaged per gradient.
        projected: also run the session's image attacks on the metric and scale their perturbations
            onto the L2 ball of radius ``eps``.
    """

    name = CERTIFY
    family = CERTIFY
    needs_gradient = False  # the certificate needs none; the PGD runs only on a differentiable metric
    budget = Budget.l2("eps")
    opt_in = True
    budget_axis = False

    sigma: float = 0.12
    eps: float = 0.05
    n: int | None = None
    alpha: float = 0.001
    iters: int = 10
    step: float | None = None
    eot: int = 8
    projected: bool = True

    def __post_init__(self) -> None:
        checks = (
            (self.sigma > 0, f"sigma is the noise's standard deviation and must be positive, got {self.sigma}"),
            (self.eps >= 0, f"eps is an L2 radius and must be 0 or more, got {self.eps}"),
            (self.n is None or self.n >= 1, f"n is a number of noise samples per image (1 or more), got {self.n}"),
            (0 < self.alpha < 0.5, f"alpha is the probability a bound may fail, in (0, 0.5), got {self.alpha}"),
            (self.iters >= 0, f"iters is a number of attack steps (0 or more), got {self.iters}"),
            (self.step is None or self.step > 0, f"step is an L2 step length and must be positive, got {self.step}"),
            (self.eot >= 1, f"eot is a number of noise draws per gradient (1 or more), got {self.eot}"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def step_length(self) -> float:
        """The L2 length of one PGD step."""
        return self.step if self.step is not None else STEP_FACTOR * self.eps / max(self.iters, 1)

    def noisy(self, images: torch.Tensor) -> torch.Tensor:
        """``clamp(x + N(0, sigma^2 I), 0, 1)``: one noisy copy of each image, from torch's generator."""
        return (images + self.sigma * torch.randn_like(images)).clamp(0.0, 1.0)

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        """L2 PGD on the Monte-Carlo smoothed metric: ``iters`` normalised steps on the mean loss of ``eot`` draws.

        The gradient is taken through the clamp (zero where a noisy pixel was clipped), as the
        smoothed metric sees it; each step is projected onto [0, 1] and then onto the L2 ball,
        which keeps both.
        """
        if self.iters == 0 or self.eps == 0:
            return images
        delta = torch.zeros_like(images)
        for _ in range(self.iters):
            grad = self.smoothed_loss_grad(metric, images + delta)
            norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
            moved = (images + delta - self.step_length * grad / norms).clamp(0.0, 1.0)
            delta = project_l2(moved - images, self.eps)
        return images + delta

    def smoothed_loss_grad(self, metric: Metric, x: torch.Tensor) -> torch.Tensor:
        """The gradient of the attack loss averaged over ``eot`` noisy copies, with respect to ``x``."""
        x = x.detach().requires_grad_(True)
        total = torch.zeros_like(x)
        for _ in range(self.eot):
            (grad,) = torch.autograd.grad(metric.loss(self.noisy(x)).sum(), x)
            total += grad
        return total / self.eot
