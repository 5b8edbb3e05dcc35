"""A metric's verdict: the worst case over the attacks of a session, the evaluation checks, robust or fooled.

The MSU benchmark ranks metrics by R averaged over attacks; a person deciding whether to trust a
metric asks what the *worst* attack achieved and whether the evaluation itself was sound. This
module answers both from a session's flat case rows (:func:`~iqa_robustness.scores.summary.case_summary`,
or a logged case's params and metrics), as RobustBench and AutoAttack (Croce & Hein, ICML 2020)
answer them for classifiers (docs/verdict.md, docs/methodology.md "Verdicts"):

- **worst case** per metric x dataset x L-inf budget: the lowest R and the largest normalised
  absolute gain over every attack, each with the attack that reached it, and the MSU mean over
  attacks beside them. A defended metric's worst case counts adaptive attacks only; its
  non-adaptive rows are kept apart as "non-adaptive (optimistic)".
- **evaluation checks** (:mod:`iqa_robustness.scores.checks`): no gradient, random metric, black-box
  beats white-box, no progress, weaker at a larger budget, certificate breach.
- **certified bound** (``certified``), where the session has certify cases (docs/certify.md): per
  dataset the mean certified change of the median-smoothed metric beside the mean of the largest
  change its attacks achieved within the same L2 radius
  (:func:`~iqa_robustness.scores.certificate.certificate_summary`).
- **verdict**: ``fooled`` when the worst-case normalised gain reaches
  :attr:`VerdictPolicy.fooled_gain`; otherwise ``unreliable`` when a check flagged the metric, else
  ``robust`` (under the attacks tried).

Everything here is a pure function of plain rows; a :class:`MetricVerdict` is JSON-serialisable
(:meth:`MetricVerdict.to_dict`, read back by :meth:`MetricVerdict.from_dict`), so that a robustness
card (docs/card.md) can carry it and a leaderboard be rebuilt from cards.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from iqa_robustness.conventions import budget_in_units, dataset_slug
from iqa_robustness.scores.certificate import certificate_summary, certificate_text
from iqa_robustness.scores.checks import (
    BLACKBOX_BEATS_WHITEBOX,
    CERTIFICATE_BREACH,
    CHECK_FUNCTIONS,
    NO_GRADIENT,
    NO_PROGRESS,
    NON_ADAPTIVE,
    ON_EVERY_ROW,
    RANDOM_METRIC,
    WEAKER_AT_LARGER_BUDGET,
    CheckPolicy,
    Flag,
    attack_label,
    budget_text,
    number,
    row_budget,
)

#: the version of the verdict's JSON layout (``verdict.json``); raised when a field changes meaning
SCHEMA_VERSION = 1
#: a session's verdicts, in its results folder
VERDICT_FILE = "verdict.json"
VERDICT_TABLE_FILE = "verdict.csv"

#: the verdicts
FOOLED, ROBUST, UNRELIABLE, NO_SCORES = "fooled", "robust", "unreliable", "no scores"

#: statuses whose scores count
_SCORED = ("passed", "failed")


@dataclasses.dataclass(frozen=True)
class VerdictPolicy(CheckPolicy):
    """What *fooled* means, and the checks' thresholds (:class:`~iqa_robustness.scores.checks.CheckPolicy`).

    Attributes:
        fooled_gain: a metric is *fooled* at a budget when some attack's normalised absolute gain
            reaches this: on average the attacked image rose by this share of the spread of the clean
            images' scores (0.2: past a fifth of the data set in the metric's own ranking, for evenly
            spread scores). Below it, the metric is *robust* at that budget under the attacks tried,
            unless a check flagged the evaluation (docs/verdict.md).
    """

    fooled_gain: float = 0.2


def parse_fooled_gain(text: str, option: str = "--fooled-gain") -> float:
    """The value of ``--fooled-gain``: a finite normalised gain >= 0 (:attr:`VerdictPolicy.fooled_gain`).

    Raises:
        ValueError: anything else, saying what is expected.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{option} takes the normalised absolute gain from which a metric counts as fooled, a number >= 0 "
            f"(default {VerdictPolicy.fooled_gain}), not {text!r}"
        )
    return value


