"""What running an attack over a dataset gives, and the one interface every kind of input runs behind.

:class:`~iqa_robustness.runner.images.ImageCaseRunner` (image batches) and
:class:`~iqa_robustness.runner.clips.ClipCaseRunner` (whole clips against a video metric) both
turn a case, its attack and, for a universal attack, its trained perturbation into an
:class:`Outcome`; :class:`~iqa_robustness.runner.suite.Suite` picks the runner by the kind of dataset.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Any, Protocol

import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.attacks.queries import QueryRecord
from iqa_robustness.runner.grid import CaseSpec


@dataclasses.dataclass
class Outcome:
    """The per-image (or per-clip) rows of a case and what was measured along the way, before the group scores.

    Attributes:
        rows: MSU CSV rows, one per image or clip.
        seconds: attack time, excluding clean and attacked scoring.
        frames: images, or frames over all clips (the denominator of seconds per image).
        max_linf: the largest absolute pixel change over the case.
        max_l0: the most pixel positions changed in one image (measured only for attacks with an L0 budget).
        max_l2: the largest L2 norm of a change (measured only by certify cases, whose attacks keep an L2 ball).
        queries: a query-based attack's record per scored image, in row order
            (:class:`~iqa_robustness.attacks.queries.QueryRecord`); empty for other attacks.
        pairs: (name, clean, adversarial) images kept for the artefacts: those of the most-fooled
            images (see :meth:`keep_pair`).
        transfer: ``--transfer-to``: target metric -> its scores of the adversarial images, or
            ``{"error": why}`` (see :class:`~iqa_robustness.runner.transfer.TransferScorer`).
    """

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    frames: int = 0
    max_linf: float = 0.0
    transfer: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    max_l0: float | None = None
    max_l2: float | None = None
    queries: list[QueryRecord] = dataclasses.field(default_factory=list)
    # a min-heap of ((gain, -arrival), name, clean, adversarial): the least fooled kept pair on top;
    # arrival numbers are unique, so the heap never compares tensors
    _kept: list[tuple[tuple[float, int], str, torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=list)
    _offered: int = 0

    def keep_pair(
        self, limit: int, name: str, clean: torch.Tensor, adversarial: torch.Tensor, gain: float = 0.0
    ) -> None:
        """Offer one clean | adversarial pair for the artefacts: the ``limit`` most-fooled are kept.

        Args:
            gain: how far the attack moved the score towards "better" (oriented: positive means
                fooled); ties and NaN keep the earlier images.
        """
        if limit <= 0:
            return
        self._offered += 1
        rank = (gain if gain == gain else -math.inf, -self._offered)  # NaN ranks last
        if len(self._kept) == limit and rank <= self._kept[0][0]:
            return
        entry = (rank, name, clean.detach().cpu(), adversarial.detach().cpu())
        if len(self._kept) < limit:
            heapq.heappush(self._kept, entry)
        else:
            heapq.heapreplace(self._kept, entry)

    @property
    def pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """The kept (name, clean, adversarial) images, most fooled first."""
        return [(name, clean, adv) for _, name, clean, adv in sorted(self._kept, key=lambda e: e[0], reverse=True)]


class CaseRunner(Protocol):
    """Runs one case's attack over its dataset."""

    def run(self, case: CaseSpec, attack: Attack, perturbation: Perturbation | None) -> Outcome: ...
