"""The evaluation checks: flags that say a session's numbers may overstate a metric's robustness.

AutoAttack (Croce & Hein, ICML 2020) and Athalye et al. ("Obfuscated gradients give a false sense of
security", ICML 2018) list the signs that an evaluation of a classifier's robustness went wrong; these
are their counterparts for quality metrics (docs/verdict.md gives each one's measure, cost and threshold):

- **no gradient** (:func:`check_no_gradient`): a metric declared differentiable whose loss gradient on
  the clean images is zero or not finite almost everywhere (rounding, argmax, a detached branch);
- **random metric** (:func:`check_random_metric`): two scorings of the same clean images differ;
- **black-box beats white-box** (:func:`check_blackbox_beats_whitebox`): a query-only attack gains more
  than every gradient attack at the same or a larger L-inf budget;
- **no progress** (:func:`check_no_progress`): an iterative attack raised the score of under half the images;
- **weaker at a larger budget** (:func:`check_weaker_at_larger_budget`): an attack's gain falls as its
  budget grows;
- **certificate breach** (:func:`check_certificate_breach`): a certify case's smoothed score after an
  attack (or re-estimated) left the interval the certificate guarantees: the implementation or its
  statistics failed (docs/certify.md).

The first two read evidence the runner measured on the metric itself (:mod:`iqa_robustness.runner.probes`),
recorded with every case as its ``probes`` (the ``check_*`` values); the other three compare a metric's cases.
Each check is a pure function of flat case rows (a summary row, or a logged case's params and metrics,
where numbers may be text) and returns its state with the :class:`Flag` of every finding.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from iqa_robustness.conventions import budget_in_units, budget_slug, dataset_slug

#: the evaluation checks, in the order they are reported
NO_GRADIENT = "no-gradient"
RANDOM_METRIC = "random-metric"
BLACKBOX_BEATS_WHITEBOX = "black-box-beats-white-box"
NO_PROGRESS = "no-progress"
WEAKER_AT_LARGER_BUDGET = "weaker-at-larger-budget"
CERTIFICATE_BREACH = "certificate-breach"
CHECKS = (NO_GRADIENT, RANDOM_METRIC, BLACKBOX_BEATS_WHITEBOX, NO_PROGRESS, WEAKER_AT_LARGER_BUDGET, CERTIFICATE_BREACH)
#: the checks that read every row of a metric (evidence measured on the metric, certify cases); the others
#: compare the scores of the attack cases that count for its worst case
ON_EVERY_ROW = frozenset({NO_GRADIENT, RANDOM_METRIC, CERTIFICATE_BREACH})
#: what a check's state can be for one metric
PASSED, FLAGGED, NOT_APPLICABLE, NOT_RUN = "passed", "flagged", "not applicable", "not run"

#: the evidence the runner measures on the metric (:mod:`iqa_robustness.runner.probes`), a case's ``probes``
CHECK_IMAGES = "check_images"
CHECK_DIFFERENTIABLE = "check_differentiable"
CHECK_DEAD_GRADIENT = "check_dead_gradient_share"
CHECK_NONFINITE_GRADIENT = "check_nonfinite_gradient_images"
CHECK_GRADIENT_SECONDS = "check_gradient_seconds"
CHECK_RESCORE_DIFFERENCE = "check_rescore_difference"
CHECK_RESCORE_SECONDS = "check_rescore_seconds"
#: how image shards of one case combine each piece of evidence (the worst share, counts and times added)
_EVIDENCE_JOIN = {
    CHECK_IMAGES: sum,
    CHECK_DIFFERENTIABLE: min,
    CHECK_DEAD_GRADIENT: max,
    CHECK_NONFINITE_GRADIENT: sum,
    CHECK_GRADIENT_SECONDS: sum,
    CHECK_RESCORE_DIFFERENCE: max,
    CHECK_RESCORE_SECONDS: sum,
}

#: the case score of "no progress": the share of images whose score the attack moved towards better quality
IMPROVED = "improved_fraction"
NON_ADAPTIVE = "non-adaptive"


@dataclasses.dataclass(frozen=True)
class CheckPolicy:
    """The thresholds of the checks (docs/verdict.md explains each default).

    Attributes:
        dead_gradient_share: *no gradient* when, on the median checked image, at least this share of
            the loss gradient's elements are zero or not finite (a rounding step or an argmax gives 1.0;
            CNNIQA's min/max pooling and NIQE's block crop leave about 0.4 to 0.65 legitimately).
        rescore_tolerance: *random metric* when two scorings of the same clean image differ by more than
            this share of the metric's range on some checked image.
        no_progress_share: *no progress* when an iterative attack raised the score of fewer than this
            share of the images.
        blackbox_margin: *black-box beats white-box* when a query-only attack's normalised gain exceeds
            the best gradient attack's at the same or a larger L-inf budget by more than this.
        budget_drop: *weaker at a larger budget* when an attack's normalised gain falls by more than this
            from a smaller to a larger budget ...
        budget_drop_relative: ... and by more than this share of the gain at the smaller budget.
    """

    dead_gradient_share: float = 0.99
    rescore_tolerance: float = 1e-4
    no_progress_share: float = 0.5
    blackbox_margin: float = 0.05
    budget_drop: float = 0.05
    budget_drop_relative: float = 0.1

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"threshold {field.name} must be a finite number >= 0, not {value!r}")


@dataclasses.dataclass
class Flag:
    """A check that fired: its name, one line why, and the numbers it read.

    ``dataset`` and ``budget`` say where it applies (``None``: every data set / every budget).
    """

    check: str
    reason: str
    evidence: dict[str, Any]
    dataset: str | None = None
    budget: float | None = None

    def applies_to(self, dataset: str, budget: float | None) -> bool:
        """Whether the flag concerns ``dataset`` at ``budget`` (``None``: the attacks' own bounds)."""
        return (self.dataset is None or self.dataset == dataset) and (
            self.budget is None or budget is None or same_budget(self.budget, budget)
        )


def scores_are_draws(evidence: Mapping[str, Any], policy: CheckPolicy | None = None) -> bool:
    """Whether a metric's probe evidence says it is random (the random-metric check would fire)."""
    difference = number(evidence.get(CHECK_RESCORE_DIFFERENCE))
    return math.isfinite(difference) and difference > (policy or CheckPolicy()).rescore_tolerance


# ----------------------------------------------------------------------------- reading rows


def number(value: Any) -> float:
    """A cell as a float: numbers and numeric text as they are, anything else NaN."""
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def budget_text(budget: float) -> str:
    """``4/255``."""
    return f"{budget_in_units(budget):g}/255"


def row_budget(row: Mapping[str, Any]) -> float | None:
    value = number(row.get("budget"))
    return value if math.isfinite(value) else None


def same_budget(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def attack_name(row: Mapping[str, Any]) -> str:
    """The registered attack a row ran: ``attack_name``, else read off ``attack_spec`` or the case label.

    A label is ``name``, ``name(k=v,...)``, either with ``-eps<u>`` (a budget) and ``-nonadaptive``
    (a defence's non-adaptive evaluation) appended.
    """
    for key in ("attack_name", "attack_spec"):
        text = str(row.get(key) or "").split("(", 1)[0].strip()
        if text and _attack_cls(text) is not None:
            return text
    label = str(row.get("attack", "")).removesuffix("-nonadaptive")
    budget = row_budget(row)
    if budget is not None:
        label = label.removesuffix(f"-{budget_slug(budget)}")
    return label.split("(", 1)[0]


def _attack_cls(name: str) -> type | None:
    from iqa_robustness.attacks import UnknownAttackError, attack_class  # torch: only once rows are read

    try:
        return attack_class(name)
    except (UnknownAttackError, KeyError, ValueError):
        return None


def attack_facts(row: Mapping[str, Any]) -> tuple[bool, bool, bool]:
    """(gradient attack, query-only attack, iterative image-specific attack) of the row's attack."""
    cls = _attack_cls(attack_name(row))
    if cls is None:
        return False, False, False
    image_specific = not cls.universal
    gradient = bool(cls.needs_gradient) and image_specific
    blackbox = cls.family == "blackbox" and image_specific
    iterative = image_specific and cls.iterations_attr is not None
    return gradient, blackbox, iterative


def attack_label(row: Mapping[str, Any]) -> str:
    """How a verdict names the attack of a row: ``ifgsm-eps4``, ``uap @0.8``, ``uap @0.8 on coco``."""
    label = str(row.get("attack", ""))
    amplitude = number(row.get("amplitude"))
    if math.isfinite(amplitude):
        label += f" @{amplitude:g}"
    train = str(row.get("train_dataset") or "")
    if train:
        label += f" on {dataset_slug(train)}"
    return label


def _evidence(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    """The first finite value of an evidence column among ``rows`` (every case of a metric x dataset has the same)."""
    for r in rows:
        value = number(r.get(key))
        if math.isfinite(value):
            return value
    return math.nan


def by_dataset(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[dataset_slug(str(r.get("dataset", "")))].append(r)
    return dict(sorted(groups.items()))


def check_no_gradient(rows: Sequence[Mapping[str, Any]], policy: CheckPolicy) -> tuple[str, list[Flag]]:
    """A metric declared differentiable whose loss gradient on the clean images is zero or NaN almost everywhere."""
    flags: list[Flag] = []
    state = NOT_RUN
    for dataset, members in by_dataset(rows).items():
        if _evidence(members, CHECK_DIFFERENTIABLE) == 0.0:
            state = NOT_APPLICABLE if state == NOT_RUN else state
            continue
        share = _evidence(members, CHECK_DEAD_GRADIENT)
        if not math.isfinite(share):
            continue
        state = PASSED if state in (NOT_RUN, NOT_APPLICABLE) else state
        if share >= policy.dead_gradient_share:
            evidence = {
                "dead_gradient_share": share,
                "images": _evidence(members, CHECK_IMAGES),
                "nonfinite_gradient_images": _evidence(members, CHECK_NONFINITE_GRADIENT),
                "threshold": policy.dead_gradient_share,
            }
            reason = (
                f"no gradient: {share:.0%} of the loss gradient is zero or not finite on {dataset} "
                f"(median of {_count(evidence['images'])} clean images); gradient attacks cannot be trusted"
            )
            flags.append(Flag(NO_GRADIENT, reason, evidence, dataset=dataset))
            state = FLAGGED
    return state, flags


def check_random_metric(rows: Sequence[Mapping[str, Any]], policy: CheckPolicy) -> tuple[str, list[Flag]]:
    """Two scorings of the same clean images disagree (random crops, dropout, an unseeded defence)."""
    flags: list[Flag] = []
    state = NOT_RUN
    for dataset, members in by_dataset(rows).items():
        difference = _evidence(members, CHECK_RESCORE_DIFFERENCE)
        if not math.isfinite(difference):
            continue
        state = PASSED if state == NOT_RUN else state
        if difference > policy.rescore_tolerance:
            evidence = {
                "rescore_difference": difference,
                "images": _evidence(members, CHECK_IMAGES),
                "threshold": policy.rescore_tolerance,
            }
            reason = (
                f"random metric: two scorings of the same clean images on {dataset} differ by up to "
                f"{difference:.3g} of the metric's range; its scores are draws (attack it with --eot N)"
            )
            flags.append(Flag(RANDOM_METRIC, reason, evidence, dataset=dataset))
            state = FLAGGED
    return state, flags


def _linf(row: Mapping[str, Any]) -> float:
    """The L-inf bound a case kept: its ``--eps`` budget, else the attack's own bound (``linf_bound``)."""
    budget = row_budget(row)
    return budget if budget is not None else number(row.get("linf_bound"))


def check_blackbox_beats_whitebox(rows: Sequence[Mapping[str, Any]], policy: CheckPolicy) -> tuple[str, list[Flag]]:
    """A query-only attack beats every gradient attack at the same or a larger L-inf budget (AutoAttack's rule).

    Gradients that lead nowhere while random search succeeds are the signature of obfuscated gradients
    (Athalye et al., ICML 2018). Only image-specific attacks with an L-inf bound are compared.
    """
    flags: list[Flag] = []
    state = NOT_APPLICABLE
    for dataset, members in by_dataset(rows).items():
        white, black = [], []
        for r in members:
            gradient, blackbox, _ = attack_facts(r)
            if not (math.isfinite(_linf(r)) and math.isfinite(number(r.get("norm_abs_gain")))):
                continue
            (white if gradient else black if blackbox else []).append(r)
        for b in black:
            bound = _linf(b)
            rivals = [w for w in white if _linf(w) >= bound * (1 - 1e-6)]
            if not rivals:
                continue
            state = PASSED if state == NOT_APPLICABLE else state
            best = max(rivals, key=lambda w: number(w["norm_abs_gain"]))
            gain, best_gain = number(b["norm_abs_gain"]), number(best["norm_abs_gain"])
            if gain > best_gain + policy.blackbox_margin:
                evidence = {
                    "blackbox_attack": attack_label(b),
                    "blackbox_gain": gain,
                    "linf_bound": bound,
                    "best_gradient_attack": attack_label(best),
                    "best_gradient_gain": best_gain,
                    "best_gradient_linf_bound": _linf(best),
                    "gradient_attacks": len(rivals),
                    "margin": policy.blackbox_margin,
                }
                reason = (
                    f"black-box beats white-box: {attack_label(b)} reaches norm. gain {gain:.3g} on {dataset}, more "
                    f"than every gradient attack at L-inf {_linf_text(bound)} or more (best: {attack_label(best)}, "
                    f"{best_gain:.3g}); obfuscated gradients suspected"
                )
                flags.append(Flag(BLACKBOX_BEATS_WHITEBOX, reason, evidence, dataset=dataset, budget=row_budget(b)))
                state = FLAGGED
    return state, flags


def _linf_text(bound: float) -> str:
    return f"{budget_in_units(bound):.3g}/255"


def check_no_progress(rows: Sequence[Mapping[str, Any]], policy: CheckPolicy) -> tuple[str, list[Flag]]:
    """An iterative attack that raised the score of fewer than half the images (its loss did not improve)."""
    flags: list[Flag] = []
    state = NOT_APPLICABLE
    for r in rows:
        if not attack_facts(r)[2]:
            continue
        share = number(r.get(IMPROVED))
        if not math.isfinite(share):
            state = NOT_RUN if state == NOT_APPLICABLE else state
            continue
        state = PASSED if state in (NOT_APPLICABLE, NOT_RUN) else state
        if share < policy.no_progress_share:
            n = number(r.get("n"))
            dataset = dataset_slug(str(r.get("dataset", "")))
            evidence = {"attack": attack_label(r), "case": str(r.get("case_id", "")), "improved_fraction": share,
                        "images": n, "threshold": policy.no_progress_share}  # fmt: skip
            of = f" of {_count(n)} images" if math.isfinite(n) else " of the images"
            reason = (
                f"no progress: {attack_label(r)} raised the score on {share:.0%}{of} on {dataset}; "
                "the attack's loss did not improve"
            )
            flags.append(Flag(NO_PROGRESS, reason, evidence, dataset=dataset, budget=row_budget(r)))
            state = FLAGGED
    return state, flags


def check_weaker_at_larger_budget(rows: Sequence[Mapping[str, Any]], policy: CheckPolicy) -> tuple[str, list[Flag]]:
    """An attack whose normalised gain falls as its L-inf budget grows (a broken step schedule)."""
    series: dict[tuple[str, ...], list[tuple[float, Mapping[str, Any]]]] = defaultdict(list)
    for r in rows:
        budget, gain = row_budget(r), number(r.get("norm_abs_gain"))
        if budget is None or not math.isfinite(gain):
            continue
        attack = str(r.get("attack", "")).removesuffix(f"-{budget_slug(budget)}")
        key = (attack, dataset_slug(str(r.get("dataset", ""))), str(r.get("train_dataset") or ""),
               str(r.get("amplitude", "")))  # fmt: skip
        series[key].append((budget, r))
    flags: list[Flag] = []
    state = NOT_APPLICABLE
    for (attack, dataset, _, _), points in sorted(series.items()):
        if len(points) < 2:
            continue
        state = PASSED if state == NOT_APPLICABLE else state
        drop = _largest_drop(sorted(points, key=lambda p: p[0]), policy)
        if drop is None:
            continue
        (small, low_row), (large, high_row) = drop
        before, after = number(low_row["norm_abs_gain"]), number(high_row["norm_abs_gain"])
        label = attack_label({**low_row, "attack": attack})
        evidence = {"attack": label, "smaller_budget": small, "gain_at_smaller": before, "larger_budget": large,
                    "gain_at_larger": after, "threshold": policy.budget_drop,
                    "threshold_relative": policy.budget_drop_relative}  # fmt: skip
        reason = (
            f"weaker at a larger budget: {label} on {dataset} reaches norm. gain {before:.3g} at "
            f"{budget_text(small)} but {after:.3g} at {budget_text(large)}; its step schedule is suspect"
        )
        flags.append(Flag(WEAKER_AT_LARGER_BUDGET, reason, evidence, dataset=dataset, budget=large))
        state = FLAGGED
    return state, flags


def _largest_drop(points: Sequence[tuple[float, Mapping[str, Any]]], policy: CheckPolicy) -> tuple | None:
    """The (smaller, larger) pair of budget points with the largest fall in gain past both thresholds, or None."""
    found, largest = None, 0.0
    for i, (_, low_row) in enumerate(points):
        before = number(low_row["norm_abs_gain"])
        for point in points[i + 1 :]:
            drop = before - number(point[1]["norm_abs_gain"])
            if drop > policy.budget_drop and drop > policy.budget_drop_relative * abs(before) and drop > largest:
                found, largest = (points[i], point), drop
    return found


def check_certificate_breach(rows: Sequence[Mapping[str, Any]], policy: CheckPolicy) -> tuple[str, list[Flag]]:
    """A certify case with a smoothed score outside its certified interval (``certificate_breaches`` > 0).

    The certificate bounds every perturbation within its L2 radius, so an attack inside the ball that
    leaves the interval means the certificate, its estimate or the attack's projection is wrong, or an
    event of probability about ``alpha`` per image happened (docs/certify.md, "What the check compares,
    and how often chance breaks it"). Either way the session's certified numbers cannot be trusted.
    """
    flags: list[Flag] = []
    state = NOT_APPLICABLE
    for r in rows:
        breaches = number(r.get("certificate_breaches"))
        if not math.isfinite(breaches):
            continue
        state = PASSED if state == NOT_APPLICABLE else state
        if breaches > 0:
            dataset = dataset_slug(str(r.get("dataset", "")))
            evidence = {"case": str(r.get("case_id", "")), "breaches": breaches, "images": number(r.get("n")),
                        "achieved_ratio_max": number(r.get("achieved_ratio_max")),
                        "alpha": number(r.get("certify_alpha"))}  # fmt: skip
            case = r.get("attack", "certify")
            reason = (
                f"certificate breach: {_count(breaches)} smoothed score(s) of {case} on {dataset} "
                f"left their certified interval (largest achieved / certified change "
                f"{number(r.get('achieved_ratio_max')):.3g}); the certificate's implementation or statistics failed"
            )
            flags.append(Flag(CERTIFICATE_BREACH, reason, evidence, dataset=dataset))
            state = FLAGGED
    return state, flags


def _count(value: Any) -> str:
    x = number(value)
    return f"{x:g}" if math.isfinite(x) else "?"


#: every check, by name, in reporting order
CHECK_FUNCTIONS = (
    (NO_GRADIENT, check_no_gradient),
    (RANDOM_METRIC, check_random_metric),
    (BLACKBOX_BEATS_WHITEBOX, check_blackbox_beats_whitebox),
    (NO_PROGRESS, check_no_progress),
    (WEAKER_AT_LARGER_BUDGET, check_weaker_at_larger_budget),
    (CERTIFICATE_BREACH, check_certificate_breach),
)


def combine_evidence(parts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The ``check_*`` evidence of one case's image shards as one case's: the worst share, counts and times added."""
    out: dict[str, float] = {}
    for key, join in _EVIDENCE_JOIN.items():
        values = [number(p.get(key)) for p in parts]
        values = [v for v in values if math.isfinite(v)]
        if values:
            out[key] = float(join(values))
    return out
