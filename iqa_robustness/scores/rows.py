"""Per-image rows of a case: scored and skipped rows, and the group scores computed from them.

A row is one image (or clip) in the MSU per-image layout (:mod:`iqa_robustness.scores.msu_csv`).
An input the metric cannot take (too small for it, unreadable, a NaN or infinite clean score) is
kept as a *skipped* row: the same columns, ``nan`` where nothing was measured, and a non-empty
``skip_reason``. Scores are computed on the scored rows only (:func:`score_rows`), so one bad image
costs its own row, not the case.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from iqa_robustness.scores.formulas import group_scores, improved_fraction

#: The column that marks a skipped row and says why (absent or empty on a scored row).
SKIP_REASON = "skip_reason"
#: How much of the skipped list a one-line summary keeps (summary.csv, tags).
SKIPPED_TEXT_LIMIT = 500


class NothingToScoreError(ValueError):
    """Every input of a case was skipped: there is no row left to score."""


def is_skipped(row: Mapping[str, Any]) -> bool:
    """Whether the row is a skipped input (a non-empty ``skip_reason``)."""
    return bool(row.get(SKIP_REASON))


def scored_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in rows if not is_skipped(row)]


def skipped_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in rows if is_skipped(row)]


def skipped_row(
    image_name: str,
    test_dataset: str,
    reason: str,
    *,
    clear: float = math.nan,
    train_dataset: str | None = None,
    amplitude: float | None = None,
    clips: bool = False,
) -> dict[str, Any]:
    """The row of an input that was not scored: the identity columns, ``nan`` measurements, the reason.

    Args:
        image_name, test_dataset: as on a scored row.
        reason: why the input was skipped (non-empty), e.g. ``unreadable: OSError: ...``.
        clear: the clean score when it was computed (a NaN or infinite one is a reason to skip).
        train_dataset, amplitude: the universal case's, when it is one.
        clips: add the clip columns (``flicker``, ``n_frames``).
    """
    if not reason:
        raise ValueError(f"{image_name}: a skipped row needs a reason")
    row: dict[str, Any] = {"image_name": image_name, "test_dataset": test_dataset}
    if train_dataset is not None:
        row["train_dataset"] = train_dataset
    row |= {"clear": clear, "attacked": math.nan}
    if amplitude is not None:
        row["amplitude"] = amplitude
    row |= {"rel_gain": math.nan, "psnr": math.nan, "ssim": math.nan, "mse": math.nan}
    if clips:
        row |= {"flicker": math.nan, "n_frames": 0}
    row[SKIP_REASON] = reason
    return row


def skipped_text(rows: Iterable[Mapping[str, Any]], limit: int = SKIPPED_TEXT_LIMIT) -> str:
    """``name: reason; name: reason`` of the skipped rows, cut to ``limit`` characters (``...`` at the end)."""
    text = "; ".join(f"{row['image_name']}: {row[SKIP_REASON]}" for row in skipped_rows(rows))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nothing_to_score(rows: Sequence[Mapping[str, Any]], what: str = "") -> NothingToScoreError:
    """The error for rows without a scored one, naming every skipped input and its reason."""
    skipped = skipped_rows(rows)
    where = f"{what}: " if what else ""
    if not skipped:
        return NothingToScoreError(f"{where}no image to score: the dataset gave no rows")
    listed = "\n".join(f"  {row['image_name']}: {row[SKIP_REASON]}" for row in skipped)
    return NothingToScoreError(
        f"{where}no image left to score: all {len(skipped)} were skipped:\n{listed}\n"
        "Replace or remove these images, or resize them (--image-size shrinks, never enlarges)."
    )


def score_rows(rows: Sequence[Mapping[str, Any]], lower_better: bool, *, clips: bool = False) -> dict[str, float]:
    """Group scores of a case's scored rows (skipped rows are left out).

    Args:
        rows: per-image (or per-clip) rows with raw ``clear`` and ``attacked`` values.
        lower_better: the metric's orientation.
        clips: rows are clips: add the mean ``flicker``.

    Returns:
        :func:`~iqa_robustness.scores.formulas.group_scores` of the scored rows (``n`` = their
        count; with their ``mos`` column when they have one), the share of images the attack raised
        (``improved_fraction``, :func:`~iqa_robustness.scores.formulas.improved_fraction`), plus
        ``flicker`` for clips.

    Raises:
        NothingToScoreError: no scored row, naming every skipped one and why.
    """
    scored = scored_rows(rows)
    if not scored:
        raise nothing_to_score(rows)
    clear = np.array([r["clear"] for r in scored], dtype=np.float64)
    attacked = np.array([r["attacked"] for r in scored], dtype=np.float64)
    mos = None
    if any("mos" in r for r in scored):
        mos = np.array([float(r.get("mos", math.nan)) for r in scored], dtype=np.float64)
    scores = group_scores(clear, attacked, lower_better, mos)
    scores["improved_fraction"] = improved_fraction(clear, attacked, lower_better)
    if clips:
        scores["flicker"] = float(np.mean([r["flicker"] for r in scored]))
    return scores
