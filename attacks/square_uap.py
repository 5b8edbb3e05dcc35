"""Square-UAP: a universal perturbation found by Square-attack random search, from scores alone
(Bychkov et al., ICME 2025, the black-box universal attack of the follow-up benchmark).

A 3 x 256 x 256 perturbation, tiled over images like every universal perturbation
(:mod:`attacks.universal`), starts at zero. Each iteration draws a square window of side
``round(sqrt(p * 256 * 256))`` (``p`` from ``p_init`` on Square's schedule, :func:`square_fraction`,
rescaled to the budget), sets the perturbation inside it to a per-channel constant ``+-eps``, and
keeps the candidate only when the mean q over the training batch rises strictly. One query is that
mean: the batch is one random draw of ``batch_size`` training images (a full-reference metric scores
it against its references), fixed for the whole search, so that the scores compared are of the same
images. ``queries`` iterations, the first scoring the zero perturbation. Applied, the result is
clamped to [0, 1] like the images the search scored (unlike the MSU code's gradient-trained
perturbations).

The training record (:attr:`Perturbation.meta`) keeps the queries made and the best mean q against
queries. No attack library implements a query-based universal perturbation; it is written here.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from iqa_robustness.metrics.base import Metric

from .base import register_attack
from .budget import Budget
from .perturbation import Perturbation
from .queries import random_int, square_fraction, thin_curve, tile_to
from .training import Batches
from .universal import UniversalAttack

_SIDE = 256


@register_attack
@dataclasses.dataclass(frozen=True)
class SquareUAP(UniversalAttack):
    """Universal Square attack.

    Attributes:
        epochs: unused by the search beyond drawing the training batch (kept for the universal machinery).
        batch_size: training images per query.
        eps: L-inf bound of the perturbation (at amplitude 1).
        queries: iterations, one query (a batch mean) each.
        p_init: initial fraction of the perturbation a window covers.
    """

    name = "square-uap"
    family: ClassVar[str] = "blackbox"
    needs_gradient: ClassVar[bool] = False
    iterations_attr: ClassVar[str | None] = "queries"
    budget = Budget.linf_times_amplitude("eps")  # every value of delta is 0 or +-eps

    epochs: int = 1
    batch_size: int = 8
    eps: float = 0.1
    queries: int = 10_000
    p_init: float = 0.05

    def __post_init__(self) -> None:
        if self.queries < 1:
            raise ValueError(f"{self.name}: queries must be a positive number of batch scores")

    def _train(self, metric: Metric, batches: Batches) -> Perturbation:
        rng = torch.Generator().manual_seed(torch.initial_seed())  # fit() seeds the process generator
        draws = iter(batches)
        try:
            x = next(draws)  # a full-reference batch keeps its references bound until the draws close
            delta = torch.zeros(1, 3, _SIDE, _SIDE, device=x.device)
            with torch.no_grad():
                best = float(self._mean_q(metric, x, delta))
                curve = [(1, best)]
                for it in range(1, self.queries):
                    fraction = square_fraction(self.p_init, it, self.queries)
                    side = max(1, min(round((fraction * _SIDE * _SIDE) ** 0.5), _SIDE - 1))
                    top, left = random_int(0, _SIDE - side, rng), random_int(0, _SIDE - side, rng)
                    signs = torch.randint(0, 2, (1, 3, 1, 1), generator=rng).to(delta) * 2 - 1
                    candidate = delta.clone()
                    candidate[..., top : top + side, left : left + side] = self.eps * signs
                    q = float(self._mean_q(metric, x, candidate))
                    if q > best:
                        delta, best = candidate, q
                    curve.append((it + 1, best))
        finally:
            draws.close()
        perturbation = Perturbation(delta=delta.cpu())
        perturbation.meta.update(queries_used=self.queries, query_curve=thin_curve(curve))
        return perturbation

    def apply(
        self, perturbation: Perturbation, images: torch.Tensor, amplitude: float, clamp: bool = True
    ) -> torch.Tensor:
        """As :meth:`UniversalAttack.apply`, but always clamped to [0, 1]: the search scored clamped images,
        and a metric queried only through valid images (entropy, PIQE) need not accept others."""
        return super().apply(perturbation, images, amplitude, clamp=True)

    @staticmethod
    def _mean_q(metric: Metric, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """One query: the mean q over the training batch of ``clamp(x + delta)`` (delta tiled to its size)."""
        return metric.quality((x + tile_to(delta, x.shape[-2:])).clamp(0.0, 1.0)).mean()
