"""Defence scores (docs/methodology.md, "Defences"), from a defended case's per-image rows.

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
#: a random defence's per-image columns start so: the image's draw (``draw_angle``, ``draw_top``, ``draw_noise_seed``)
DRAW_PREFIX = "draw_"
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


# ----------------------------------------------------------------------------- tables

#: per defended case, the scores the defence table puts side by side for the two evaluations
_PAIRED = ("robust_abs_gain", "robust_rel_gain", "both_defended_abs_gain", "norm_abs_gain")
#: scores of the defence itself (the same images in both evaluations): taken from the adaptive case
_OWN = ("clean_consistency", "similarity", "clear_similarity", "defence_seconds_per_image")


def defence_table(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric x defence x attack x dataset (x train set): both evaluations side by side.

    Args:
        rows: summary rows (:func:`~iqa_robustness.scores.summary.case_summary`, or a logged case's
            params and metrics); those without a ``defence`` are left out. A universal attack enters
            with its mean over the amplitudes (its ``mean`` row when there is one).

    Returns:
        Rows with ``undefended_gain`` (the undefended metric's ``|c - a| / R`` on the images made
        against it), ``nonadaptive_*`` and ``adaptive_*`` of the paired scores, ``credited`` (how much
        gain the non-adaptive evaluation says the defence removes: ``undefended_gain -
        nonadaptive_robust_abs_gain``), ``recovered`` (how much of it the adaptive attack wins back:
        ``adaptive_robust_abs_gain - nonadaptive_robust_abs_gain``) and ``recovered_fraction``
        (``recovered / credited`` where the credit is positive), then the defence's own scores.
    """
    groups: dict[tuple[str, ...], dict[str, list[Mapping[str, Any]]]] = {}
    for row in rows:
        if not row.get("defence") or row.get("status") in ("error", "interrupted"):
            continue
        if row.get("defence_mode") not in ("adaptive", "non-adaptive"):  # a certify case: no attack evaluation
            continue
        attack = str(row["attack"]).removesuffix("-nonadaptive")
        key = (
            str(row.get("base_metric", "")),
            str(row["defence"]),
            attack,
            str(row.get("dataset", "")),
            str(row.get("train_dataset") or ""),
        )
        groups.setdefault(key, {}).setdefault(str(row.get("defence_mode", "")), []).append(row)
    out: list[dict[str, Any]] = []
    for (metric, defence, attack, dataset, train), modes in sorted(groups.items()):
        adaptive = _mean_of(modes.get("adaptive", []))
        non_adaptive = _mean_of(modes.get("non-adaptive", []))
        row: dict[str, Any] = {
            "metric": metric,
            "defence": defence,
            "attack": attack,
            "dataset": dataset,
            "train_dataset": train,
            "undefended_gain": non_adaptive.get("nonpurified_abs_gain", math.nan),
        }
        for key in _PAIRED:
            row[f"nonadaptive_{key}"] = non_adaptive.get(key, math.nan)
            row[f"adaptive_{key}"] = adaptive.get(key, math.nan)
        credited = row["undefended_gain"] - row["nonadaptive_robust_abs_gain"]
        recovered = row["adaptive_robust_abs_gain"] - row["nonadaptive_robust_abs_gain"]
        row.update(
            credited=credited,
            recovered=recovered,
            recovered_fraction=recovered / credited if credited > 0 else math.nan,
        )
        own = adaptive or non_adaptive
        row.update({key: own.get(key, math.nan) for key in _OWN})
        out.append(row)
    return out


def defence_leaderboard(table: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per metric, its defences ranked by the adaptive robust gain, mean over attacks (lower = better defence).

    Args:
        table: :func:`defence_table` rows.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in table:
        groups.setdefault((str(row["metric"]), str(row["defence"])), []).append(row)
    keys = ("adaptive_robust_abs_gain", "nonadaptive_robust_abs_gain", "undefended_gain", "recovered_fraction", *_OWN)
    rows = []
    for (metric, defence), members in groups.items():
        mean = _mean_of(members, keys)
        rows.append(
            {
                "metric": metric,
                "defence": defence,
                "n_attacks": len(members),
                **{k: mean.get(k, math.nan) for k in keys},
            }
        )
    out: list[dict[str, Any]] = []
    for metric in sorted({r["metric"] for r in rows}):
        mine = sorted(
            (r for r in rows if r["metric"] == metric),
            key=lambda r: (math.isnan(r["adaptive_robust_abs_gain"]), r["adaptive_robust_abs_gain"], r["defence"]),
        )
        out.extend({"rank": i + 1, **r} for i, r in enumerate(mine))
    return out


def _mean_of(rows: Sequence[Mapping[str, Any]], keys: Iterable[str] | None = None) -> dict[str, float]:
    """The mean of each numeric value over ``rows`` (a universal attack's amplitude-mean row alone, if present)."""
    means = [r for r in rows if str(r.get("amplitude", "")) == "mean"]
    use = means or list(rows)
    names = list(keys) if keys is not None else sorted({k for r in use for k in r})
    out: dict[str, float] = {}
    for key in names:
        values = [float(r[key]) for r in use if _number(r.get(key))]
        if values:
            out[key] = float(np.mean(values))
    return out
