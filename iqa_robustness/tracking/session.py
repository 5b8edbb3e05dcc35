"""Writing a session: one parent run, one nested run per case, the per-image CSVs and shared artefacts."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
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
from iqa_robustness.tracking.query import child_runs
from iqa_robustness.tracking.store import (
    COUNT_METRIC,
    KIND_SESSION,
    PARENT_TAG,
    RUNNING,
    TAG_COMMIT,
    TAG_KIND,
    TAG_VALUE_LIMIT,
    TrackingError,
    bounded_requests,
    cut_text,
    ensure_experiment,
    log_batch,
    log_history,
    mlflow_key,
    no_url_printing,
    open_client,
    session_complete,
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


#: a certify case's scores the session run gets too, per metric and dataset (docs/certify.md)
CERTIFY_SESSION_SCORES = ("certified_change_scaled", "achieved_change_scaled", "certificate_breaches")


def certify_metrics(results: Sequence[CaseResult]) -> dict[str, float]:
    """Certify cases' mean certified and achieved changes as parent-run metrics: ``<score>/<metric>/<dataset>``.

    A session with several certify specs on one metric and dataset names each by its attack label
    (``<score>/<metric>/<dataset>/<spec>``); non-finite values are left out.
    """
    certified = [r for r in results if "certified_change" in r.scores]
    labels = {(r.metric, r.dataset) for r in certified}
    several = len(labels) < len(certified)
    metrics: dict[str, float] = {}
    for r in certified:
        where = f"{r.metric}/{dataset_slug(r.dataset)}" + (f"/{r.attack}" if several else "")
        for score in CERTIFY_SESSION_SCORES:
            value = float(r.scores.get(score, float("nan")))
            if value == value and abs(value) != float("inf"):
                metrics[mlflow_key(f"{score}/{where}")] = value
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

    :meth:`start` creates the parent run (status RUNNING), or :meth:`attach` takes over one logged
    earlier; :meth:`log_case` adds one nested case run (a case logged once is not logged again);
    :meth:`finish` logs what is still missing, the counts and the summary CSV, and ends the parent
    FINISHED, FAILED or KILLED. Only one process should write a session (the pytest controller).

    Every call is bounded (:func:`~iqa_robustness.tracking.store.bounded_requests`). The first one
    that fails logs one warning, raises :class:`TrackingError`, and takes the logger offline: later
    :meth:`log_case` calls make no call at all (the cases stay in ``results_dir``), and
    :meth:`finish` makes one short attempt (a server gets
    :data:`~iqa_robustness.tracking.store.PROBE_SECONDS` to answer): if the store is back, what
    it missed goes to the same parent run; if not, :class:`TrackingError` names ``iqa-robustness
    upload``. A server outage so costs a session seconds, not MLflow's minutes of retries per call
    (docs/tracking.md). Nothing in ``results_dir`` is changed.

    Args:
        uri: tracking URI (see :func:`iqa_robustness.conventions.default_tracking_uri`).
        experiment: MLflow experiment, created when missing.
        tags: session tags (see :func:`session_tags`).
        results_dir: the session's results folder: its ``summary.csv`` becomes a parent artefact,
            and error messages point at it.
        kind: the parent's ``run_kind`` tag: ``session``, or ``shard`` for one shard of a grid
            (``compare`` and ``leaderboard`` read sessions only; a merged session holds the shards).

    Attributes:
        offline: why the store was given up on (empty while it answers).
        missed: the first failure of a session whose store answered again at its end (empty otherwise).
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
        self.offline = ""
        self.missed = ""
        self.ended = False
        self._failure = ""
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

    def attach(self, run_id: str) -> Run | None:
        """Take over the session run ``run_id`` (logged while the session ran), to complete it.

        Its ended case runs count as logged; a case run left RUNNING (its logging was cut short) is
        deleted, to be logged again whole.

        Returns:
            The run as the store has it, or None when the store has no such run (another store,
            or deleted): :meth:`start` then makes a new one.
        """
        with self._guard():
            self._client = open_client(self.uri)
            try:
                run = self._client.get_run(run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                return None
            if run.info.lifecycle_stage == "deleted":
                return None
            self.run_id, self.experiment_id = run_id, run.info.experiment_id
            self.experiment = self._client.get_experiment(self.experiment_id).name
            self._adopt_case_runs()
        return run

    def log_case(self, result: CaseResult) -> str | None:
        """Log one finished case as a nested run (once per case id); returns its run id (None while offline)."""
        if result.case_id in self.logged:
            return self.logged[result.case_id]
        if self.offline:
            return None
        if self.run_id is None:
            self.start()
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
        interrupted: Sequence[str] = (),
        report: Path | None = None,
        ended: _dt.datetime | None = None,
        policy: VerdictPolicy | None = None,
    ) -> str:
        """Log the cases not logged yet, the counts, the summary and the verdicts, and end the parent with ``status``.

        The verdicts (docs/verdict.md) go on the parent run as metrics (per metric x dataset x budget the
        worst R and the largest normalised gain, the mean over attacks), tags (the verdict, the flags, the
        checks) and ``verdict.json``.

        Offline, this first makes the one attempt at the store (see the class docstring).

        Args:
            results: every finished case of the session (an interrupted one is not a case run).
            status: ``FINISHED``, ``FAILED`` or ``KILLED``.
            tags: more session tags known only at the end (devices, weights modes).
            interrupted: ids of cases that were running when the session was stopped.
            report: the folder of the session's HTML report, logged under ``report/``.
            ended: when the session ended (default: now), the parent's end time.
            policy: the verdicts' thresholds; by default those the results folder's ``verdict.json`` was
                written with (``--fooled-gain``), else the defaults.
        """
        try:
            if self.offline:
                self._reconnect()
            if self.run_id is None:
                self.start()
            for result in results:
                self.log_case(result)
            with self._guard():
                counts = {COUNT_METRIC: len(results), "n_interrupted": len(interrupted)}
                for name in ("passed", "failed", "error", "skipped"):
                    counts[f"n_{name}"] = sum(r.status == name for r in results)
                end_tags = {mlflow_key(k): cut_text(v, TAG_VALUE_LIMIT) for k, v in (tags or {}).items()}
                if interrupted:
                    end_tags["interrupted_cases"] = cut_text(", ".join(interrupted), TAG_VALUE_LIMIT)
                verdicts = session_verdicts_of(results, policy or saved_policy(self.results_dir))
                end_tags.update(verdict_tags(verdicts))
                metrics = {**counts, **budget_metrics(results), **certify_metrics(results), **verdict_metrics(verdicts)}
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
                end_time = int(ended.timestamp() * 1000) if ended is not None else None
                self._client.set_terminated(self.run_id, status, end_time=end_time)
            self.ended = True
        except BaseException:
            if not self.offline:  # not the store's failure (a stop, a bug): it still answers
                self.close(FAILED if status == FINISHED else status)
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

    def close(self, status: str = FAILED) -> None:
        """End a parent run that :meth:`finish` did not end (the session broke off), without its counts.

        Without them the run reads as partial: no ``latest`` names it, and ``iqa-robustness upload``
        completes it. Nothing is called when it has ended, was never made, or the store is offline.
        """
        if self.run_id is None or self.ended or self.offline:
            return
        with contextlib.suppress(TrackingError), self._guard():
            self._client.set_terminated(self.run_id, status)
            self.ended = True

    # -- helpers --------------------------------------------------------------------------
    @property
    def where(self) -> str:
        if self.uri.startswith("http") and self.run_id:
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return self.uri

    def _adopt_case_runs(self) -> None:
        for run in child_runs(self._client, self.experiment_id, self.run_id):
            case_id, run_id = run.data.tags.get("case_id"), run.info.run_id
            if run.info.status != RUNNING and case_id and self.logged.setdefault(case_id, run_id) == run_id:
                continue
            self._client.delete_run(run_id)  # cut short, or a second run of a case

    def _reconnect(self) -> None:
        """The one attempt of an offline logger: the store answers again, and the parent is taken up again."""
        with self._guard(f"{self.uri} failed during the session ({self._failure}) and did not answer again at its end"):
            self._client = open_client(self.uri)
            if self.run_id is not None:
                self._adopt_case_runs()
        self.offline, self.missed = "", self._failure
        log.info("MLflow: %s answers again; logging what it missed", self.uri)

    @contextlib.contextmanager
    def _guard(self, context: str = "") -> Iterator[None]:
        """Bounded calls; a failure takes the logger offline and becomes a :class:`TrackingError` saying what to do.

        Only the first failure is logged (a warning); ``context`` prefixes a later one's message.
        """
        results_dir = self.results_dir
        kept = f"The results are kept in {results_dir}" if results_dir else "The results are not lost"
        later = f"; log them later with `iqa-robustness upload {results_dir}`" if results_dir else ""
        try:
            with no_url_printing(), bounded_requests():
                yield
        except Exception as exc:  # whatever the store raises (HTTP, SQL, disk), the same advice
            # the failure itself, for the end's message; its advice is given once, in the message
            failure = str(exc).split(". ")[0] if isinstance(exc, TrackingError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TrackingError):
                cause = str(exc)
            else:
                cause = (
                    f"MLflow logging to {self.uri} failed: {failure}. Check that the store is "
                    "reachable and writable (pytest --mlflow-uri, --tracking-uri, MLFLOW_TRACKING_URI)"
                )
            message = f"{f'{context}: ' if context else ''}{cause}. {kept}{later}."
            if not self.offline:
                log.warning("MLflow is off until the session ends (one more attempt then): %s", message)
                self._failure = failure
            self.offline = message
            raise TrackingError(message) from exc


def log_session(
    results: list[CaseResult],
    *,
    uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    tags: Mapping[str, str] | None = None,
    results_dir: str | Path | None = None,
    kind: str = KIND_SESSION,
    run_id: str | None = None,
    status: str | None = None,
    ended: _dt.datetime | None = None,
    report: Path | None = None,
) -> str:
    """Log a whole session at once: a parent run with the session tags and summary CSV, one nested run per case.

    Nothing in ``results_dir`` is changed or removed, so a failure here loses only the MLflow copy.
    See :class:`SessionLogger` (the same, case by case, while a session runs) for the arguments.

    Args:
        results: the session's cases; interrupted ones are named on the parent, not logged as runs.
        run_id: the parent run the session made while it ran (its record's ``mlflow_run_id``): when
            the store still has it, it is completed (its missing case runs, counts, end status and
            end time; its start time stays) instead of a new run being made. A whole one is left as it is.
        status: how the session ended (default: :func:`session_status` of ``results``).
        ended: when the session ended (default: now).
        report: the session's HTML report folder.

    Returns:
        The parent run id: ``run_id`` when it was completed, else a new run's.

    Raises:
        TrackingError: the store is unreachable or refused the data; the message says what to do.
    """
    logger = SessionLogger(uri, experiment, tags, results_dir, kind=kind)
    if run_id:
        run = logger.attach(run_id)
        if run is not None and session_complete(run):
            log.info("MLflow: session run %s already holds its session; nothing logged", run_id)
            return run_id
        if run is not None:
            log.info("MLflow: completing session run %s (%d case runs logged before)", run_id, len(logger.logged))
    finished = [r for r in results if r.status != "interrupted"]
    interrupted = [r.case_id for r in results if r.status == "interrupted"]
    return logger.finish(
        finished,
        status or session_status(results),
        tags=result_tags(finished) if run_id else None,
        interrupted=interrupted,
        report=report,
        ended=ended,
    )
