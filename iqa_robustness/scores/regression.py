"""Did a metric become less robust? A paired test of one case's per-image scores in two sessions.

How to run it, and what its table says: docs/results.md, "Regression gate".

The regression gate (``iqa-robustness compare A B --fail-on-regression``) asks, for each case that
both sessions ran (same metric, attack with its hyperparameters, dataset [, train set, amplitude]),
whether B is less robust than A beyond noise. The evidence is per image: each session's per-image
CSV gives, for every image both scored, the per-image robustness score

    R_i = log10(max(1 - s(c_i), s(c_i)) / (|s(c_i) - s(a_i)| + 1e-6))

of the MSU benchmark (Antsiferova et al., AAAI 2024; see :mod:`iqa_robustness.scores.formulas`),
with s the min-max scaling fitted on that session's clear scores. The drop d_i = R_i(A) - R_i(B)
is paired by image, so the images' own difficulty cancels out.

The rule: a case regressed when the one-sided lower confidence bound of the mean drop (Student t,
level 1 - alpha, alpha = 0.05) lies above the tolerance (0.05 in R, i.e. the attack moved the
scaled score ~12% further on average beyond what chance explains). Equivalently the one-sided
paired t-test of "mean drop <= tolerance" rejects at alpha. Identical per-image values (the same
code and seed) give a zero drop and pass; one paired image cannot be tested and is reported as
such. The normalised absolute gain can be gated instead (``score="norm_abs_gain"``, where a rise
is the regression).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from iqa_robustness.scores.formulas import (
    MinMaxScale,
    normalized_absolute_gain,
    orient,
    robustness_score,
)
from iqa_robustness.scores.rows import scored_rows

#: per-image scores the gate can test, and whether a higher value means more robust
GATED_SCORES: Mapping[str, bool] = {"robustness_score": True, "norm_abs_gain": False}
#: default tolerance of the mean drop, in the gated score's units
DEFAULT_TOLERANCE: Mapping[str, float] = {"robustness_score": 0.05, "norm_abs_gain": 0.01}
#: default level of the one-sided test
DEFAULT_ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class GateRule:
    """What counts as a regression.

    Attributes:
        score: the per-image score compared (a key of :data:`GATED_SCORES`).
        tolerance: the mean drop (in the score's units, towards "less robust") that is tolerated.
        alpha: level of the one-sided test; the confidence reported is ``1 - p``.
    """

    score: str = "robustness_score"
    tolerance: float | None = None
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        if self.score not in GATED_SCORES:
            raise ValueError(f"cannot gate on {self.score!r}: choose one of {', '.join(GATED_SCORES)}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), not {self.alpha}")
        if self.tolerance is None:
            object.__setattr__(self, "tolerance", DEFAULT_TOLERANCE[self.score])
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, not {self.tolerance}")

    def describe(self) -> str:
        return (
            f"a case regressed when the {100 * (1 - self.alpha):g}% lower bound of its mean per-image "
            f"{self.score} drop (paired by image, one-sided Student t) exceeds {self.tolerance:g}"
        )


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One case's comparison.

    Attributes:
        n: images scored by both sessions (the pairs).
        a, b: the mean per-image score over the pairs in A and in B.
        drop: mean of the per-image drop towards "less robust" (A - B for R, B - A for gains).
        drop_low, drop_high: its two-sided (1 - alpha) Student-t interval.
        bound: the one-sided (1 - alpha) lower bound of the drop, compared with the tolerance.
        p_value: one-sided paired t-test of "mean drop <= tolerance".
        regressed: the rule fired.
        note: why a case could not be tested, or what was left out.
    """

    n: int
    a: float
    b: float
    drop: float
    drop_low: float
    drop_high: float
    bound: float
    p_value: float
    regressed: bool
    note: str = ""

    @property
    def confidence(self) -> float:
        """``1 - p``: how sure the test is that the drop exceeds the tolerance."""
        return 1.0 - self.p_value if math.isfinite(self.p_value) else math.nan


def per_image_scores(rows: Sequence[Mapping[str, Any]], lower_better: bool, score: str) -> dict[str, float]:
    """``image name -> per-image score`` of a case's scored rows, scaled on the case's clear scores."""
    rows = scored_rows(rows)
    if not rows:
        return {}
    clear = orient([float(r["clear"]) for r in rows], lower_better)
    attacked = orient([float(r["attacked"]) for r in rows], lower_better)
    scale = MinMaxScale.fit(clear)
    fn = robustness_score if score == "robustness_score" else normalized_absolute_gain
    values = fn(clear, attacked, scale)
    names = [str(r["image_name"]) for r in rows]
    return dict(zip(names, (float(v) for v in values), strict=True))


def _one_sided(drops: np.ndarray, tolerance: float, alpha: float) -> tuple[float, float, float, float]:
    """(lower bound, p-value, interval low, interval high) of the mean drop; exact for zero spread."""
    mean = float(drops.mean())
    sem = float(stats.sem(drops))
    if sem == 0.0 or not math.isfinite(sem):
        return mean, (0.0 if mean > tolerance else 1.0), mean, mean
    df = drops.size - 1
    bound = mean - float(stats.t.ppf(1 - alpha, df)) * sem
    p_value = float(stats.t.sf((mean - tolerance) / sem, df))
    low, high = stats.t.interval(1 - alpha, df, loc=mean, scale=sem)
    return bound, p_value, float(low), float(high)


def compare_case(
    rows_a: Sequence[Mapping[str, Any]],
    rows_b: Sequence[Mapping[str, Any]],
    lower_better: bool,
    rule: GateRule = GateRule(),
) -> Verdict:
    """The paired comparison of one case's per-image rows in session A and session B.

    Args:
        rows_a, rows_b: the case's per-image rows (MSU columns ``image_name, clear, attacked``)
            in each session; skipped rows are left out.
        lower_better: orientation of the metric's raw values.
        rule: the score, tolerance and level.
    """
    sa = per_image_scores(rows_a, lower_better, rule.score)
    sb = per_image_scores(rows_b, lower_better, rule.score)
    names = sorted(set(sa) & set(sb))
    unpaired = len(set(sa) ^ set(sb))
    note = f"{unpaired} image(s) scored in one session only, left out" if unpaired else ""
    nan = math.nan
    if not names:
        return Verdict(0, nan, nan, nan, nan, nan, nan, nan, False, "no image scored in both sessions")
    a = np.array([sa[n] for n in names])
    b = np.array([sb[n] for n in names])
    drops = a - b if GATED_SCORES[rule.score] else b - a
    finite = np.isfinite(drops)
    if not finite.all():
        note = "; ".join(filter(None, [note, f"{int((~finite).sum())} non-finite drop(s) left out"]))
        a, b, drops = a[finite], b[finite], drops[finite]
    if drops.size < 2:
        mean = float(drops.mean()) if drops.size else nan
        why = "fewer than two paired images: not tested"
        return Verdict(int(drops.size), float(a.mean()), float(b.mean()), mean, nan, nan, nan, nan, False, why)
    bound, p_value, low, high = _one_sided(drops, float(rule.tolerance), rule.alpha)
    regressed = bound > float(rule.tolerance)
    return Verdict(
        int(drops.size),
        float(a.mean()),
        float(b.mean()),
        float(drops.mean()),
        low,
        high,
        bound,
        p_value,
        regressed,
        note,
    )
