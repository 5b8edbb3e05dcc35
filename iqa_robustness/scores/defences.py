"""Defence scores (METHODOLOGY "Defences"), from a defended case's per-image rows.

A defended case (metric ``d+m``) scores every image four ways: ``c = S(x)`` and ``a = S(x_adv)`` by the
undefended metric (the rows' ``undefended_clear`` and ``undefended_attacked``), ``dc = S(d(x))`` and
``da = S(d(x_adv))`` by the defended one (the rows' ``clear`` and ``attacked``); ``x_adv`` was made against ``d+m`` (the
adaptive attack) or against ``m`` (the non-adaptive evaluation of the source benchmark). With
``e = 1e-6`` and ``R`` the metric's range:

- ``rel_gain(u, v) = mean(|u - v| / (u + e))`` (signed denominator, as the source),
  ``abs_gain(u, v) = mean(|u - v|) / R``;
- ``robust_*_gain = gain(c, da)`` (what the attack still moves once defended),
  ``nonpurified_*_gain = gain(c, a)``, ``both_defended_*_gain = gain(dc, da)``;
- ``similarity = mean(SSIM(x, d(x_adv)) + PSNR(x, d(x_adv)) / 40)`` and ``clear_similarity`` the same
  for ``d(x)``; PSNR capped at 100 dB (ours) so that an identity stays finite;
- ``clean_consistency = spearman(c, dc)``;
- with MOS: SROCC of the MOS with ``c``, ``a``, ``dc`` and ``da`` (sign-adjusted for lower-is-better);
- ``defence_seconds_per_image``: the defence's own time per image.

The source has no combined score, and neither has this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from iqa_robustness.scores.rows import scored_rows

EPS = 1e-6
#: PSNR of an unchanged image, in the similarity (dB)
PSNR_CAP = 100.0
#: per-image columns a defended case adds to its rows (and its MSU CSV keeps)
UNDEFENDED_CLEAR, UNDEFENDED_ATTACKED = "undefended_clear", "undefended_attacked"
SIMILARITY_COLUMNS = ("defended_psnr", "defended_ssim", "clear_defended_psnr", "clear_defended_ssim")
DEFENCE_SECONDS = "defence_seconds"
DEFENCE_COLUMNS = (UNDEFENDED_CLEAR, UNDEFENDED_ATTACKED, *SIMILARITY_COLUMNS, DEFENCE_SECONDS)
#: the scores, in the order tables show them
DEFENCE_SCORES = (
    "robust_abs_gain",
    "robust_rel_gain",
    "nonpurified_abs_gain",
    "nonpurified_rel_gain",
    "both_defended_abs_gain",
    "both_defended_rel_gain",
    "clean_consistency",
    "similarity",
    "clear_similarity",
    "defence_seconds_per_image",
)


def rel_gain(u: Sequence[float], v: Sequence[float]) -> float:
    u_, v_ = np.asarray(u, float), np.asarray(v, float)
    return float(np.mean(np.abs(u_ - v_) / (u_ + EPS)))


def abs_gain(u: Sequence[float], v: Sequence[float], score_range: float) -> float:
    u_, v_ = np.asarray(u, float), np.asarray(v, float)
    return float(np.mean(np.abs(u_ - v_)) / score_range)


def similarity(ssim: Sequence[float], psnr: Sequence[float]) -> float:
    s, p = np.asarray(ssim, float), np.minimum(np.asarray(psnr, float), PSNR_CAP)
    return float(np.mean(s + p / 40.0))


def defence_scores(rows: Iterable[Mapping[str, Any]], score_range: float, lower_better: bool) -> dict[str, float]:
    """The defence scores of one defended case; rows without all four scores are left out.

    Args:
        rows: the case's per-image rows (with ``undefended_clear`` and ``undefended_attacked``).
        score_range: ``R``, the metric's range (its declared bounds).
        lower_better: the metric's direction (for the sign of the MOS correlations).

    Raises:
        ValueError: no row has the four scores.
    """
    keys = ("clear", "attacked", UNDEFENDED_CLEAR, UNDEFENDED_ATTACKED)
    use = [r for r in scored_rows(rows) if all(_finite(r.get(k)) for k in keys)]
    if not use:
        raise ValueError("no image has its undefended and its defended scores: nothing to score the defence on")
    dc, da, c, a = (np.array([float(r[k]) for r in use]) for k in keys)
    out = {
        "robust_abs_gain": abs_gain(c, da, score_range),
        "robust_rel_gain": rel_gain(c, da),
        "nonpurified_abs_gain": abs_gain(c, a, score_range),
        "nonpurified_rel_gain": rel_gain(c, a),
        "both_defended_abs_gain": abs_gain(dc, da, score_range),
        "both_defended_rel_gain": rel_gain(dc, da),
        "clean_consistency": _spearman(c, dc),
        "defence_n": float(len(use)),
    }
    if all(_number(r.get(k)) for r in use for k in SIMILARITY_COLUMNS):  # PSNR is inf for an unchanged image
        out["similarity"] = similarity([r["defended_ssim"] for r in use], [r["defended_psnr"] for r in use])
        out["clear_similarity"] = similarity(
            [r["clear_defended_ssim"] for r in use], [r["clear_defended_psnr"] for r in use]
        )
    seconds = [float(r[DEFENCE_SECONDS]) for r in use if _finite(r.get(DEFENCE_SECONDS))]
    if seconds:
        out["defence_seconds_per_image"] = float(np.mean(seconds))
    mos = [r for r in use if _finite(r.get("mos"))]
    if len(mos) >= 3:
        m = np.array([float(r["mos"]) for r in mos])
        sign = -1.0 if lower_better else 1.0
        for name, key in (
            ("clean", keys[2]),
            ("attacked", keys[3]),
            ("defended_clean", "clear"),
            ("defended", "attacked"),
        ):
            out[f"srocc_mos_{name}"] = sign * _spearman(m, np.array([float(r[key]) for r in mos]))
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def _number(value: Any) -> bool:
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
