"""Median-smoothing certificates of a metric's score under L2 perturbations, and a case's certify scores.

Median smoothing (Chiang, Curry, Abdelkader, Kumar, Dickerson and Goldstein, "Detection as
regression: certified object detection by median smoothing", NeurIPS 2020), as Shumitskaya et al.
apply it to quality metrics (katiashh/certified-iqa-defenses, ``ccrf/calc_nms_*.py``); the page
is docs/certify.md. The smoothed metric is

    h(x) = median of f(clamp(x + N(0, s^2 I), 0, 1)).

For any ``||delta||_2 <= eps``, Chiang et al.'s theorem 1 bounds the median at ``x + delta`` by the
percentiles at ``x``: ``h_pl(x) <= h(x + delta) <= h_pu(x)`` with ``pl = Phi(-eps / s)`` and
``pu = Phi(eps / s)``. From n samples ``X_(1) <= ... <= X_(n)`` of ``f`` at ``x``, ``X_(q_u)`` is at
least ``h_pu(x)`` with probability ``P(Bin(n, pu) <= q_u - 1)``, and ``X_(q_l)`` at most ``h_pl(x)``
with probability ``P(Bin(n, pl) >= q_l)``: :func:`certificate_ranks` picks the tightest ranks whose
probability is at least ``1 - alpha`` each (so the interval holds with at least ``1 - 2 alpha``).
Ranks are 1-based order statistics; the source indexes a descending list from 0, which gives the
ranks ``q_l - 1`` and ``q_u - 1`` (one sample tighter at the top than the theorem allows).

The estimate ``h(x)`` reported is the sample of rank ``(n + 1) // 2`` (the lower median, as the source's
``torch.median`` takes it), and the certified change ``max(upper - h(x), h(x) - lower)``.

:func:`certified_case_scores` turns a certify case's per-image rows into its scores: the certified
and the achieved change per image and their means, raw and in the group's min-max scaled units
(:class:`~iqa_robustness.scores.formulas.MinMaxScale` fitted on the oriented smoothed clean
scores, as the benchmark's scores are), and the images whose smoothed attacked score left the
certified interval (:func:`certificate_breaches`; a breach is a bug or an event of probability
about ``alpha``: docs/certify.md says which).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from iqa_robustness.scores.checks import number
from iqa_robustness.scores.formulas import MinMaxScale, orient
from iqa_robustness.scores.rows import nothing_to_score, scored_rows

#: per-image columns of a certify case (raw metric units; ``_scaled``: the group's min-max units)
CERTIFIED_LOWER, CERTIFIED_UPPER = "certified_lower", "certified_upper"
CERTIFIED_CHANGE, ACHIEVED_CHANGE, RESAMPLED_CHANGE = "certified_change", "achieved_change", "resampled_change"
ACHIEVED_BY, ACHIEVED_L2, BASE_CLEAR, RESAMPLED = "achieved_by", "achieved_l2", "base_clear", "resampled"
#: seconds the image's certificate took (its n noisy copies scored), apart from the attacks and their estimates
CERTIFICATE_SECONDS = "certificate_seconds"
#: the smoothed score of an image after one attack: ``smoothed@ifgsm`` (the case JSON's rows)
SMOOTHED_PREFIX = "smoothed@"
_CHANGES = (CERTIFIED_CHANGE, ACHIEVED_CHANGE, RESAMPLED_CHANGE)
#: the columns the per-image CSV keeps for a certify case, in order
CERTIFY_COLUMNS: tuple[str, ...] = (
    BASE_CLEAR,
    CERTIFIED_LOWER,
    CERTIFIED_UPPER,
    RESAMPLED,
    *(c for change in _CHANGES for c in (change, f"{change}_scaled")),
    ACHIEVED_BY,
    ACHIEVED_L2,
    CERTIFICATE_SECONDS,
)
#: the text columns among them
CERTIFY_TEXT_COLUMNS = frozenset({ACHIEVED_BY})


class CertificateError(ValueError):
    """Parameters that give no certificate (too few samples for the confidence, a non-positive sigma, ...)."""


@dataclasses.dataclass(frozen=True)
class Ranks:
    """The order statistics that bound the smoothed score, for n samples.

    Attributes:
        n: samples per image.
        lower, upper: 1-based ranks ``q_l`` and ``q_u`` of the lower and upper bound.
        p_lower, p_upper: the percentiles they bound, ``Phi(-eps / sigma)`` and ``Phi(eps / sigma)``.
    """

    n: int
    lower: int
    upper: int
    p_lower: float
    p_upper: float

    @property
    def median(self) -> int:
        """The rank of the reported smoothed score: ``(n + 1) // 2``, the lower median (``torch.median``'s)."""
        return (self.n + 1) // 2


