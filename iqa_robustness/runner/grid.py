"""The grid: metric x attack [x L-inf budget] x dataset (x train set x amplitude for universal attacks), as case specs.

With budgets (``--eps 2/255,8/255``), every attack that can be put at a budget (an L-inf bound, or the
benchmark's presets: :mod:`iqa_robustness.attacks.presets`) runs once per budget at the values
:meth:`~iqa_robustness.attacks.spec.AttackSpec.at_budget` derives for the case's metric, and its case id
carries the budget after the attack (``ifgsm-eps4-niqe-msu5``). A budget an attack has no value at
(Patch-RS at 2/255: its presets are at 4, 8 and 16 / 255) gets a case the plugin skips with the reason;
an attack with a value at no budget gets one case without a budget, skipped the same way
(:func:`skip_reason`).

A defended metric (``jpeg50+niqe``, :mod:`iqa_robustness.defences`) gets two cases per attack: the
adaptive one attacks the defended metric (BPDA / EoT through the defence), the non-adaptive one
(``ifgsm-nonadaptive-jpeg50+niqe-msu5``) attacks the undefended metric and scores its adversarial
images with the defended one, as the source benchmark evaluates defences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from iqa_robustness.attacks.budget import budget_slug
from iqa_robustness.attacks.certify import CERTIFY
from iqa_robustness.attacks.spec import AttackSpec, NoBudgetError, parse_attack_spec, parse_attack_specs
from iqa_robustness.conventions import AMPLITUDES, dataset_slug
from iqa_robustness.defences import base_metric, split_defended

#: the two ways a defended metric is attacked
ADAPTIVE, NON_ADAPTIVE = "adaptive", "non-adaptive"
#: the kinds of case: each has its test function and fixture in the grid
IMAGE, UNIVERSAL = "image", "universal"
KINDS = (IMAGE, UNIVERSAL, CERTIFY)


def case_kind(spec: AttackSpec) -> str:
    """``image``, ``universal`` or ``certify``: which of the grid's tests runs the spec's cases."""
    cls = spec.cls
    if cls.family == CERTIFY:
        return CERTIFY
    return UNIVERSAL if cls.universal else IMAGE


def grid_attacks(attack: str | None, certify: bool = False) -> list[AttackSpec]:
    """The specs of ``--attack``, with ``certify`` at its defaults added by ``--certify`` unless one is given.

    Raises:
        AttackSpecError: as :func:`~iqa_robustness.attacks.spec.parse_attack_specs`, and a certify spec
            whose values its class refuses (``certify(sigma=0)``), before any case runs.
    """
    specs = parse_attack_specs(attack)
    if certify and not any(case_kind(s) == CERTIFY for s in specs):
        specs.append(AttackSpec(CERTIFY))
    for spec in specs:
        if case_kind(spec) == CERTIFY:
            spec.create()
    return specs


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """One point of the grid. Its ``id`` is the pytest id and the results' file stem.

    ``attack_spec`` is the attack as selected, with its hyperparameter values (a spec string such as
    ``"ifgsm(eps=4/255)"`` is parsed); ``budget`` the L-inf budget of ``--eps`` it runs at, if any, and
    :attr:`run_spec` the attack as it runs. :attr:`attack` is the label results name it by: the
    name alone for the defaults, the budget appended (``ifgsm-eps4``). ``companions``: a certify
    case's image attacks, measured on the smoothed metric (not part of the id).
    """

    metric: str
    attack_spec: AttackSpec
    dataset: str
    amplitude: float | None = None
    train_dataset: str | None = None
    budget: float | None = None
    defence_mode: str | None = None
    companions: tuple[AttackSpec, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.attack_spec, str):
            object.__setattr__(self, "attack_spec", parse_attack_spec(self.attack_spec))
        object.__setattr__(self, "companions", tuple(parse_attack_specs(list(self.companions))))

    @property
    def kind(self) -> str:
        """``image``, ``universal`` or ``certify`` (:func:`case_kind`)."""
        return case_kind(self.attack_spec)

    @property
    def run_spec(self) -> AttackSpec:
        """The attack with the values it runs with: the selected spec at the case's budget."""
        return self.attack_spec if self.budget is None else self.attack_spec.at_budget(self.budget, self.base_metric)

    @property
    def attack(self) -> str:
        """The attack as results name it: ``ifgsm``, ``ifgsm(eps=0.01569,iters=20)``, ``ifgsm-eps4`` at a budget."""
        label = self.attack_spec.label
        if self.budget is not None:
            label = f"{label}-{budget_slug(self.budget)}"
        return f"{label}-nonadaptive" if self.defence_mode == NON_ADAPTIVE else label

    @property
    def base_metric(self) -> str:
        """The undefended metric behind :attr:`metric` (the metric itself without a defence)."""
        return base_metric(self.metric)

    @property
    def victim(self) -> str:
        """The metric the attack sees: the undefended one in the non-adaptive evaluation of a defence."""
        return self.base_metric if self.defence_mode == NON_ADAPTIVE else self.metric

    def undefended(self) -> CaseSpec:
        """The same case on the undefended metric (its id seeds the non-adaptive attack: the same images)."""
        return dataclasses.replace(self, metric=self.base_metric, defence_mode=None)

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
    budgets: Sequence[float] | None = None,
    companions: Sequence[str | AttackSpec] = (),
) -> list[CaseSpec]:
    """Every compatible combination, in a stable order (metric-major, so one worker keeps one model).

    Args:
        metrics, datasets, amplitudes, train_datasets: the grid's axes.
        attacks: specs or spec strings (``ifgsm``, ``*fgsm``, ``ifgsm(eps=4/255)``).
        budgets: L-inf budgets (``--eps``): each attack with an L-inf bound runs once per budget; one
            without gets a single case without a budget. ``None``: no budget axis.
        companions: the session's image attacks, which every certify case measures on the smoothed
            metric (the image-specific ones among them are kept).

    Raises:
        AttackSpecError: a spec that gives the bound a budget sets (``ifgsm(eps=...)`` with budgets).
    """
    specs = parse_attack_specs(attacks)
    measured = tuple(s for s in parse_attack_specs(list(companions)) if case_kind(s) == IMAGE)
    grid: list[CaseSpec] = []
    for m in metrics:
        defended = (ADAPTIVE, NON_ADAPTIVE) if split_defended(m) else (None,)
        for a in specs:
            certify = case_kind(a) == CERTIFY
            modes = (None,) if certify else defended
            for b in budgets_of(a, budgets):
                for d in datasets:
                    for mode in modes:
                        if certify:
                            grid.append(CaseSpec(m, a, d, companions=measured))
                        elif a.cls.universal:
                            grid.extend(
                                CaseSpec(m, a, d, amp, t, b, mode) for t in train_datasets for amp in amplitudes
                            )
                        else:
                            grid.append(CaseSpec(m, a, d, budget=b, defence_mode=mode))
    return grid


