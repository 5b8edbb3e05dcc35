"""MLflow tracking of robustness sessions: one parent run per pytest session, one nested run per case.

The logged numbers are the scores of the MSU Metrics Robustness Benchmark (Antsiferova et al.,
"Comparing the robustness of modern no-reference image- and video-quality metrics to adversarial
attacks", AAAI 2024): every case run holds its group scores, the per-image CSV in the benchmark's
layout, the mean image similarity and the attack time, so sessions can be compared commit by commit.

Only the pytest controller process writes the store, at the end of a session, from the
:class:`~iqa_robustness.runner.case.CaseResult` files the workers left in the results folder: two processes
never create a fresh SQLite store at the same moment, and a store that cannot be reached costs the
MLflow copy only, never the results on disk.

Writing: :func:`session_tags`, :func:`log_session`.
Reading (for ``iqa-robustness compare`` and ``leaderboard``): :func:`open_client`,
:func:`find_session`, :func:`load_session_cases`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from iqa_robustness.conventions import DEFAULT_EXPERIMENT
from iqa_robustness.runner.case import CaseResult
from iqa_robustness.scores.msu_csv import write_msu_csv

log = logging.getLogger(__name__)


# Run roles, so that sessions can be found without scanning every case run.
TAG_KIND = "run_kind"
KIND_SESSION = "session"
KIND_CASE = "case"
TAG_COMMIT = "git_commit"
TAG_BRANCH = "git_branch"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"

# Limits every MLflow server accepts (newer servers allow 6000/8000): a longer value is cut, never refused.
PARAM_VALUE_LIMIT = 500
TAG_VALUE_LIMIT = 5000
KEY_LIMIT = 250
_BATCH_PARAMS_TAGS = 100
_BATCH_METRICS = 1000

# Continuous-integration variables recorded as session tags (lower-cased), when set.
CI_VARIABLES = (
    "CI_PIPELINE_ID",
    "CI_PIPELINE_URL",
    "CI_JOB_ID",
    "CI_JOB_NAME",
    "CI_JOB_URL",
    "CI_COMMIT_SHA",
    "CI_COMMIT_REF_NAME",
    "CI_MERGE_REQUEST_IID",
    "CI_PROJECT_PATH",
    "CI_RUNNER_DESCRIPTION",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_JOB",
    "GITHUB_WORKFLOW",
    "GITHUB_SHA",
    "GITHUB_REF_NAME",
    "GITHUB_REPOSITORY",
)


class TrackingError(RuntimeError):
    """The tracking store could not be used; the message says why and what to do."""


# -- where the store is ----------------------------------------------------------------------------


def default_artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artefacts go: beside a SQLite file, else wherever the store decides.

    MLflow's own default for a database store is ``./mlruns`` relative to the current directory,
    which scatters artefacts over wherever the suite happened to run; a SQLite store keeps them in
    ``mlartifacts/<experiment>`` next to the database file instead. Servers and file stores choose
    their own location (``None``).
    """
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :]).expanduser()
    slug = re.sub(r"[^\w.-]+", "_", experiment).strip("_") or "default"
    return (db.resolve().parent / "mlartifacts" / slug).as_uri()


# -- session tags ----------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def session_tags(device: str, weights_mode: str, *, root: str | Path | None = None) -> dict[str, str]:
    """Tags that say where a session's numbers come from.

    Args:
        device: the accelerator(s) the cases ran on, e.g. ``cuda:0`` or ``cpu``.
        weights_mode: ``pretrained``, ``random`` or a comma list of both; a session with any
            random-weights case is tagged ``benchmark_number=false``.
        root: checkout whose git commit and branch are recorded (default: the current folder, the
            repository whose metric is under test).

    Returns:
        git commit/branch/dirty state (also under MLflow's ``mlflow.source.git.*`` names), the CI
        pipeline and job variables that are set, device, weights mode, library versions, hostname.
    """
    root = Path(root) if root is not None else Path.cwd()
    git_commit = _git(root, "rev-parse", "HEAD")
    commit = git_commit or os.environ.get("CI_COMMIT_SHA") or os.environ.get("GITHUB_SHA", "")
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    if branch in ("", "HEAD"):  # CI checks out a detached HEAD
        branch = (
            os.environ.get("CI_COMMIT_REF_NAME")
            or os.environ.get("GITHUB_HEAD_REF")
            or os.environ.get("GITHUB_REF_NAME")
            or branch
        )
    tags: dict[str, str] = {}
    if commit:
        tags[TAG_COMMIT] = tags["mlflow.source.git.commit"] = commit
    if branch:
        tags[TAG_BRANCH] = tags["mlflow.source.git.branch"] = branch
    if git_commit:
        tags["git_dirty"] = str(bool(_git(root, "status", "--porcelain", "--untracked-files=no"))).lower()
    for name in CI_VARIABLES:
        value = os.environ.get(name)
        if value:
            tags[name.lower()] = value
    if os.environ.get("GITLAB_CI"):
        tags["ci"] = "gitlab"
    elif os.environ.get("GITHUB_ACTIONS"):
        tags["ci"] = "github"
    tags.update(
        device=device,
        weights_mode=weights_mode,
        python_version=platform.python_version(),
        torch_version=_version("torch"),
        pyiqa_version=_version("pyiqa"),
        mlflow_version=_version("mlflow"),
        iqa_robustness_version=_version("iqa-robustness"),
        hostname=socket.gethostname(),
        platform=platform.platform(),
    )
    if "random" in weights_mode.split(","):
        tags["benchmark_number"] = "false"
    return tags


