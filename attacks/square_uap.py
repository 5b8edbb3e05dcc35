"""Square-UAP: a universal perturbation found by Square-attack random search, from scores alone
(Bychkov et al., ICME 2025, the black-box universal attack of the follow-up benchmark).

As the source's code runs it (georgebychkov/black-box-iqa, ``code/methods/square-attack-uap/train.py``;
docs/methodology.md, "Black-box attacks"): a 3 x 256 x 256 perturbation, tiled over images like every
universal perturbation (:mod:`attacks.universal`), starts at zero. Each iteration draws a square window
of side ``round(sqrt(p * 256 * 256))`` (``p`` from ``p_init`` on Square's schedule,
:func:`square_fraction`, rescaled to the budget), sets the perturbation inside it to a per-channel
constant ``+-eps`` (signs redrawn until the window changes), and keeps the candidate only when the mean
q rises strictly. One query is that mean over the **whole training set**, each image at its own size
with the perturbation tiled over it (``batch_size=0``; not the 256 x 256 copies the gradient-trained
universal attacks train on; a full-reference metric scores the JPEG copy of each perturbed image against
the clean one, as the source's ``metric(y, jpeg(clamp(y + noise)))``); a positive
``batch_size`` takes that many training images, drawn once at random, instead (the suite's CPU cap:
``iqa_robustness.runner.config.SuiteConfig.query_images``). ``queries`` scores in all, the first of
the zero perturbation, then ``queries - 1`` updates (the source's 10 000: 10 001 by default). Applied, the result is
clamped to [0, 1] like the images the search scored (unlike the MSU code's gradient-trained
perturbations). What still differs from the source's code: docs/differences.md.

The training record (:attr:`Perturbation.meta`) keeps the queries made and the best mean q against
queries. No attack library implements a query-based universal perturbation; it is written here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import torch

from iqa_robustness.metrics.base import Metric

from .base import register_attack
from .budget import Budget
from .perturbation import Perturbation
from .queries import SquareWindows, signs_that_change, square_fraction, thin_curve, tile_to
from .training import Batches
from .universal import UniversalAttack

_SIDE = 256


@register_attack
@dataclasses.dataclass(frozen=True)
class SquareUAP(UniversalAttack):
    """Universal Square attack.

    Attributes:
        epochs: unused by the search (kept for the universal machinery).
        batch_size: training images per query: 0 for the whole training set (the source), else that many
            drawn once at random.
        eps: L-inf bound of the perturbation (at amplitude 1).
        queries: scores of the mean q over the training images, the first of the zero perturbation.
        p_init: initial fraction of the perturbation a window covers.
    """

    name = "square-uap"
    family: ClassVar[str] = "blackbox"
    needs_gradient: ClassVar[bool] = False
    iterations_attr: ClassVar[str | None] = "queries"
    trains_at_native_size: ClassVar[bool] = True  # the source scores the training images as they are
    budget = Budget.linf_times_amplitude("eps")  # every value of delta is 0 or +-eps

    epochs: int = 1
    batch_size: int = 0
    eps: float = 0.1
    queries: int = 10_001  # the zero perturbation's score, then the source's 10 000 updates
    p_init: float = 0.05

    def __post_init__(self) -> None:
        if self.queries < 1:
            raise ValueError(f"{self.name}: queries must be a positive number of training-set scores")
        if self.batch_size < 0:
            raise ValueError(f"{self.name}: batch_size is 0 (the whole training set per query) or a number of images")

    def _train(self, metric: Metric, batches: Batches) -> Perturbation:
        rng = torch.Generator().manual_seed(torch.initial_seed())  # fit() seeds the process generator
        n = len(batches.data)
        if self.batch_size == 0 or self.batch_size >= n:
            index = list(range(n))
        else:
            index = torch.randperm(n, generator=batches.sampler)[: self.batch_size].tolist()
        by_size: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for image in batches.data.as_given(index):  # the source scores each image at its own size
            by_size.setdefault(tuple(image.shape), []).append(image)
        groups = [torch.stack(same).to(batches.device) for same in by_size.values()]
        views = [_View(g, g, d) for g in groups for d in batches.distortions] or [_View(g) for g in groups]
        windows = SquareWindows.on(_SIDE, _SIDE, _SIDE)
        delta = torch.zeros(1, 3, _SIDE, _SIDE, device=batches.device)
        with torch.no_grad():
            best = _mean_q(metric, views, delta)
            curve = [(1, best)]
            for it in range(1, self.queries):
                # update it - 1 of queries - 1, as the source's p_selection(p_init, i_iter, n_iters) counts them
                side = windows.side(square_fraction(self.p_init, it - 1, max(1, self.queries - 1)))
                window = (Ellipsis, *windows.corner(side, rng))
                candidate = delta.clone()
                candidate[window] = signs_that_change(
                    lambda signs, held=delta[window]: (self.eps * signs).expand_as(held), delta[window], 3, rng
                )
                q = _mean_q(metric, views, candidate)
                if q > best:
                    delta, best = candidate, q
                curve.append((it + 1, best))
        perturbation = Perturbation(delta=delta.cpu())
        n_images = sum(len(same) for same in by_size.values())
        perturbation.meta.update(queries_used=self.queries, query_images=n_images, query_curve=thin_curve(curve))
        return perturbation

    def apply(
        self, perturbation: Perturbation, images: torch.Tensor, amplitude: float, clamp: bool = True
    ) -> torch.Tensor:
        """As :meth:`UniversalAttack.apply`, but always clamped to [0, 1]: the search scored clamped images,
        and a metric queried only through valid images (entropy, PIQE) need not accept others."""
        return super().apply(perturbation, images, amplitude, clamp=True)


#: training images per metric call inside one query
_CHUNK = 16


@dataclasses.dataclass(frozen=True)
class _View:
    """Training images as one query scores them: ``distort(clamp(images + delta))``, against ``references``
    for a full-reference metric (the source's ``metric(y, jpeg(clamp(y + noise)))``)."""

    images: torch.Tensor
    references: torch.Tensor | None = None
    distort: Callable[[torch.Tensor], torch.Tensor] | None = None

    def quality(self, metric: Metric, delta: torch.Tensor) -> torch.Tensor:
        """q of every image of the view under the perturbation ``delta`` (tiled to their size)."""
        scores = []
        for start in range(0, self.images.shape[0], _CHUNK):
            x = self.images[start : start + _CHUNK]
            x = (x + tile_to(delta, x.shape[-2:])).clamp(0.0, 1.0)
            if self.distort is not None:
                x = self.distort(x)
            if self.references is None:
                scores.append(metric.quality(x))
                continue
            with metric.reference(self.references[start : start + _CHUNK]):
                scores.append(metric.quality(x))
        return torch.cat(scores)


def _mean_q(metric: Metric, views: list[_View], delta: torch.Tensor) -> float:
    """One query: the mean q over the training images (over every distortion, for a full-reference metric)."""
    scores = torch.cat([view.quality(metric, delta).float().cpu() for view in views])
    return float(scores.mean())
