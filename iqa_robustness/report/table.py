"""The compact console table a session ends with: one line per metric x attack x dataset."""

from __future__ import annotations

import math
from collections.abc import Sequence

from iqa_robustness.conventions import dataset_slug
from iqa_robustness.scores.certificate import certificate_text
from iqa_robustness.scores.verdict import MetricVerdict

TABLE_COLUMNS = (
    ("abs_gain", "abs gain"),
    ("rel_gain", "rel gain"),
    ("norm_abs_gain", "norm gain"),
    ("robustness_score", "R"),
    ("wasserstein_score", "Wasserst."),
    ("energy_distance_score", "energy"),
    ("spearman", "Spearman"),
    ("psnr", "PSNR"),
    ("seconds_per_image", "s/img"),
)


def format_table(rows: list[dict[str, object]]) -> list[str]:
    """Compact console table, one line per metric x attack x dataset (universal: amplitude mean).

    ``n`` is the images scored; a case that skipped some says how many after its numbers. Certify
    cases have a table of their own (:func:`format_certify_table`).
    """
    shown = [r for r in rows if r["amplitude"] in ("", "mean") and not is_certify_row(r)]
    columns = TABLE_COLUMNS
    if any("flicker" in r for r in shown):  # video cases: the perturbation's frame-to-frame change
        columns = (*columns, ("flicker", "flicker"))
    if any("srocc_attacked" in r for r in shown):  # subjective scores: agreement before and after
        columns = (*columns, ("srocc_clean", "SROCC"), ("srocc_attacked", "SROCC att"))
    header = f"{'metric':<16} {'attack':<16} {'dataset':<10} {'n':>4} " + " ".join(
        f"{label:>9}" for _, label in columns
    )
    lines = [header, "-" * len(header)]
    for r in sorted(shown, key=lambda r: (str(r["metric"]), str(r["attack"]), str(r["dataset"]))):
        cells = " ".join(f"{as_number(r.get(k)):>9.4g}" for k, _ in columns)
        flag = "  (random weights)" if r["weights_mode"] == "random" else ""
        flag += {"failed": "  FAILED", "error": "  ERROR", "interrupted": "  INTERRUPTED"}.get(str(r["status"]), "")
        if r.get("n_skipped"):
            flag += f"  ({r['n_skipped']} skipped)"
        dataset = dataset_slug(str(r["dataset"]))[:10]
        lines.append(f"{r['metric']!s:<16.16} {r['attack']!s:<16.16} {dataset:<10} {r['n']!s:>4} {cells}{flag}")
    return lines


def as_number(value: object) -> float:
    """A cell of the report's tables: numbers as they are; missing, empty or text (an image case's flicker) as nan."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


#: the defence table's console columns: (key, label)
DEFENCE_COLUMNS = (
    ("undefended_gain", "undef"),
    ("nonadaptive_robust_abs_gain", "robust NA"),
    ("adaptive_robust_abs_gain", "robust A"),
    ("recovered_fraction", "recovered"),
    ("nonadaptive_norm_abs_gain", "gain NA"),
    ("adaptive_norm_abs_gain", "gain A"),
    ("clean_consistency", "clean SRC"),
    ("similarity", "similar"),
    ("defence_seconds_per_image", "s/img"),
)


def format_defence_table(rows: list[dict[str, object]]) -> list[str]:
    """One line per metric x defence x attack x dataset: the undefended gain, the robust gain non-adaptive (NA)
    and adaptive (A), the share of the credited gain the adaptive attack recovers, the defended metric's own
    normalised gain in both evaluations, clean consistency, similarity and the defence's time."""
    header = f"{'metric':<14} {'defence':<14} {'attack':<14} " + " ".join(f"{label:>9}" for _, label in DEFENCE_COLUMNS)
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = " ".join(f"{as_number(r.get(k)):>9.4g}" for k, _ in DEFENCE_COLUMNS)
        lines.append(f"{r['metric']!s:<14.14} {r['defence']!s:<14.14} {r['attack']!s:<14.14} {cells}")
    return lines


#: the certify table's console columns: (key, label); changes in the group's min-max units
CERTIFY_TABLE_COLUMNS = (
    ("certified_change_scaled", "certified"),
    ("achieved_change_scaled", "achieved"),
    ("resampled_change_scaled", "resampled"),
    ("achieved_ratio_max", "max ratio"),
    ("certificate_breaches", "breaches"),
    ("smoothing_shift", "smoothing"),
    ("seconds_per_image", "s/img"),
)


def is_certify_row(row: dict[str, object]) -> bool:
    """Whether a summary row is a certify case's (it has a certified change)."""
    return "certified_change" in row


def format_certify_table(rows: list[dict[str, object]]) -> list[str]:
    """One line per certify case: the mean certified change, the mean achieved by the attacks in the same L2 ball,
    the mean change of a fresh estimate of the clean image, the largest achieved / certified ratio, the breaches
    (must be 0), how far smoothing moves the score from the metric's own, and the time per image."""
    header = f"{'metric':<16} {'case':<24} {'dataset':<10} {'n':>4} " + " ".join(
        f"{label:>9}" for _, label in CERTIFY_TABLE_COLUMNS
    )
    lines = [header, "-" * len(header)]
    for r in sorted((r for r in rows if is_certify_row(r)), key=lambda r: (str(r["metric"]), str(r["dataset"]))):
        cells = " ".join(f"{as_number(r.get(k)):>9.4g}" for k, _ in CERTIFY_TABLE_COLUMNS)
        flag = {"failed": "  FAILED"}.get(str(r["status"]), "")
        dataset = dataset_slug(str(r["dataset"]))[:10]
        lines.append(f"{r['metric']!s:<16.16} {r['attack']!s:<24.24} {dataset:<10} {r['n']!s:>4} {cells}{flag}")
    return lines


def format_verdicts(verdicts: Sequence[MetricVerdict]) -> list[str]:
    """Per metric its verdict line, then per dataset x budget the worst case (R and gain, each with its attack)
    and the mean over attacks beside it, each certificate beside what the attacks achieved, then each flag's reason."""
    lines = []
    for v in verdicts:
        lines.append(f"{v.metric}: {v.text}")
        for label, cases in (("", v.worst_case), (" non-adaptive (optimistic)", v.non_adaptive)):
            for c in cases:
                lines.append(
                    f"  {c.where}{label}: worst R {as_number(c.worst_robustness_score):.4g} "
                    f"({c.worst_robustness_attack}), largest norm gain {as_number(c.max_norm_abs_gain):.4g} "
                    f"({c.max_gain_attack}); mean over {c.n_attacks} attack(s): R "
                    f"{as_number(c.mean_robustness_score):.4g}, norm gain {as_number(c.mean_norm_abs_gain):.4g}"
                )
        for c in (v.certified or {}).get("certificates", ()):
            lines.append(f"  {c['dataset']} {certificate_text(c)}")
        lines.extend(f"  flag {f.reason}" for f in v.flags)
    return lines
