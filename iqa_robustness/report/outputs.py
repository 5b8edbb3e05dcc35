"""A session's files and console table from its case results: what a pytest session and ``merge`` both write."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from iqa_robustness.report.table import (
    format_certify_table,
    format_defence_table,
    format_table,
    format_verdicts,
    is_certify_row,
)
from iqa_robustness.scores.defences import defence_table
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.summary import (
    BUDGETS_FILE,
    amplitude_means,
    budget_rows,
    case_summary,
    verdict_rows,
    write_per_image,
    write_summary,
)
from iqa_robustness.scores.transfer import write_transfer
from iqa_robustness.scores.verdict import (
    VERDICT_FILE,
    VERDICT_TABLE_FILE,
    VerdictPolicy,
    session_verdicts,
    verdict_table,
    write_verdicts,
)

log = logging.getLogger(__name__)

#: the session's HTML report, inside its results folder
REPORT_DIR = "report"
#: the defence table of a session with --defence, in its results folder
DEFENCES_FILE = "defences.csv"


def write_outputs(
    results: list[CaseResult],
    results_dir: Path,
    write: Callable[[str], None],
    provenance: Mapping[str, str] | None = None,
    policy: VerdictPolicy | None = None,
) -> list[dict]:
    """``summary.csv``, ``per_image/*.csv`` (MSU layout), the table and the HTML report for ``results``.

    Cases at L-inf budgets (``--eps``) add ``budgets.csv``: per metric x attack x dataset the scores
    at each budget and their areas over the budgets (:func:`~iqa_robustness.scores.summary.budget_rows`).
    Cases of defended metrics (``--defence``) add ``defences.csv``
    (:func:`~iqa_robustness.scores.defences.defence_table`).
    Certify cases (``--certify``) get a console table of their own (docs/certify.md); their scores are
    in the summary.
    Cases with ``--transfer-to`` targets add ``transfer.csv`` (per case x target the normalised absolute
    gain and R on the target) and ``transfer_per_image.csv`` (the targets' per-image scores).
    Every session writes its verdicts (docs/verdict.md): ``verdict.json`` (per metric the worst case,
    the mean, every check and flag with its evidence) and ``verdict.csv`` (one row per metric x dataset
    x budget), and prints them.

        Args:
            provenance: the session's tags for the report (see :func:`iqa_robustness.report.html.write_report`).
            policy: what *fooled* means and the checks' thresholds (the defaults of
                :class:`~iqa_robustness.scores.verdict.VerdictPolicy` when omitted).

        Returns:
            The summary rows. A report that cannot be written is a warning: the CSV files are kept.
    """
    rows = [case_summary(r) for r in results]
    rows += amplitude_means(rows)
    summary = write_summary(rows, Path(results_dir) / "summary.csv")
    per_image = write_per_image([r for r in results if r.rows], Path(results_dir) / "per_image")
    write("")
    if not all(is_certify_row(r) for r in rows):
        write("iqa-robustness: gains > 0 mean the metric was fooled; higher R means more robust")
        for line in format_table(rows):
            write(line)
    where = f"; per-image CSVs: {per_image[0].parent} ({len(per_image)} files)" if per_image else ""
    write(f"summary: {summary}{where}")
    budgets = budget_rows(rows)
    if budgets:
        path = write_summary(budgets, Path(results_dir) / BUDGETS_FILE)
        write(f"budgets: {path} (gain_auc, robustness_auc: mean over the budgets {budgets[0]['budgets']} /255)")
    defences = defence_table(rows)
    if defences:
        path = write_summary(defences, Path(results_dir) / DEFENCES_FILE)
        write(
            f"defences: {path} (adaptive vs non-adaptive robust gain |c - d(x_adv)| / range; "
            "`iqa-robustness leaderboard --defences` ranks them)"
        )
        for line in format_defence_table(defences):
            write(line)
    if any(is_certify_row(r) for r in rows):
        write(
            "certified (median smoothing; mean changes of the smoothed score in the group's min-max units: "
            "certified for any L2 perturbation within eps, achieved by the attacks within it; docs/certify.md)"
        )
        for line in format_certify_table(rows):
            write(line)
    verdicts = session_verdicts(verdict_rows(results), policy)
    if verdicts:
        path = write_verdicts(verdicts, Path(results_dir) / VERDICT_FILE)
        write_summary(verdict_table(verdicts), Path(results_dir) / VERDICT_TABLE_FILE)
        write(f"verdicts: {path} (worst case over the attacks, the mean beside it, the evaluation checks)")
        for line in format_verdicts(verdicts):
            write(line)
    transfer = write_transfer(results, Path(results_dir))
    if transfer is not None:
        write(f"transfer: {transfer[0]} (per image: {transfer[1]}); `iqa-robustness transfer {results_dir}` draws it")
    from iqa_robustness.report.html import write_report  # matplotlib: only when there is something to show

    try:
        page = write_report(results, Path(results_dir) / REPORT_DIR, dict(provenance or {}), policy=policy)
    except Exception as exc:  # the CSVs above are what matters; a broken page must not lose them
        log.warning("the HTML report was not written: %s: %s", type(exc).__name__, exc)
        write(f"report: not written ({type(exc).__name__}: {exc})")
    else:
        write(f"report: {page}")
    return rows
