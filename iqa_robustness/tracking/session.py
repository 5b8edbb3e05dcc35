"""Writing a session: one parent run, one nested run per case, the per-image CSVs and shared artefacts."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient

from iqa_robustness.conventions import DEFAULT_EXPERIMENT, dataset_slug
from iqa_robustness.scores.msu_csv import write_msu_csv
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.summary import (
    BUDGET_SCORES,
    BUDGETS_FILE,
    amplitude_means,
    budget_rows,
    case_summary,
    verdict_rows,
    write_summary,
)
from iqa_robustness.scores.verdict import VERDICT_FILE, MetricVerdict, VerdictPolicy, session_verdicts, write_verdicts
from iqa_robustness.tracking.cases import captioned_pairs, case_metrics, case_params, case_tags, plot_case
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
    log_history,
    mlflow_key,
    no_url_printing,
    open_client,
)
from iqa_robustness.tracking.verdicts import saved_policy, verdict_metrics, verdict_tags

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
    for name, curve in result.curves.items():
        log_history(client, run_id, mlflow_key(name), curve)
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
    for pair in captioned_pairs(result, folder / "pairs"):
        client.log_artifact(run_id, str(pair), artifact_path="pairs")
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


def budget_metrics(results: Sequence[CaseResult]) -> dict[str, float]:
    """The areas over L-inf budgets (``--eps``) as parent-run metrics: ``gain_auc/<metric>/<attack>/<dataset>``.

    A universal attack's key ends in ``/on-<train set>``; non-finite areas are left out.
    """
    rows = [case_summary(r) for r in results]
    metrics: dict[str, float] = {}
    for row in budget_rows(rows + amplitude_means(rows)):
        where = f"{row['metric']}/{row['attack']}/{dataset_slug(str(row['dataset']))}"
        if row["train_dataset"]:
            where += f"/on-{dataset_slug(str(row['train_dataset']))}"
        for area in BUDGET_SCORES.values():
            value = float(row[area])  # type: ignore[arg-type]
            if value == value and abs(value) != float("inf"):
                metrics[mlflow_key(f"{area}/{where}")] = value
    return metrics


def session_verdicts_of(results: Sequence[CaseResult], policy: VerdictPolicy | None = None) -> list[MetricVerdict]:
    """The verdicts of a session's finished cases (docs/verdict.md)."""
    return session_verdicts(verdict_rows(results), policy)


def _verdict_json(verdicts: Sequence[MetricVerdict], results_dir: Path | None, tmp: Path) -> Path:
    """The session's ``verdict.json``: the one in the results folder, else written from the verdicts."""
    if results_dir is not None and (results_dir / VERDICT_FILE).is_file():
        return results_dir / VERDICT_FILE
    return write_verdicts(verdicts, tmp / VERDICT_FILE)


def _summary_csv(results: list[CaseResult], results_dir: Path | None, tmp: Path) -> Path:
    """The session's summary CSV: the one in the results folder, else written from the results."""
    if results_dir is not None and (results_dir / "summary.csv").is_file():
        return results_dir / "summary.csv"
    return write_summary([case_summary(r) for r in results], tmp / "summary.csv")


#: how a session ended, as MLflow run statuses
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


def session_status(results: Sequence[CaseResult], *, stopped: bool = False, tests_failed: bool = False) -> str:
    """How a session ended: KILLED when it was stopped, FAILED when a case failed, raised or was
    interrupted (or pytest reported failures), else FINISHED."""
    if stopped:
        return KILLED
    if tests_failed or any(r.status in ("failed", "error", "interrupted") for r in results):
        return FAILED
    return FINISHED


def result_tags(results: Sequence[CaseResult]) -> dict[str, str]:
    """The ``device`` and ``weights_mode`` tags the finished cases ran with (comma lists), known at the end."""
    devices = sorted({str(r.params.get("device", "")) for r in results if r.params.get("device")})
    modes = sorted({r.weights_mode for r in results if r.status != "interrupted"})
    return {k: ",".join(v) for k, v in (("device", devices), ("weights_mode", modes)) if v}