# -- value hygiene ---------------------------------------------------------------------------------


def _key(name: str) -> str:
    """A key MLflow accepts: letters, digits and ``_ - . / space``; anything else becomes ``_``."""
    return re.sub(r"[^\w./\- ]", "_", str(name))[:KEY_LIMIT] or "_"


def _text(value: Any, limit: int) -> str:
    """Any value as a string MLflow accepts: JSON for containers, cut to ``limit`` characters."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    if len(text) > limit:
        log.debug("value cut to %d characters: %.60s...", limit, text)
        text = text[: limit - 3] + "..."
    return text


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# -- what one case logs ----------------------------------------------------------------------------


def case_params(result: CaseResult) -> dict[str, str]:
    """The attack's hyperparameters and the case identity, stringified and cut to MLflow's limits."""
    params: dict[str, Any] = dict(result.params)
    params.update(
        metric=result.metric,
        attack=result.attack,
        dataset=result.dataset,
        amplitude=result.amplitude,
        train_dataset=result.train_dataset,
        seed=result.params.get("seed"),
    )
    return {_key(k): _text(v, PARAM_VALUE_LIMIT) for k, v in params.items()}


def case_metrics(result: CaseResult) -> dict[str, float]:
    """Every finite group score (with its CI bounds), mean PSNR/SSIM/MSE, time, memory, image count.

    ``psnr``, ``ssim`` and ``mse`` are means over the images; an image the attack left unchanged
    (PSNR = inf) does not enter the PSNR mean. Non-finite scores are left out (MLflow would store
    them as huge numbers); their absence reads as "undefined".
    """
    from iqa_robustness.report.summary import case_summary

    values: dict[str, Any] = dict(result.scores)
    try:
        summary = case_summary(result)
        values.update(psnr=summary["psnr"], ssim=summary["ssim"], mse=summary["mse"])
    except (KeyError, TypeError, ValueError) as exc:  # rows without similarity columns
        log.warning("case %s: no mean PSNR/SSIM/MSE (%s)", result.case_id, exc)
    values.update(
        seconds_per_image=result.seconds_per_image,
        peak_memory_mb=result.peak_memory_mb,
        n_images=result.n_images,
    )
    out = {}
    for name, value in values.items():
        number = _finite(value)
        if number is not None:
            out[_key(name)] = number
    return out


def case_tags(result: CaseResult) -> dict[str, str]:
    tags = {
        TAG_KIND: KIND_CASE,
        "case_id": result.case_id,
        "status": result.status,
        "weights_mode": result.weights_mode,
        "lower_better": str(bool(result.lower_better)).lower(),
    }
    if result.message:
        tags["message"] = result.message
    if result.weights_mode == "random":
        tags["benchmark_number"] = "false"
    return {_key(k): _text(v, TAG_VALUE_LIMIT) for k, v in tags.items()}


def plot_case(result: CaseResult, path: Path) -> Path | None:
    """Clear against attacked score per image, with the "unchanged" diagonal; None without rows."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no display needed

    points = [(_finite(r.get("clear")), _finite(r.get("attacked"))) for r in result.rows]
    points = [(c, a) for c, a in points if c is not None and a is not None]
    if not points:
        return None
    clear, attacked = zip(*points, strict=True)
    lo, hi = min(*clear, *attacked), max(*clear, *attacked)
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", linewidth=0.8, label="unchanged")
    ax.scatter(clear, attacked, s=14, alpha=0.75, label="image")
    better = "lower" if result.lower_better else "higher"
    ax.set_xlabel(f"clear score ({better} is better)")
    ax.set_ylabel("attacked score")
    ax.set_title(result.case_id, fontsize=8)
    ax.legend(loc="best", fontsize=7)
    fig.subplots_adjust(left=0.16, bottom=0.12, right=0.97, top=0.93)  # fixed: tight_layout is slow
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# -- writing ---------------------------------------------------------------------------------------


