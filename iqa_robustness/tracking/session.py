"""Writing a session: one parent run, one nested run per case, the per-image CSVs and shared artefacts."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mlflow.tracking import MlflowClient

from iqa_robustness.conventions import DEFAULT_EXPERIMENT
from iqa_robustness.scores.msu_csv import write_msu_csv
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.summary import case_summary, write_summary
from iqa_robustness.tracking.cases import case_metrics, case_params, case_tags, plot_case
from iqa_robustness.tracking.store import (
    KIND_SESSION,
    PARENT_TAG,
    TAG_COMMIT,
    TAG_KIND,
    TAG_VALUE_LIMIT,
    TrackingError,
    cut_text,
    ensure_experiment,
    log_batch,
    mlflow_key,
    no_url_printing,
    open_client,
)

log = logging.getLogger(__name__)


SHARED_ARTIFACT_BYTES = 20 * 2**20


def _log_case(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    result: CaseResult,
    tmp: Path,
    uploaded: dict[Path, str] | None = None,
) -> str:
    run = client.create_run(experiment_id, run_name=result.case_id, tags={PARENT_TAG: parent_id, **case_tags(result)})
    run_id = run.info.run_id
    log_batch(client, run_id, metrics=case_metrics(result), params=case_params(result))
    folder = tmp / re.sub(r"[^\w.-]+", "_", result.case_id)
    if result.rows:
        try:
            table = write_msu_csv(folder / f"{folder.name}.csv", result.rows)
        except ValueError as exc:  # malformed rows: the scores are still worth logging
            log.warning("case %s: per-image CSV not logged: %s", result.case_id, exc)
        else:
            client.log_artifact(run_id, str(table))
    plot = plot_case(result, folder / "plots" / "clear_vs_attacked.png")
    if plot is not None:
        client.log_artifact(run_id, str(plot), artifact_path="plots")
    for name, path in result.artifacts.items():
        p = Path(path)
        if p.is_dir():
            client.log_artifacts(run_id, str(p), artifact_path=f"files/{mlflow_key(name)}")
        elif p.is_file():
            first = uploaded.get(p.resolve()) if uploaded is not None else None
            if first is not None:
                client.set_tag(run_id, f"artifact.{mlflow_key(name)}", f"runs:/{first}/files/{p.name}")
                continue
            client.log_artifact(run_id, str(p), artifact_path="files")
            if uploaded is not None and p.stat().st_size > SHARED_ARTIFACT_BYTES:
                uploaded[p.resolve()] = run_id
        else:
            log.warning("case %s: artefact %s not found at %s; not logged", result.case_id, name, p)
    client.set_terminated(run_id, "FAILED" if result.status in ("failed", "error") else "FINISHED")
    return run_id


def _summary_csv(results: list[CaseResult], results_dir: Path | None, tmp: Path) -> Path:
    """The session's summary CSV: the one in the results folder, else written from the results."""
    if results_dir is not None and (results_dir / "summary.csv").is_file():
        return results_dir / "summary.csv"
    return write_summary([case_summary(r) for r in results], tmp / "summary.csv")


def log_session(
    results: list[CaseResult],
    *,
    uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    tags: Mapping[str, str] | None = None,
    results_dir: str | Path | None = None,
) -> str:
    """Log a session: a parent run with the session tags and summary CSV, one nested run per case.

    Nothing in ``results_dir`` is changed or removed, so a failure here loses only the MLflow copy.

    Args:
        results: the session's case results.
        uri: tracking URI (see :func:`iqa_robustness.conventions.default_tracking_uri`).
        experiment: MLflow experiment, created when missing.
        tags: session tags (see :func:`session_tags`).
        results_dir: the session's results folder: its ``summary.csv`` becomes a parent artefact
            (written from ``results`` when absent), and error messages point at it.

    Returns:
        The parent run id.

    Raises:
        TrackingError: the store is unreachable or refused the data; the message says what to do.
    """
    results_dir = Path(results_dir) if results_dir is not None else None
    kept = f"The results are kept in {results_dir}" if results_dir else "The results are not lost"
    later = f"; log them later with `iqa-robustness upload {results_dir}`" if results_dir else ""
    try:
        client = open_client(uri)
        experiment_id = ensure_experiment(client, experiment, uri)
        session = dict(tags or {})
        start = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        commit = session.get(TAG_COMMIT, "")
        run_name = f"session-{commit[:8]}-{start}" if commit else f"session-{start}"
        session_run_tags = {mlflow_key(k): cut_text(v, TAG_VALUE_LIMIT) for k, v in session.items()}
        session_run_tags[TAG_KIND] = KIND_SESSION
        with no_url_printing(), tempfile.TemporaryDirectory(prefix="iqa-robustness-mlflow-") as tmp:
            parent = client.create_run(experiment_id, run_name=run_name, tags=session_run_tags)
            parent_id = parent.info.run_id
            uploaded: dict[Path, str] = {}
            try:
                for result in results:
                    _log_case(client, experiment_id, parent_id, result, Path(tmp), uploaded)
                counts = {"n_cases": len(results)}
                for status in ("passed", "failed", "error", "skipped"):
                    counts[f"n_{status}"] = sum(r.status == status for r in results)
                log_batch(client, parent_id, metrics=counts)
                client.log_artifact(parent_id, str(_summary_csv(results, results_dir, Path(tmp))))
            except BaseException:
                with contextlib.suppress(Exception):
                    client.set_terminated(parent_id, "FAILED")
                raise
            client.set_terminated(parent_id, "FINISHED")
    except TrackingError as exc:
        message = f"{exc}. {kept}{later}."
        log.error("MLflow logging failed: %s", message)
        raise TrackingError(message) from exc
    except Exception as exc:  # whatever the store raises (HTTP, SQL, disk), the same advice
        message = (
            f"MLflow logging to {uri} failed: {type(exc).__name__}: {exc}. Check that the store is reachable "
            f"and writable (pytest --mlflow-uri, --tracking-uri, MLFLOW_TRACKING_URI). {kept}{later}."
        )
        log.error("%s", message)
        raise TrackingError(message) from exc
    where = f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{parent_id}" if uri.startswith("http") else uri
    log.info(
        "MLflow: %d case runs under session run %s (experiment %r): %s",
        len(results),
        parent_id,
        experiment,
        where,
    )
    return parent_id
