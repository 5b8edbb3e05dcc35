"""A metric whose scores are draws, attacked on the mean over draws: expectation over transformation (EoT).

Some metrics score a random view of the image (pyiqa's MANIQA crops at random; a network left with
dropout on draws a mask per call), so two scorings of the same image differ and a gradient is one
draw's. Athalye et al. ("Synthesizing robust adversarial examples", ICML 2018; "Obfuscated gradients
give a false sense of security", ICML 2018) attack such a model on the mean over draws: here, with
gradients on, :class:`MeanOfDraws` scores the mean of ``draws`` calls of the metric, so a gradient
attack steps along the mean gradient. Without gradients (scoring, query-based attacks) it is the
metric itself: one draw per call, as the metric scores. The suite wraps a metric so when its
random-metric check fires and ``--eot N`` is given (docs/verdict.md).
"""

from __future__ import annotations

import torch

from .base import Metric


class MeanOfDraws(Metric):
    """``metric`` with gradients taken on the mean of ``draws`` of its scores (see the module docstring).

    Args:
        metric: the random metric.
        draws: calls averaged per evaluation with gradients on (at least 1).
    """

    def __init__(self, metric: Metric, draws: int) -> None:
        if draws < 1:
            raise ValueError(f"--eot must be a positive number of draws, not {draws}")
        super().__init__(metric.spec, metric.weights_mode)
        self.metric = metric
        self.draws = draws

    @property
    def device(self) -> torch.device:
        return self.metric.device

    @property
    def random_scores(self) -> bool:
        return True  # wrapped because its scores were found to be draws

    def score(self, x: torch.Tensor) -> torch.Tensor:
        with self.metric.reference(self._reference):
            if not torch.is_grad_enabled() or self.draws == 1:
                return self.metric(x)
            return torch.stack([self.metric(x) for _ in range(self.draws)]).mean(dim=0)