def policy_for(fooled_gain: float | None = None) -> VerdictPolicy:
    """The default policy, with ``fooled_gain`` when one is given (``--fooled-gain``)."""
    return VerdictPolicy() if fooled_gain is None else VerdictPolicy(fooled_gain=fooled_gain)


@dataclasses.dataclass
class WorstCase:
    """The worst any attack achieved on one metric x dataset x budget, and the mean over attacks beside it.

    Attributes:
        dataset: the data set (its slug); budget: the L-inf budget of ``--eps``, ``None`` when the attacks
            ran at their own bounds.
        worst_robustness_score, worst_robustness_attack, worst_robustness_case: the lowest R and where.
        max_norm_abs_gain, max_gain_attack, max_gain_case: the largest normalised absolute gain and where.
        mean_robustness_score, mean_norm_abs_gain: the MSU mean: per attack over its cases, then over attacks.
        n_attacks, n_cases: what the worst case is taken over.
        verdict: ``fooled``, ``robust`` or ``unreliable`` (a flag applies here) for this budget.
        certified: the certificate of the group's dataset when the session certified the metric on it
            (:func:`~iqa_robustness.scores.certificate.certificate_summary`: ``bound``, ``achieved``,
            ``unit``, ``eps``, ...); an L2 certificate of the smoothed metric, the same for every L-inf
            budget of the dataset. ``None`` without one.
    """

    dataset: str
    budget: float | None
    worst_robustness_score: float = math.nan
    worst_robustness_attack: str = ""
    worst_robustness_case: str = ""
    max_norm_abs_gain: float = math.nan
    max_gain_attack: str = ""
    max_gain_case: str = ""
    mean_robustness_score: float = math.nan
    mean_norm_abs_gain: float = math.nan
    n_attacks: int = 0
    n_cases: int = 0
    verdict: str = NO_SCORES
    certified: dict[str, Any] | None = None

    @property
    def budget_units(self) -> float | None:
        """The budget in units of 1/255 (``4.0`` for 4/255)."""
        return None if self.budget is None else budget_in_units(self.budget)

    @property
    def where(self) -> str:
        """``msu5 at 4/255``, or ``msu5`` without a budget."""
        return self.dataset if self.budget is None else f"{self.dataset} at {budget_text(self.budget)}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorstCase:
        """A group as :meth:`MetricVerdict.to_dict` wrote it (``null`` numbers back to NaN)."""
        return cls(**_fields_of(cls, data))


