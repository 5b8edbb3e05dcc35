"""A session's files and console table from its case results: what a pytest session and ``merge`` both write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from iqa_robustness.report.table import format_table
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.summary import amplitude_means, case_summary, write_per_image, write_summary


def write_outputs(results: list[CaseResult], results_dir: Path, write: Callable[[str], None]) -> list[dict]:
    """``summary.csv``, ``per_image/*.csv`` (MSU layout) and the table for ``results``; returns the summary rows."""
    rows = [case_summary(r) for r in results]
    rows += amplitude_means(rows)
    summary = write_summary(rows, Path(results_dir) / "summary.csv")
    per_image = write_per_image([r for r in results if r.rows], Path(results_dir) / "per_image")
    write("")
    write("iqa-robustness: gains > 0 mean the metric was fooled; higher R means more robust")
    for line in format_table(rows):
        write(line)
    where = f"; per-image CSVs: {per_image[0].parent} ({len(per_image)} files)" if per_image else ""
    write(f"summary: {summary}{where}")
    return rows
