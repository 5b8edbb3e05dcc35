"""Generative-UAP: a U-Net turns fixed noise into a universal perturbation.

Shumitskaya et al., "Towards adversarial robustness verification of no-reference image- and
video-quality metrics", CVIU 2024, as trained by the MSU Metrics Robustness Benchmark
(Antsiferova et al., AAAI 2024).

A U-Net generator G (:mod:`attacks._unet`) maps a fixed noise z (1, 3, 256, 256) to
delta = G(z) * eps (G ends in tanh; eps = 10/255); Adam (lr 1e-3) on G minimises the batch mean
of J(clamp(x + delta)) for one epoch, the clamp invisible to the gradient as in the MSU code.
The result is one delta, drawn from G after training.

Two details follow the published code: z is drawn from U[0, 1) and clipped to [-eps, eps] after
every step, so the first step sees the raw noise and every later step the clipped one
(``clip_noise=False`` keeps U[0, 1) throughout); and the final delta is drawn with G still in
training mode, dropout active.
"""

from __future__ import annotations

import dataclasses

import torch

from iqa_robustness.metrics.base import Metric

from ._unet import UNetGenerator
from .base import register_attack
from .budget import Budget
from .perturbation import Perturbation
from .training import Batches, clamp_passing_gradient
from .universal import UniversalAttack


@register_attack
@dataclasses.dataclass(frozen=True)
class GenerativeUAP(UniversalAttack):
    """Generative-UAP.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        eps: L-inf bound of the perturbation (scale of the generator's tanh output).
        lr: Adam learning rate of the generator.
        clip_noise: clip the input noise to [-eps, eps] after each step (MSU code).
    """

    name = "generative-uap"
    budget = Budget.linf_times_amplitude("eps")  # delta = tanh(...) * eps lies in (-eps, eps)
    learned = True

    epochs: int = 1
    batch_size: int = 8
    eps: float = 10 / 255
    lr: float = 1e-3
    clip_noise: bool = True

    def _train(self, metric: Metric, batches: Batches) -> Perturbation:
        generator = UNetGenerator().to(batches.device).train()
        noise = torch.rand(1, 3, 256, 256, device=batches.device)
        optimizer = torch.optim.Adam(generator.parameters(), lr=self.lr)
        for step, x in enumerate(batches):
            delta = generator(noise) * self.eps
            loss = metric.loss(clamp_passing_gradient(x + delta)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if self.clip_noise:
                noise.clamp_(-self.eps, self.eps)
            batches.report(step, loss.item())
        with torch.no_grad():
            delta = generator(noise) * self.eps
        return Perturbation(delta=delta.cpu())
