"""CNN-based attack (FACPA): a U-Net that makes a perturbation for each image in one forward pass.

Shumitskaya et al., "Fast Adversarial CNN-based Perturbation Attack on No-Reference Image Quality
Metrics", ICLR Tiny Papers 2023, and "Towards adversarial robustness verification of
no-reference image- and video-quality metrics", CVIU 2024.

The U-Net of :mod:`attacks._unet` takes the image itself: delta = G(x) * eps (G ends in tanh;
eps = 10/255). Adam (lr 1e-3) on G minimises the batch mean of J(clamp(x + delta)), batch 4,
200 epochs in the paper; here the clamp passes the gradient of the clamp (the published code
clamps by indexing, which autograd follows). At test time G runs once per image in evaluation
mode; see :meth:`attacks.perturbation.Perturbation.perturbation_for` for sides that are not
multiples of 256 (``test_time="tile"``, the published inference, or ``"pad"``).
"""

from __future__ import annotations

import dataclasses

import torch

from iqa_robustness.metrics.base import Metric

from ._unet import UNetGenerator
from .base import register_attack
from .budget import Budget
from .perturbation import TEST_TIME_MODES, Perturbation
from .training import Batches
from .universal import UniversalAttack


@register_attack
@dataclasses.dataclass(frozen=True)
class CNNAttack(UniversalAttack):
    """CNN-based perturbation attack (FACPA).

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        eps: L-inf bound of the perturbation (scale of the generator's tanh output).
        lr: Adam learning rate of the generator.
        test_time: ``tile`` (generator on the largest top-left crop of 256-multiples, output tiled)
            or ``pad`` (edge-pad to 256-multiples, one pass, crop).
    """

    name = "cnn"
    budget = Budget.linf_times_amplitude("eps")  # the generator's tanh output times eps lies in (-eps, eps)
    family = "learned"
    learned = True

    epochs: int = 200
    batch_size: int = 4
    eps: float = 10 / 255
    lr: float = 1e-3
    test_time: str = "tile"

    def __post_init__(self) -> None:
        if self.test_time not in TEST_TIME_MODES:
            raise ValueError(f"test_time must be one of {TEST_TIME_MODES}, got {self.test_time!r}")

    def _train(self, metric: Metric, batches: Batches) -> Perturbation:
        generator = UNetGenerator().to(batches.device).train()
        optimizer = torch.optim.Adam(generator.parameters(), lr=self.lr)
        for step, x in enumerate(batches):
            adv = (x + generator(x) * self.eps).clamp(0.0, 1.0)
            loss = metric.loss(adv).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batches.report(step, loss.item())
        return Perturbation(generator=generator.cpu(), scale=self.eps)

    def _perturbation_for(self, perturbation: Perturbation, images: torch.Tensor) -> torch.Tensor:
        return perturbation.perturbation_for(images, test_time=self.test_time)
