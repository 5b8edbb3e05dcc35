"""What running an attack over a dataset gives, and the one interface every kind of input runs behind.

:class:`~iqa_robustness.runner.images.ImageCaseRunner` (image batches) and
:class:`~iqa_robustness.runner.clips.ClipCaseRunner` (whole clips against a video metric) both
turn a case, its attack and, for a universal attack, its trained perturbation into an
:class:`Outcome`; :class:`~iqa_robustness.runner.suite.Suite` picks the runner by the kind of dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.runner.grid import CaseSpec


@dataclasses.dataclass
class Outcome:
    """The per-image (or per-clip) rows of a case and what was measured along the way, before the group scores.

    Attributes:
        rows: MSU CSV rows, one per image or clip.
        seconds: attack time, excluding clean and attacked scoring.
        frames: images, or frames over all clips (the denominator of seconds per image).
        max_linf: the largest absolute pixel change over the case.
        pairs: (name, clean, adversarial) images kept for the artefacts.
    """

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    frames: int = 0
    max_linf: float = 0.0
    pairs: list[tuple[str, torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=list)

    def keep_pair(self, limit: int, name: str, clean: torch.Tensor, adversarial: torch.Tensor) -> None:
        """Keep one clean | adversarial pair for the artefacts, up to ``limit`` per case."""
        if len(self.pairs) < limit:
            self.pairs.append((name, clean.detach().cpu(), adversarial.detach().cpu()))


class CaseRunner(Protocol):
    """Runs one case's attack over its dataset."""

    def run(self, case: CaseSpec, attack: Attack, perturbation: Perturbation | None) -> Outcome: ...
