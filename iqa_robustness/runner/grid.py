"""The grid: metric x attack x dataset (x train set x amplitude for universal attacks), as case specs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from iqa_robustness.attacks import attack_class
from iqa_robustness.conventions import AMPLITUDES, dataset_slug


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """One point of the grid. Its ``id`` is the pytest id and the results' file stem."""

    metric: str
    attack: str
    dataset: str
    amplitude: float | None = None
    train_dataset: str | None = None

    @property
    def id(self) -> str:
        parts = [self.attack, self.metric, dataset_slug(self.dataset)]
        if self.train_dataset is not None:
            parts.append(f"on-{dataset_slug(self.train_dataset)}")
        if self.amplitude is not None:
            parts.append(f"amp{self.amplitude:g}")
        return "-".join(parts)

    @property
    def universal(self) -> bool:
        return attack_class(self.attack).universal


def build_grid(
    metrics: Sequence[str],
    attacks: Sequence[str],
    datasets: Sequence[str],
    amplitudes: Sequence[float] = AMPLITUDES,
    train_datasets: Sequence[str] = ("sample",),
) -> list[CaseSpec]:
    """Every compatible combination, in a stable order (metric-major, so one worker keeps one model)."""
    grid: list[CaseSpec] = []
    for m in metrics:
        for a in attacks:
            for d in datasets:
                if attack_class(a).universal:
                    grid.extend(CaseSpec(m, a, d, amp, t) for t in train_datasets for amp in amplitudes)
                else:
                    grid.append(CaseSpec(m, a, d))
    return grid
