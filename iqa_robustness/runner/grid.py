"""The grid: metric x attack x dataset (x train set x amplitude for universal attacks), as case specs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from iqa_robustness.attacks.spec import AttackSpec, parse_attack_spec, parse_attack_specs
from iqa_robustness.conventions import AMPLITUDES, dataset_slug


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """One point of the grid. Its ``id`` is the pytest id and the results' file stem.

    ``attack_spec`` is the attack with its hyperparameter values (a spec string such as
    ``"ifgsm(eps=4/255)"`` is parsed); :attr:`attack` is its label, the name alone for the defaults.
    """

    metric: str
    attack_spec: AttackSpec
    dataset: str
    amplitude: float | None = None
    train_dataset: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attack_spec, str):
            object.__setattr__(self, "attack_spec", parse_attack_spec(self.attack_spec))

    @property
    def attack(self) -> str:
        """``ifgsm``, or ``ifgsm(eps=0.01569,iters=20)`` with values: the attack as results name it."""
        return self.attack_spec.label

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
        return self.attack_spec.cls.universal


def build_grid(
    metrics: Sequence[str],
    attacks: Sequence[str | AttackSpec],
    datasets: Sequence[str],
    amplitudes: Sequence[float] = AMPLITUDES,
    train_datasets: Sequence[str] = ("sample",),
) -> list[CaseSpec]:
    """Every compatible combination, in a stable order (metric-major, so one worker keeps one model).

    ``attacks`` are specs or spec strings (``ifgsm``, ``*fgsm``, ``ifgsm(eps=4/255)``).
    """
    specs = parse_attack_specs(attacks)
    grid: list[CaseSpec] = []
    for m in metrics:
        for a in specs:
            for d in datasets:
                if a.cls.universal:
                    grid.extend(CaseSpec(m, a, d, amp, t) for t in train_datasets for amp in amplitudes)
                else:
                    grid.append(CaseSpec(m, a, d))
    return grid