class SessionLogger:
    """One session in MLflow as it happens: the parent run at the start, each case's run as it finishes.

    :meth:`start` creates the parent run (status RUNNING); :meth:`log_case` adds one nested case
    run (a case logged once is not logged again); :meth:`finish` logs what is still missing, the
    counts and the summary CSV, and ends the parent FINISHED, FAILED or KILLED. Only one process
    should write a session (the pytest controller), so a SQLite store has one writer.

    Every method raises :class:`TrackingError` with advice on what to do; nothing in
    ``results_dir`` is changed, so a failure loses only the MLflow copy.

    Args:
        uri: tracking URI (see :func:`iqa_robustness.conventions.default_tracking_uri`).
        experiment: MLflow experiment, created when missing.
        tags: session tags (see :func:`session_tags`).
        results_dir: the session's results folder: its ``summary.csv`` becomes a parent artefact,
            and error messages point at it.
        kind: the parent's ``run_kind`` tag: ``session``, or ``shard`` for one shard of a grid
            (``compare`` and ``leaderboard`` read sessions only; a merged session holds the shards).
    """

    def __init__(
        self,
        uri: str,
        experiment: str = DEFAULT_EXPERIMENT,
        tags: Mapping[str, str] | None = None,
        results_dir: str | Path | None = None,
        kind: str = KIND_SESSION,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.tags = dict(tags or {})
        self.results_dir = Path(results_dir) if results_dir is not None else None
        self.kind = kind
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.logged: dict[str, str] = {}  # case id -> its run id
        self._client: MlflowClient | None = None
        self._uploaded: dict[Path, str] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="iqa-robustness-mlflow-")

    # -- the three steps ------------------------------------------------------------------
    def start(self) -> str:
        """Create the parent run (RUNNING); returns its id."""
        with self._guard():
            self._client = open_client(self.uri)
            self.experiment_id = ensure_experiment(self._client, self.experiment, self.uri)
            start = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
            commit = self.tags.get(TAG_COMMIT, "")
            run_name = f"session-{commit[:8]}-{start}" if commit else f"session-{start}"
            run_tags = {mlflow_key(k): cut_text(v, TAG_VALUE_LIMIT) for k, v in self.tags.items()}
            run_tags[TAG_KIND] = self.kind
            self.run_id = self._client.create_run(self.experiment_id, run_name=run_name, tags=run_tags).info.run_id
        log.info("MLflow: session run %s started at %s", self.run_id, self.where)
        return self.run_id

    def log_case(self, result: CaseResult) -> str:
        """Log one finished case as a nested run (once per case id); returns the case run's id."""
        if self.run_id is None:
            self.start()
        if result.case_id in self.logged:
            return self.logged[result.case_id]
        with self._guard():
            run_id = _log_case(
                self._client, self.experiment_id, self.run_id, result, Path(self._tmp.name), self._uploaded
            )
        self.logged[result.case_id] = run_id
        return run_id

    def finish(
        self,
        results: list[CaseResult],
        status: str = FINISHED,
        tags: Mapping[str, str] | None = None,
        interrupted: list[str] = (),
        report: Path | None = None,
        policy: VerdictPolicy | None = None,
    ) -> str:
        """Log the cases not logged yet, the counts, the summary and the verdicts, and end the parent with ``status``.

        The verdicts (docs/verdict.md) go on the parent run as metrics (per metric x dataset x budget the
        worst R and the largest normalised gain, the mean over attacks), tags (the verdict, the flags, the
        checks) and ``verdict.json``.

        Args:
            results: every finished case of the session (an interrupted one is not a case run).
            status: ``FINISHED``, ``FAILED`` or ``KILLED``.
            tags: more session tags known only at the end (devices, weights modes).
            interrupted: ids of cases that were running when the session was stopped.
            report: the folder of the session's HTML report, logged under ``report/``.
            policy: the verdicts' thresholds; by default those the results folder's ``verdict.json`` was
                written with (``--fooled-gain``), else the defaults.
        """
        if self.run_id is None:
            self.start()
        try:
            for result in results:
                self.log_case(result)
            with self._guard():
                counts = {"n_cases": len(results), "n_interrupted": len(interrupted)}
                for name in ("passed", "failed", "error", "skipped"):
                    counts[f"n_{name}"] = sum(r.status == name for r in results)
                end_tags = {mlflow_key(k): cut_text(v, TAG_VALUE_LIMIT) for k, v in (tags or {}).items()}
                if interrupted:
                    end_tags["interrupted_cases"] = cut_text(", ".join(interrupted), TAG_VALUE_LIMIT)
                verdicts = session_verdicts_of(results, policy or saved_policy(self.results_dir))
                end_tags.update(verdict_tags(verdicts))
                metrics = {**counts, **budget_metrics(results), **verdict_metrics(verdicts)}
                log_batch(self._client, self.run_id, metrics=metrics, tags=end_tags)
                if verdicts:
                    tmp = Path(self._tmp.name)
                    self._client.log_artifact(self.run_id, str(_verdict_json(verdicts, self.results_dir, tmp)))
                self._client.log_artifact(
                    self.run_id, str(_summary_csv(results, self.results_dir, Path(self._tmp.name)))
                )
                budgets = self.results_dir / BUDGETS_FILE if self.results_dir is not None else None
                if budgets is not None and budgets.is_file():
                    self._client.log_artifact(self.run_id, str(budgets))
                if report is not None and Path(report).is_dir():
                    self._client.log_artifacts(self.run_id, str(report), artifact_path="report")
                self._client.set_terminated(self.run_id, status)
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.set_terminated(self.run_id, FAILED if status == FINISHED else status)
            raise
        finally:
            self._tmp.cleanup()
        log.info(
            "MLflow: %d case runs under session run %s (experiment %r), ended %s: %s",
            len(self.logged),
            self.run_id,
            self.experiment,
            status,
            self.where,
        )
        return self.run_id

    # -- helpers --------------------------------------------------------------------------
    @property
    def where(self) -> str:
        if self.uri.startswith("http") and self.run_id:
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return self.uri

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Any failure of the store becomes a :class:`TrackingError` that says what to do."""
        results_dir = self.results_dir
        kept = f"The results are kept in {results_dir}" if results_dir else "The results are not lost"
        later = f"; log them later with `iqa-robustness upload {results_dir}`" if results_dir else ""
        try:
            with no_url_printing():
                yield
        except TrackingError as exc:
            message = f"{exc}. {kept}{later}."
            log.error("MLflow logging failed: %s", message)
            raise TrackingError(message) from exc
        except Exception as exc:  # whatever the store raises (HTTP, SQL, disk), the same advice
            message = (
                f"MLflow logging to {self.uri} failed: {type(exc).__name__}: {exc}. Check that the store is "
                "reachable and writable (pytest --mlflow-uri, --tracking-uri, MLFLOW_TRACKING_URI). "
                f"{kept}{later}."
            )
            log.error("%s", message)
            raise TrackingError(message) from exc


def log_session(
    results: list[CaseResult],
    *,
    uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    tags: Mapping[str, str] | None = None,
    results_dir: str | Path | None = None,
    kind: str = KIND_SESSION,
) -> str:
    """Log a whole session at once: a parent run with the session tags and summary CSV, one nested run per case.

    Nothing in ``results_dir`` is changed or removed, so a failure here loses only the MLflow copy.
    The parent ends FAILED when a case failed or raised, else FINISHED. See :class:`SessionLogger`
    (the same, case by case, while a session runs) for the arguments.

    Returns:
        The parent run id.

    Raises:
        TrackingError: the store is unreachable or refused the data; the message says what to do.
    """
    logger = SessionLogger(uri, experiment, tags, results_dir, kind=kind)
    logger.start()
    return logger.finish(results, session_status(results))