@dataclasses.dataclass
class MetricVerdict:
    """One metric's verdict: worst cases, the mean, the non-adaptive numbers of a defence, every check.

    Attributes:
        metric: the metric as the session named it (``jpeg50+cnniqa-live`` for a defended one).
        base_metric, defence: the undefended metric and the defence's label, for a defended metric.
        weights_mode: ``pretrained`` / ``random`` (comma list when mixed).
        verdict: ``fooled``, ``robust``, ``unreliable`` or ``no scores``; text: the line a person reads.
        worst_case: one :class:`WorstCase` per dataset x budget (adaptive attacks only for a defence).
        non_adaptive: the same over a defence's non-adaptive rows: optimistic, never its robustness.
        mean_robustness_score, mean_norm_abs_gain, n_attacks: the MSU mean over every counted case.
        flags: the checks that fired, with evidence; checks: every check's state.
        policy: the thresholds used.
        certified: the metric's certificates, where the session has certify cases: ``certificates`` (one
            :func:`~iqa_robustness.scores.certificate.certificate_summary` per certify case), and the
            loosest ``bound``, the largest ``achieved``, their ``unit`` and the total ``breaches``;
            ``None`` without any.
    """

    metric: str
    base_metric: str = ""
    defence: str = ""
    weights_mode: str = ""
    verdict: str = NO_SCORES
    text: str = ""
    worst_case: list[WorstCase] = dataclasses.field(default_factory=list)
    non_adaptive: list[WorstCase] = dataclasses.field(default_factory=list)
    mean_robustness_score: float = math.nan
    mean_norm_abs_gain: float = math.nan
    n_attacks: int = 0
    flags: list[Flag] = dataclasses.field(default_factory=list)
    checks: dict[str, str] = dataclasses.field(default_factory=dict)
    policy: VerdictPolicy = dataclasses.field(default_factory=VerdictPolicy)
    certified: dict[str, Any] | None = None

    @property
    def worst(self) -> WorstCase | None:
        """The worst case over every dataset and budget (lowest R; the largest gain is :attr:`largest_gain`)."""
        scored = [w for w in self.worst_case if math.isfinite(w.worst_robustness_score)]
        return min(scored, key=lambda w: w.worst_robustness_score) if scored else None

    @property
    def largest_gain(self) -> WorstCase | None:
        scored = [w for w in self.worst_case if math.isfinite(w.max_norm_abs_gain)]
        return max(scored, key=lambda w: w.max_norm_abs_gain) if scored else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: NaN and infinities become ``null``; budgets also in units of 1/255."""
        data = dataclasses.asdict(self)
        for key in ("worst_case", "non_adaptive"):
            for entry, case in zip(data[key], getattr(self, key), strict=True):
                entry["budget_255"] = case.budget_units
        return {"schema_version": SCHEMA_VERSION, **_plain(data)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricVerdict:
        """A verdict as :meth:`to_dict` wrote it (a ``verdict.json`` entry, a robustness card's ``verdict``).

        Raises:
            ValueError: a layout of another ``schema_version``, or a policy out of range.
        """
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"a verdict of schema_version {version!r}; this suite reads version {SCHEMA_VERSION}")
        fields = _fields_of(cls, data)
        fields["worst_case"] = [WorstCase.from_dict(c) for c in data.get("worst_case") or ()]
        fields["non_adaptive"] = [WorstCase.from_dict(c) for c in data.get("non_adaptive") or ()]
        fields["flags"] = [Flag(**_fields_of(Flag, f)) for f in data.get("flags") or ()]
        fields["checks"] = dict(data.get("checks") or {})
        fields["policy"] = VerdictPolicy(**_fields_of(VerdictPolicy, data.get("policy") or {}))
        return cls(**fields)

    def judged(self, policy: VerdictPolicy) -> MetricVerdict:
        """The same worst cases and flags judged at ``policy``'s ``fooled_gain`` (a card read at another threshold).

        The flags stay those of the thresholds the verdict was computed with: only the rows can re-run a check.
        """
        out = dataclasses.replace(
            self,
            worst_case=[dataclasses.replace(c) for c in self.worst_case],
            non_adaptive=[dataclasses.replace(c) for c in self.non_adaptive],
            policy=dataclasses.replace(self.policy, fooled_gain=policy.fooled_gain),
        )
        _judge(out)
        return out


def _fields_of(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of the dataclass ``cls``; a float field's ``null`` as NaN."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            continue
        value = data[field.name]
        if value is None and field.type in ("float", float):
            value = math.nan
        out[field.name] = value
    return out


# ----------------------------------------------------------------------------- worst case


def _counted(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows of cases with scores: finished, not a universal attack's amplitude mean."""
    return [
        r
        for r in rows
        if str(r.get("status", "passed")) in _SCORED
        and str(r.get("amplitude", "")) != "mean"
        and (math.isfinite(number(r.get("robustness_score"))) or math.isfinite(number(r.get("norm_abs_gain"))))
    ]


def _mean_over_attacks(rows: Sequence[Mapping[str, Any]], score: str) -> tuple[float, int]:
    """The MSU mean: ``score`` per attack over its cases, then over the attacks; and how many attacks."""
    per_attack: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        value = number(r.get(score))
        if math.isfinite(value):
            per_attack[str(r.get("attack", ""))].append(value)
    if not per_attack:
        return math.nan, 0
    means = [sum(v) / len(v) for v in per_attack.values()]
    return sum(means) / len(means), len(means)


def worst_cases(rows: Sequence[Mapping[str, Any]]) -> list[WorstCase]:
    """One :class:`WorstCase` per dataset x budget of one metric's rows (already filtered), in order."""
    groups: dict[tuple[str, float | None], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(dataset_slug(str(r.get("dataset", ""))), row_budget(r))].append(r)
    out = []
    for (dataset, budget), members in sorted(groups.items(), key=lambda kv: (kv[0][0], _budget_order(kv[0][1]))):
        case = WorstCase(dataset=dataset, budget=budget)
        with_r = [r for r in members if math.isfinite(number(r.get("robustness_score")))]
        if with_r:
            worst = min(with_r, key=lambda r: number(r["robustness_score"]))
            case.worst_robustness_score = number(worst["robustness_score"])
            case.worst_robustness_attack, case.worst_robustness_case = (
                attack_label(worst),
                str(worst.get("case_id", "")),
            )
        with_gain = [r for r in members if math.isfinite(number(r.get("norm_abs_gain")))]
        if with_gain:
            largest = max(with_gain, key=lambda r: number(r["norm_abs_gain"]))
            case.max_norm_abs_gain = number(largest["norm_abs_gain"])
            case.max_gain_attack, case.max_gain_case = attack_label(largest), str(largest.get("case_id", ""))
        case.mean_robustness_score, case.n_attacks = _mean_over_attacks(members, "robustness_score")
        case.mean_norm_abs_gain, _ = _mean_over_attacks(members, "norm_abs_gain")
        case.n_cases = len(members)
        out.append(case)
    return out


def _budget_order(budget: float | None) -> float:
    return math.inf if budget is None else budget


# ----------------------------------------------------------------------------- the verdict


def metric_verdict(
    metric: str, rows: Sequence[Mapping[str, Any]], policy: VerdictPolicy | None = None
) -> MetricVerdict:
    """The verdict of one metric from its case rows (any status; those without scores do not count).

    Args:
        metric: the metric's name as its rows give it.
        rows: the metric's rows: :func:`~iqa_robustness.scores.summary.case_summary` rows, or flat dicts
            of a logged case's identity, params and metrics (numbers may be text).
        policy: the thresholds (:class:`VerdictPolicy` defaults when omitted).
    """
    policy = policy or VerdictPolicy()
    counted = _counted(rows)
    defended = any(r.get("defence_mode") for r in rows)
    adaptive = [r for r in counted if str(r.get("defence_mode", "")) != NON_ADAPTIVE]
    first = rows[0] if rows else {}
    verdict = MetricVerdict(
        metric=metric,
        base_metric=str(first.get("base_metric", "") or "") if defended else "",
        defence=str(first.get("defence", "") or "") if defended else "",
        weights_mode=",".join(sorted({str(r["weights_mode"]) for r in rows if r.get("weights_mode")})),
        policy=policy,
    )
    verdict.worst_case = worst_cases(adaptive)
    if defended:
        verdict.non_adaptive = worst_cases([r for r in counted if str(r.get("defence_mode", "")) == NON_ADAPTIVE])
    verdict.mean_robustness_score, verdict.n_attacks = _mean_over_attacks(adaptive, "robustness_score")
    verdict.mean_norm_abs_gain, _ = _mean_over_attacks(adaptive, "norm_abs_gain")
    # evidence measured on the metric is in every case's row, scored or not; comparisons need scores
    for name, check in CHECK_FUNCTIONS:
        source = rows if name in ON_EVERY_ROW else adaptive
        verdict.checks[name], flags = check(source, policy)
        verdict.flags.extend(flags)
    _certify(verdict, rows)
    _judge(verdict)
    return verdict


def _judge(verdict: MetricVerdict) -> None:
    """Each group's verdict and the metric's, from the worst cases, the flags and the policy."""
    policy = verdict.policy
    for case in verdict.worst_case:
        case.verdict = _case_verdict(case, verdict.flags, policy)
    for case in verdict.non_adaptive:
        case.verdict = FOOLED if case.max_norm_abs_gain >= policy.fooled_gain else ROBUST
    verdict.verdict, verdict.text = _overall(verdict, policy)


def _certify(verdict: MetricVerdict, rows: Sequence[Mapping[str, Any]]) -> None:
    """Fill the ``certified`` slots from the metric's certify cases (docs/certify.md), where it has any.

    Each worst-case group gets its dataset's certificate; where several certify specs ran on one dataset,
    the one at the largest L2 radius (then the loosest bound) stands for it. The metric gets them all.
    """
    certificates = []
    for r in rows:
        entry = certificate_summary(r)
        if entry is not None:
            entry["dataset"] = dataset_slug(entry["dataset"])
            certificates.append(entry)
    if not certificates:
        return
    for case in [*verdict.worst_case, *verdict.non_adaptive]:
        mine = [c for c in certificates if c["dataset"] == case.dataset]
        if mine:
            case.certified = dict(max(mine, key=lambda c: (_finite_or(c["eps"]), _finite_or(c["bound"]))))
    verdict.certified = {
        "bound": max(_finite_or(c["bound"]) for c in certificates),
        "achieved": max(_finite_or(c["achieved"]) for c in certificates),
        "unit": certificates[0]["unit"],
        "breaches": sum(int(c["breaches"]) for c in certificates),
        "certificates": certificates,
    }


def _finite_or(value: Any, default: float = -math.inf) -> float:
    x = number(value)
    return x if math.isfinite(x) else default


def _case_verdict(case: WorstCase, flags: Sequence[Flag], policy: VerdictPolicy) -> str:
    if not math.isfinite(case.max_norm_abs_gain):
        return NO_SCORES
    if case.max_norm_abs_gain >= policy.fooled_gain:
        return FOOLED
    return UNRELIABLE if any(f.applies_to(case.dataset, case.budget) for f in flags) else ROBUST


def _overall(verdict: MetricVerdict, policy: VerdictPolicy) -> tuple[str, str]:
    """The metric's verdict and its line: fooled at the smallest budget, else unreliable, else robust."""
    cases = verdict.worst_case
    fooled = [c for c in cases if c.verdict == FOOLED]
    if fooled:
        first = min(fooled, key=lambda c: (_budget_order(c.budget), -c.max_norm_abs_gain))
        at = f" at {budget_text(first.budget)}" if first.budget is not None else ""
        return FOOLED, (
            f"fooled{at}: norm. gain {first.max_norm_abs_gain:.3g} by {first.max_gain_attack} on {first.dataset}"
        )
    if verdict.flags:
        reasons = _reasons(verdict.flags)
        return UNRELIABLE, f"evaluation unreliable: {'; '.join(reasons)}"
    scored = [c for c in cases if c.verdict == ROBUST]
    if not scored:
        return NO_SCORES, "no scores: no case of this metric has scores"
    budgets = [c.budget for c in scored if c.budget is not None]
    at = f" at {budget_text(max(budgets))}" if budgets else ""
    largest = max(c.max_norm_abs_gain for c in scored)
    return ROBUST, (
        f"robust{at}: largest norm. gain {largest:.3g} < {policy.fooled_gain:g} over {verdict.n_attacks} attack(s)"
    )


def _reasons(flags: Sequence[Flag]) -> list[str]:
    """One short reason per check, naming where: ``no gradient on msu5``, ``no progress (ifgsm, nes)``."""
    where: dict[str, list[str]] = defaultdict(list)
    for flag in flags:
        evidence = flag.evidence
        if flag.check in (NO_PROGRESS, WEAKER_AT_LARGER_BUDGET):
            detail = str(evidence.get("attack", ""))
        elif flag.check == BLACKBOX_BEATS_WHITEBOX:
            detail = f"{evidence.get('blackbox_attack', '')} > {evidence.get('best_gradient_attack', '')}"
        else:
            detail = flag.dataset or ""
        if detail not in where[flag.check]:
            where[flag.check].append(detail)
    out = []
    for check, details in where.items():
        what = check.replace("-", " ")
        if check in (NO_GRADIENT, RANDOM_METRIC, CERTIFICATE_BREACH):
            out.append(f"{what} on {', '.join(details)}" if any(details) else what)
        else:
            out.append(f"{what} ({', '.join(details)})")
    return out


def session_verdicts(rows: Iterable[Mapping[str, Any]], policy: VerdictPolicy | None = None) -> list[MetricVerdict]:
    """Every metric's verdict from a session's rows, in the order the metrics first appear.

    Args:
        rows: one flat mapping per case (see :func:`metric_verdict`); a universal attack's amplitude-mean
            rows are ignored (its amplitudes count one by one).
        policy: the thresholds.
    """
    by_metric: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_metric[str(r.get("metric", ""))].append(r)
    return [metric_verdict(metric, members, policy) for metric, members in by_metric.items()]


# ----------------------------------------------------------------------------- tables and files


def verdict_table(verdicts: Iterable[MetricVerdict]) -> list[dict[str, Any]]:
    """One row per metric x dataset x budget x evaluation, for ``verdict.csv`` and the console.

    ``evaluation`` is ``adaptive`` (a defended metric's worst case), ``non-adaptive (optimistic)`` or
    ``undefended``; ``flags`` lists the checks that apply to the row's dataset and budget.
    """
    out: list[dict[str, Any]] = []
    for v in verdicts:
        kinds = [
            ("adaptive" if v.defence else "undefended", v.worst_case),
            ("non-adaptive (optimistic)", v.non_adaptive),
        ]
        for evaluation, cases in kinds:
            for c in cases:
                flags = [f for f in v.flags if f.applies_to(c.dataset, c.budget)] if evaluation != kinds[1][0] else []
                out.append(
                    {
                        "metric": v.metric,
                        "defence": v.defence,
                        "evaluation": evaluation,
                        "dataset": c.dataset,
                        "budget": "" if c.budget is None else c.budget_units,
                        "verdict": c.verdict,
                        "worst_robustness_score": c.worst_robustness_score,
                        "worst_robustness_attack": c.worst_robustness_attack,
                        "max_norm_abs_gain": c.max_norm_abs_gain,
                        "max_gain_attack": c.max_gain_attack,
                        "mean_robustness_score": c.mean_robustness_score,
                        "mean_norm_abs_gain": c.mean_norm_abs_gain,
                        "n_attacks": c.n_attacks,
                        "n_cases": c.n_cases,
                        "flags": "; ".join(f.check for f in flags),
                        "metric_verdict": v.text,
                        "weights_mode": v.weights_mode,
                        **_certified_columns(c.certified),
                    }
                )
    return out


def _certified_columns(certified: Mapping[str, Any] | None) -> dict[str, Any]:
    """A group's certificate as ``verdict.csv`` columns (none without one)."""
    if not certified:
        return {}
    return {
        "certified_bound": certified.get("bound"),
        "certified_achieved": certified.get("achieved"),
        "certified_unit": certified.get("unit"),
        "certified_eps": certified.get("eps"),
        "certified_sigma": certified.get("sigma"),
        "certified_n": certified.get("n"),
        "certified_alpha": certified.get("alpha"),
        "certificate_breaches": certified.get("breaches"),
        "certified": certificate_text(certified),
    }


def verdict_leaderboard(verdicts: Iterable[MetricVerdict]) -> list[dict[str, Any]]:
    """Metrics ranked by their worst case: the highest worst-case R first (ties: the higher mean R).

    Each row leads with the worst case over every dataset and budget (the lowest R and the largest
    normalised gain, each with its attack) and keeps the MSU mean over attacks beside it
    (``robustness_score``, ``norm_abs_gain``: the names the leaderboard always had).
    """
    rows = []
    for v in verdicts:
        worst, largest = v.worst, v.largest_gain
        rows.append(
            {
                "metric": v.metric,
                "verdict": v.verdict,
                "worst_robustness_score": worst.worst_robustness_score if worst else math.nan,
                "worst_robustness_attack": f"{worst.worst_robustness_attack} ({worst.where})" if worst else "",
                "max_norm_abs_gain": largest.max_norm_abs_gain if largest else math.nan,
                "max_gain_attack": f"{largest.max_gain_attack} ({largest.where})" if largest else "",
                "robustness_score": v.mean_robustness_score,
                "norm_abs_gain": v.mean_norm_abs_gain,
                "n_attacks": v.n_attacks,
                "n_cases": sum(c.n_cases for c in v.worst_case),
                "flags": ", ".join(dict.fromkeys(f.check for f in v.flags)),
                "text": v.text,
                "weights_mode": v.weights_mode,
            }
        )
    rows.sort(key=lambda r: (_nan_last(r["worst_robustness_score"]), _nan_last(r["robustness_score"]), r["metric"]))
    return [{"rank": i, **r} for i, r in enumerate(rows, 1)]


def _nan_last(value: float) -> tuple[bool, float]:
    return (math.isnan(value), -value if not math.isnan(value) else 0.0)


def write_verdicts(verdicts: Sequence[MetricVerdict], path: Path) -> Path:
    """The verdicts as JSON (``{"schema_version", "policy", "metrics": [...]}``), written atomically."""
    policy = verdicts[0].policy if verdicts else VerdictPolicy()
    data = {
        "schema_version": SCHEMA_VERSION,
        "policy": dataclasses.asdict(policy),
        "metrics": [v.to_dict() for v in verdicts],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    tmp.replace(path)
    return path


def _plain(value: Any) -> Any:
    """JSON-safe: non-finite floats as ``None``, containers recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