def certificate_ranks(n: int, sigma: float, eps: float, alpha: float) -> Ranks:
    """The ranks ``q_l`` and ``q_u`` of the percentile bounds at L2 radius ``eps``, each at confidence ``1 - alpha``.

    ``q_u`` is the smallest rank with ``P(Bin(n, pu) <= q_u - 1) >= 1 - alpha`` and ``q_l`` the largest
    with ``P(Bin(n, pl) <= q_l - 1) <= alpha`` (scipy.stats for the normal and binomial distributions).

    Args:
        n: samples per image.
        sigma: standard deviation of the Gaussian noise (pixel units, images in [0, 1]).
        eps: L2 radius of the perturbations certified against (pixel units).
        alpha: the probability each bound may fail (0 < alpha < 0.5).

    Raises:
        CertificateError: a parameter out of range, or too few samples for any rank to reach the
            confidence (the message gives the smallest n that does).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CertificateError(f"certify: n is a number of noise samples per image (1 or more), got {n!r}")
    if not sigma > 0:
        raise CertificateError(f"certify: sigma is the noise's standard deviation and must be positive, got {sigma}")
    if not eps >= 0:
        raise CertificateError(f"certify: eps is an L2 radius and must be 0 or more, got {eps}")
    if not 0 < alpha < 0.5:
        raise CertificateError(f"certify: alpha is the probability a bound may fail, in (0, 0.5), got {alpha}")
    p_upper = float(stats.norm.cdf(eps / sigma))
    p_lower = float(stats.norm.cdf(-eps / sigma))
    below = np.arange(n)  # q - 1 for the ranks q = 1..n
    upper = np.flatnonzero(stats.binom.cdf(below, n, p_upper) >= 1 - alpha)
    lower = np.flatnonzero(stats.binom.cdf(below, n, p_lower) <= alpha)
    if upper.size == 0 or lower.size == 0:
        raise CertificateError(
            f"certify: {n} samples cannot bound the smoothed score at confidence {1 - alpha:g} "
            f"(sigma {sigma:g}, eps {eps:g}); give at least n={smallest_samples(sigma, eps, alpha)}, "
            "a larger alpha or a smaller eps"
        )
    return Ranks(n=n, lower=int(lower[-1]) + 1, upper=int(upper[0]) + 1, p_lower=p_lower, p_upper=p_upper)


def smallest_samples(sigma: float, eps: float, alpha: float) -> int:
    """The fewest samples per image for which :func:`certificate_ranks` finds finite bounds.

    The largest sample bounds ``h_pu`` when ``1 - pu^n >= 1 - alpha``, i.e. ``n >= log(alpha) / log(pu)``.
    """
    p_upper = float(stats.norm.cdf(eps / sigma))
    return max(1, math.ceil(math.log(alpha) / math.log(p_upper) - 1e-9))


@dataclasses.dataclass(frozen=True)
class Certificate:
    """One image's smoothed score and the interval it keeps for every perturbation within the radius.

    Attributes:
        median: the smoothed score ``h(x)`` (raw metric units).
        lower, upper: the certified interval of ``h(x + delta)`` for ``||delta||_2 <= eps``.
    """

    median: float
    lower: float
    upper: float

    @property
    def change(self) -> float:
        """The certified largest score change: ``max(upper - median, median - lower)``."""
        return max(self.upper - self.median, self.median - self.lower)

    def holds_for(self, value: float) -> bool:
        """Whether a smoothed score lies in the certified interval."""
        return self.lower <= value <= self.upper


def smoothed_median(samples: Sequence[float] | np.ndarray) -> float:
    """The smoothed score from one image's samples: the sample of rank ``(n + 1) // 2`` (the lower median).

    Raises:
        ValueError: no sample, or a sample that is not finite (the median of those is no score).
    """
    values = _finite_samples(samples)
    return float(np.sort(values)[(values.size - 1) // 2])


def certify_samples(samples: Sequence[float] | np.ndarray, ranks: Ranks) -> Certificate:
    """One image's :class:`Certificate` from its n samples of ``f`` under noise.

    Raises:
        ValueError: a number of samples other than ``ranks.n``, or a sample that is not finite.
    """
    values = np.sort(_finite_samples(samples))
    if values.size != ranks.n:
        raise ValueError(f"the ranks are for {ranks.n} samples, got {values.size}")
    return Certificate(
        median=float(values[ranks.median - 1]),
        lower=float(values[ranks.lower - 1]),
        upper=float(values[ranks.upper - 1]),
    )


def _finite_samples(samples: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(samples, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no samples: the smoothed score needs at least one")
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise ValueError(f"the metric gave {bad} non-finite score(s) of {values.size} noisy copies")
    return values


# ----------------------------------------------------------------------------- a case's rows


def certificate_row(certificate: Certificate, smoothed: Mapping[str, float], resampled: float) -> dict[str, Any]:
    """The certify columns of one image's row, in raw metric units.

    Args:
        certificate: the image's certificate (its median is the row's ``clear``).
        smoothed: attack label -> the smoothed score of the image that attack made (estimated
            with fresh noise); may be empty.
        resampled: the smoothed score of the clean image estimated again with fresh noise: how much
            the estimate moves with no attack at all.

    Returns:
        ``clear``, ``attacked`` (the smoothed score after the attack that moved it most, ``nan``
        without one), the interval, the certified change, ``achieved_change`` and ``achieved_by``
        (that attack, ``""`` without one), ``resampled`` and ``resampled_change``, and one
        ``smoothed@<attack>`` per attack.
    """
    changes = {label: abs(value - certificate.median) for label, value in smoothed.items()}
    worst = max(changes, key=lambda label: changes[label], default="")
    return {
        "clear": certificate.median,
        "attacked": smoothed[worst] if worst else math.nan,
        CERTIFIED_LOWER: certificate.lower,
        CERTIFIED_UPPER: certificate.upper,
        CERTIFIED_CHANGE: certificate.change,
        ACHIEVED_CHANGE: changes[worst] if worst else math.nan,
        ACHIEVED_BY: worst,
        RESAMPLED: resampled,
        RESAMPLED_CHANGE: abs(resampled - certificate.median),
        **{f"{SMOOTHED_PREFIX}{label}": value for label, value in smoothed.items()},
    }


def is_certified(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the rows are a certify case's (they carry the certified interval)."""
    return any(CERTIFIED_LOWER in row for row in rows)


