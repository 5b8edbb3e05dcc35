"""End of a session, in the pytest controller only: per-image CSVs, summary, console table, MLflow.

Runs from the per-case JSON files the workers wrote, so results already computed survive a tracking
server that is down.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from iqa_robustness.report.table import format_table
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.summary import amplitude_means, case_summary, load_cases, write_per_image, write_summary


def finish_session(
    cases_dir: Path,
    results_dir: Path,
    write: Callable[[str], None],
    mlflow_uri: str | None,
    experiment: str,
    project_root: Path,
) -> list[CaseResult]:
    """Write every output of a session; ``mlflow_uri`` None disables MLflow, "" means the default store."""
    results = load_cases(cases_dir)
    if not results:
        return results
    rows = [case_summary(r) for r in results]
    rows += amplitude_means(rows)
    summary = write_summary(rows, results_dir / "summary.csv")
    per_image = write_per_image(results, results_dir / "per_image")
    write("")
    write("iqa-robustness: gains > 0 mean the metric was fooled; higher R means more robust")
    for line in format_table(rows):
        write(line)
    write(f"summary: {summary}; per-image CSVs: {per_image[0].parent} ({len(per_image)} files)")
    if mlflow_uri is not None:
        from iqa_robustness.conventions import default_tracking_uri
        from iqa_robustness.tracking import TrackingError, log_session, session_tags

        uri = mlflow_uri or default_tracking_uri(project_root)
        modes = sorted({r.weights_mode for r in results})
        devices = sorted({str(r.params.get("device", "")) for r in results})
        try:
            run_id = log_session(
                results,
                uri=uri,
                experiment=experiment,
                tags=session_tags(device=",".join(devices), weights_mode=",".join(modes)),
                results_dir=results_dir,
            )
            write(f"MLflow: experiment {experiment!r}, parent run {run_id} at {uri}")
        except TrackingError as exc:  # the results on disk are complete either way
            write(f"MLflow logging to {uri} failed: {exc}; results are kept in {results_dir}")
    return results