def budgets_of(spec: AttackSpec, budgets: Sequence[float] | None) -> list[float | None]:
    """The budgets ``spec`` gets cases at: all of ``budgets`` when it has a value at one of them (the
    others are skipped, :func:`skip_reason`), else ``[None]`` (one skipped case).

    Raises:
        AttackSpecError: the spec gives the value a budget sets.
    """
    if budgets is None or not spec.cls.budget_axis or unbudgeted_reason(spec, budgets) is not None:
        return [None]
    for b in budgets:
        budget_reason(spec, b)  # a spec that also gives the value a budget sets fails here, at collection
    return list(budgets)


def budget_reason(spec: AttackSpec, budget: float) -> str | None:
    """Why ``--eps`` cannot put this attack at ``budget`` (no preset there, no L-inf bound), or ``None``.

    Raises:
        AttackSpecError: the spec gives the value the budget sets.
    """
    try:
        spec.at_budget(budget)
    except NoBudgetError as exc:
        return str(exc)
    return None


def unbudgeted_reason(spec: AttackSpec, budgets: Sequence[float] | None = None) -> str | None:
    """Why ``--eps`` cannot put this attack at any of ``budgets`` (default: at any budget at all), or ``None``."""
    probes = list(budgets) if budgets else [1 / 255, *(spec.cls.presets.budgets if spec.cls.presets else ())]
    reasons = [budget_reason(spec, b) for b in probes]
    return None if None in reasons else reasons[0]


def skip_reason(case: CaseSpec, budgets: Sequence[float]) -> str | None:
    """Why the plugin skips ``case`` of a grid with ``budgets``: its attack has no value at the case's budget
    (or, for a case without one, at any of them); ``None`` when it runs."""
    if case.budget is None:
        return unbudgeted_reason(case.attack_spec, budgets)
    return budget_reason(case.attack_spec, case.budget)