def attack_labels(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The attacks of the rows' ``smoothed@<attack>`` columns, in order of first appearance."""
    return list(
        dict.fromkeys(k.removeprefix(SMOOTHED_PREFIX) for row in rows for k in row if k.startswith(SMOOTHED_PREFIX))
    )


def certificate_breaches(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every smoothed score of a scored row outside that row's certified interval, as a sentence each.

    Checked: the score after each attack (``smoothed@<attack>``) and the clean image's fresh estimate
    (``resampled``). The rows of any other case have none.
    """
    out = []
    for row in scored_rows(rows):
        if CERTIFIED_LOWER not in row:
            continue
        lower, upper = float(row[CERTIFIED_LOWER]), float(row[CERTIFIED_UPPER])
        measured = {
            f"after {k.removeprefix(SMOOTHED_PREFIX)}": v for k, v in row.items() if k.startswith(SMOOTHED_PREFIX)
        }
        measured["of the clean image estimated again"] = row.get(RESAMPLED, math.nan)
        for what, value in measured.items():
            value = float(value)
            if math.isfinite(value) and not lower <= value <= upper:
                out.append(
                    f"{row['image_name']}: the smoothed score {what} is {value:.6g}, outside the certified "
                    f"[{lower:.6g}, {upper:.6g}] around {float(row['clear']):.6g}"
                )
    return out


def certified_case_scores(
    rows: Sequence[Mapping[str, Any]], lower_better: bool
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """A certify case's scaled per-image columns and its scores, from its rows.

    The min-max scale is fitted on the oriented smoothed clean scores (``clear``) of the scored
    rows; every change is divided by its span (a change needs no offset, and no orientation: it is
    a distance).

    Args:
        rows: the case's rows (skipped ones keep their reasons and get no scaled values); each scored
            row with the columns of :func:`certificate_row`.
        lower_better: the metric's orientation.

    Returns:
        The rows with ``<change>_scaled`` columns, and the scores: ``n``; for each of
        ``certified_change``, ``achieved_change`` and ``resampled_change`` its mean (raw), the mean
        and the largest value scaled (``_scaled``, ``_scaled_max``); per attack the mean scaled
        change ``achieved_change_scaled/<attack>``; ``achieved_ratio_max`` (the largest achieved over
        certified change of an image); ``certificate_breaches`` (smoothed scores outside their
        interval: 0 unless something is wrong, docs/certify.md); ``smoothing_shift`` (mean
        ``|h(x) - f(x)|`` scaled: how far smoothing alone moves the score); ``scale_span``; and
        ``certificate_seconds_per_image`` when the rows have their timing.

    Raises:
        NothingToScoreError: no scored row.
    """
    scored = scored_rows(rows)
    if not scored:
        raise nothing_to_score(rows)
    scale = MinMaxScale.fit(orient([float(r["clear"]) for r in scored], lower_better))
    scored_ids = {id(row) for row in scored}
    out_rows: list[dict[str, Any]] = []
    for row in rows:
        new = dict(row)
        if id(row) in scored_ids:
            new.update({f"{key}_scaled": float(row[key]) / scale.span for key in _CHANGES if key in row})
        out_rows.append(new)
    done = scored_rows(out_rows)
    scores: dict[str, float] = {"n": len(done)}
    for key in _CHANGES:
        raw = _column(done, key)
        scores[key] = _mean(raw)
        scores[f"{key}_scaled"] = _mean(raw / scale.span)
        scores[f"{key}_scaled_max"] = _max(raw / scale.span)
    clear = _column(done, "clear")
    for label in attack_labels(done):
        change = np.abs(_column(done, f"{SMOOTHED_PREFIX}{label}") - clear)
        scores[f"{ACHIEVED_CHANGE}_scaled/{label}"] = _mean(change / scale.span)
    with np.errstate(divide="ignore", invalid="ignore"):  # a certified change of 0 has no ratio
        scores["achieved_ratio_max"] = _max(_column(done, ACHIEVED_CHANGE) / _column(done, CERTIFIED_CHANGE))
    scores["certificate_breaches"] = float(len(certificate_breaches(done)))
    if all(BASE_CLEAR in r for r in done):
        scores["smoothing_shift"] = _mean(np.abs(clear - _column(done, BASE_CLEAR)) / scale.span)
    scores["scale_span"] = scale.span
    if any(CERTIFICATE_SECONDS in r for r in done):
        scores[f"{CERTIFICATE_SECONDS}_per_image"] = _mean(_column(done, CERTIFICATE_SECONDS))
    return out_rows, scores


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([float(r.get(key, math.nan)) for r in rows], dtype=np.float64)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.mean(finite)) if finite.size else math.nan


def _max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.max(finite)) if finite.size else math.nan


# ----------------------------------------------------------------------------- a certify case in the verdict

#: the certify spec's fields that say what a certificate is about; a verdict row names them ``certify_<field>``
CERTIFY_FIELDS = ("sigma", "eps", "n", "alpha")
#: the unit of a certificate in the verdict: changes of the smoothed score over the span of its clean scores
CERTIFIED_UNIT = "min-max"


def certify_fields(params: Mapping[str, Any]) -> dict[str, Any]:
    """A certify case's ``sigma``, ``eps``, ``n`` and ``alpha`` as ``certify_<field>`` (other scores share names)."""
    return {f"certify_{key}": params[key] for key in CERTIFY_FIELDS if key in params}


def certificate_summary(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a verdict says of one certify case, from its flat row (a summary row, or a logged case's metrics).

    The comparison is per image and then averaged, so that a bound and what attacks achieved
    are about the same images: ``bound`` is the mean certified change of the smoothed score and
    ``achieved`` the mean of each image's largest change by any attack within the same L2 ball
    (both in :data:`CERTIFIED_UNIT`: over the span of the smoothed clean scores). No image's
    achieved change may exceed its own certified change; ``achieved_ratio_max`` is the largest
    such ratio and ``breaches`` counts estimates outside their interval (docs/certify.md).

    Args:
        row: the case's identity (``case_id``, ``dataset``, ``status``), its scores
            (:func:`certified_case_scores`) and :func:`certify_fields` (numbers may be text).

    Returns:
        ``None`` for a row without a finite certified change (another kind of case, or a certify
        case that raised); else ``bound``, ``achieved``, ``unit``, ``achieved_max``,
        ``achieved_ratio_max``, ``achieved_by`` (the attack with the largest mean change),
        ``resampled``, ``breaches``, ``smoothing_shift``, the raw ``bound_raw`` and
        ``achieved_raw``, the certificate's ``norm``, ``eps``, ``sigma``, ``n`` and ``alpha``,
        ``images``, ``case``, ``dataset``, ``seconds_per_image`` (the whole case) and
        ``certificate_seconds_per_image`` (the n noisy copies of the clean image). A number that is
        not known (not finite) is ``None``: the entry is JSON as it is.
    """
    bound = number(row.get(f"{CERTIFIED_CHANGE}_scaled"))
    if not math.isfinite(bound) or str(row.get("status", "passed")) not in ("passed", "failed"):
        return None
    prefix = f"{ACHIEVED_CHANGE}_scaled/"
    per_attack = {str(k).removeprefix(prefix): number(v) for k, v in row.items() if str(k).startswith(prefix)}
    per_attack = {k: v for k, v in per_attack.items() if math.isfinite(v)}
    breaches = number(row.get("certificate_breaches"))
    samples = number(row.get("certify_n"))
    entry = {
        "bound": bound,
        "achieved": number(row.get(f"{ACHIEVED_CHANGE}_scaled")),
        "unit": CERTIFIED_UNIT,
        "achieved_max": number(row.get(f"{ACHIEVED_CHANGE}_scaled_max")),
        "achieved_ratio_max": number(row.get("achieved_ratio_max")),
        "achieved_by": max(per_attack, key=lambda k: per_attack[k]) if per_attack else "",
        "resampled": number(row.get(f"{RESAMPLED_CHANGE}_scaled")),
        "breaches": int(breaches) if math.isfinite(breaches) else 0,
        "smoothing_shift": number(row.get("smoothing_shift")),
        "bound_raw": number(row.get(CERTIFIED_CHANGE)),
        "achieved_raw": number(row.get(ACHIEVED_CHANGE)),
        "norm": "L2",
        "eps": number(row.get("certify_eps")),
        "sigma": number(row.get("certify_sigma")),
        "n": int(samples) if math.isfinite(samples) else None,
        "alpha": number(row.get("certify_alpha")),
        "images": int(number(row.get("n"))) if math.isfinite(number(row.get("n"))) else None,
        "case": str(row.get("case_id", "")),
        "dataset": str(row.get("dataset", "")),
        "seconds_per_image": number(row.get("seconds_per_image")),
        f"{CERTIFICATE_SECONDS}_per_image": number(row.get(f"{CERTIFICATE_SECONDS}_per_image")),
    }
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in entry.items()}


def certificate_text(entry: Mapping[str, Any]) -> str:
    """``certified ≤ 0.617 · achieved 0.169 (min-max units; L2 0.05, sigma 0.12, n 100, alpha 0.001)``."""
    breaches = int(entry.get("breaches") or 0)
    tail = f"; {breaches} BREACH(ES)" if breaches else ""
    return (
        f"certified ≤ {_short(entry.get('bound'))} · achieved {_short(entry.get('achieved'))} "
        f"({entry.get('unit', CERTIFIED_UNIT)} units; {entry.get('norm', 'L2')} {_short(entry.get('eps'))}, "
        f"sigma {_short(entry.get('sigma'))}, n {entry.get('n')}, alpha {_short(entry.get('alpha'))}{tail})"
    )


def _short(value: Any) -> str:
    x = number(value)
    return f"{x:.3g}" if math.isfinite(x) else "–"