def _probe(uri: str, timeout: float = 5.0) -> None:
    """Fail fast on an HTTP server that does not answer (MLflow's own client retries for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered (behind a proxy or an auth layer /health may be refused): reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}). Start it (for example "
            "`mlflow server --host 127.0.0.1 --port 5000`), or point the tracking URI (pytest --mlflow-uri, "
            "--tracking-uri of the command line, or MLFLOW_TRACKING_URI) at a running server or at a local "
            "store such as sqlite:///mlflow.db"
        ) from exc


def open_client(uri: str, *, create: bool = True) -> MlflowClient:
    """A client for ``uri``, after checking that an HTTP server answers at all.

    Args:
        uri: tracking URI.
        create: whether a missing SQLite file may be created (readers pass False: an empty new
            store would only hide a wrong path).

    Raises:
        TrackingError: the server is down or unreachable, or the SQLite file is missing.
    """
    _probe(uri)
    if not create and uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).expanduser()
        if not db.is_file():
            raise TrackingError(
                f"no MLflow store at {db}: run the suite first, or pass --tracking-uri "
                "(or set MLFLOW_TRACKING_URI) to the store the sessions were logged to"
            )
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with a sensible artefact location) when missing."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=default_artifact_location(uri, name))
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created meanwhile by another session
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} is deleted in {uri}: restore it "
            f"(`mlflow experiments restore --experiment-id {exp.experiment_id}`) or choose another "
            "experiment name"
        )
    return exp.experiment_id


def _log_batch(
    client: MlflowClient,
    run_id: str,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """MLflow's batch call, in as few requests as the batch limits of every server allow."""
    now = int(time.time() * 1000)
    metric_list = [Metric(k, v, now, 0) for k, v in (metrics or {}).items()]
    param_list = [Param(k, v) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
    n_requests = max(
        -(-len(metric_list) // _BATCH_METRICS),
        -(-len(param_list) // _BATCH_PARAMS_TAGS),
        -(-len(tag_list) // _BATCH_PARAMS_TAGS),
    )
    for i in range(n_requests):
        client.log_batch(
            run_id,
            metrics=metric_list[i * _BATCH_METRICS : (i + 1) * _BATCH_METRICS],
            params=param_list[i * _BATCH_PARAMS_TAGS : (i + 1) * _BATCH_PARAMS_TAGS],
            tags=tag_list[i * _BATCH_PARAMS_TAGS : (i + 1) * _BATCH_PARAMS_TAGS],
        )


@contextlib.contextmanager
def _no_url_printing() -> Iterator[None]:
    """MLflow prints a "View run" link to stdout per finished run on a server: one log line instead."""
    name = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    old = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


#: Files larger than this are uploaded once per session (a cnn generator is ~220 MB); later runs tag where.
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
    _log_batch(client, run_id, metrics=case_metrics(result), params=case_params(result))
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
            client.log_artifacts(run_id, str(p), artifact_path=f"files/{_key(name)}")
        elif p.is_file():
            first = uploaded.get(p.resolve()) if uploaded is not None else None
            if first is not None:
                client.set_tag(run_id, f"artifact.{_key(name)}", f"runs:/{first}/files/{p.name}")
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
    from iqa_robustness.report.summary import case_summary, write_summary

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
        session_run_tags = {_key(k): _text(v, TAG_VALUE_LIMIT) for k, v in session.items()}
        session_run_tags[TAG_KIND] = KIND_SESSION
        with _no_url_printing(), tempfile.TemporaryDirectory(prefix="iqa-robustness-mlflow-") as tmp:
            parent = client.create_run(experiment_id, run_name=run_name, tags=session_run_tags)
            parent_id = parent.info.run_id
            uploaded: dict[Path, str] = {}
            try:
                for result in results:
                    _log_case(client, experiment_id, parent_id, result, Path(tmp), uploaded)
                counts = {"n_cases": len(results)}
                for status in ("passed", "failed", "error", "skipped"):
                    counts[f"n_{status}"] = sum(r.status == status for r in results)
                _log_batch(client, parent_id, metrics=counts)
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


# -- reading ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoggedCase:
    """One case run as read back from the store."""

    run_id: str
    case_id: str
    metric: str
    attack: str
    dataset: str
    train_dataset: str
    amplitude: str
    status: str
    weights_mode: str
    metrics: dict[str, float]
    params: dict[str, str]

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.metric, self.attack, self.dataset, self.train_dataset, self.amplitude)


def _experiment_id(client: MlflowClient, experiment: str, uri: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise TrackingError(
            f"no MLflow experiment {experiment!r} in {uri} (it has: {', '.join(names) or 'none'}); "
            "run the suite first or pass --experiment / --tracking-uri"
        )
    return exp.experiment_id


def _search(client: MlflowClient, experiment_id: str, filter_string: str, max_results: int | None = None) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=min(max_results or 1000, 1000),
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token or (max_results is not None and len(runs) >= max_results):
            return runs[:max_results] if max_results is not None else runs


def find_session(client: MlflowClient, experiment: str, ref: str, uri: str = "") -> Run:
    """The session (parent) run that ``ref`` names.

    Args:
        client: see :func:`open_client`.
        experiment: experiment searched for ``latest``, ``previous`` and commits.
        ref: a run id (a case run id gives its session), a git commit or a prefix of one (the
            latest session of that commit), ``latest`` or ``previous`` (the one before it).
        uri: the store, for error messages.

    Raises:
        TrackingError: nothing matches; the message lists what would.
    """
    experiment_id = _experiment_id(client, experiment, uri)
    sessions_filter = f"tags.{TAG_KIND} = '{KIND_SESSION}'"
    word = ref.strip().lower()
    if word in ("latest", "previous"):
        index = 0 if word == "latest" else 1
        runs = _search(client, experiment_id, sessions_filter, max_results=2)
        if len(runs) <= index:
            raise TrackingError(
                f"experiment {experiment!r} has {len(runs)} session(s): there is no {word!r} session; "
                "run the suite (again) first"
            )
        return runs[index]
    if re.fullmatch(r"[0-9a-f]{32}", word):
        with contextlib.suppress(MlflowException):
            run = client.get_run(word)
            parent = run.data.tags.get(PARENT_TAG)
            return client.get_run(parent) if parent else run
    if re.fullmatch(r"[0-9a-f]{4,40}", word):
        runs = _search(client, experiment_id, f"{sessions_filter} and tags.{TAG_COMMIT} LIKE '{word}%'", 1)
        if runs:
            return runs[0]
        raise TrackingError(f"no run id or session of git commit {ref!r} in experiment {experiment!r}")
    raise TrackingError(f"{ref!r} is neither a run id, a git commit, 'latest' nor 'previous'")


def load_session_cases(client: MlflowClient, session: Run) -> list[LoggedCase]:
    """Every case run nested under ``session``."""
    runs = _search(client, session.info.experiment_id, f"tags.`{PARENT_TAG}` = '{session.info.run_id}'")
    cases = []
    for run in runs:
        params, tags = run.data.params, run.data.tags
        amplitude = params.get("amplitude", "")
        cases.append(
            LoggedCase(
                run_id=run.info.run_id,
                case_id=tags.get("case_id", run.info.run_name or ""),
                metric=params.get("metric", ""),
                attack=params.get("attack", ""),
                dataset=params.get("dataset", ""),
                train_dataset="" if params.get("train_dataset") in (None, "None") else params["train_dataset"],
                amplitude="" if amplitude in (None, "None") else amplitude,
                status=tags.get("status", ""),
                weights_mode=tags.get("weights_mode", ""),
                metrics=dict(run.data.metrics),
                params=dict(params),
            )
        )
    return sorted(cases, key=lambda c: c.key)


def describe_session(run: Run) -> str:
    """``<run id> (commit abc12345, branch main, 2026-01-31 12:00 UTC)`` for headers and messages."""
    tags = run.data.tags
    started = _dt.datetime.fromtimestamp(run.info.start_time / 1000, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    parts = [f"commit {tags[TAG_COMMIT][:8]}" if TAG_COMMIT in tags else "no commit"]
    if TAG_BRANCH in tags:
        parts.append(f"branch {tags[TAG_BRANCH]}")
    parts.append(f"{started} UTC")
    return f"{run.info.run_id} ({', '.join(parts)})"
