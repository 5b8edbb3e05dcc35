"""MLflow tracking of robustness sessions: one parent run per pytest session, one nested run per case.

The logged numbers are the scores of the MSU Metrics Robustness Benchmark (Antsiferova et al.,
"Comparing the robustness of modern no-reference image- and video-quality metrics to adversarial
attacks", AAAI 2024): every case run holds its group scores, the per-image CSV in the benchmark's
layout, the mean image similarity and the attack time, so sessions can be compared commit by commit.

Only the pytest controller process writes the store, from the
:class:`~iqa_robustness.scores.results.CaseResult` files the workers left in the results folder. Sessions
of other processes may share a SQLite store: its creation is serialised by a lock file beside the
database (:func:`store_lock`). A store that cannot be reached costs the MLflow copy only, never the
results on disk, and only seconds: every call is bounded (:func:`bounded_requests`), and a session
stops calling after its first failure (docs/tracking.md).

This module holds the store itself (client, experiment, batch calls, MLflow's limits); the rest
of the package: :mod:`.tags` (where a session's numbers come from), :mod:`.cases` (what one case
logs), :mod:`.session` (writing a session), :mod:`.query` (reading sessions back for
``iqa-robustness compare`` and ``leaderboard``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


# Run roles, so that sessions can be found without scanning every case run.
TAG_KIND = "run_kind"
KIND_SESSION = "session"
KIND_CASE = "case"
KIND_SHARD = "shard"  # one shard of a grid; the merged session is a KIND_SESSION run
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

#: How a session's HTTP calls to a tracking server are bounded, unless the environment sets these
#: variables itself (MLflow reads them at each call): two quick retries and a 20 s socket timeout
#: instead of MLflow's seven retries with back-off (about four minutes per call on a server that is down).
SESSION_HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
#: Seconds the one look at a server gets before a session that went offline gives up for good.
PROBE_SECONDS = 5.0
#: Seconds a process waits for another one to finish creating a SQLite store.
STORE_LOCK_SECONDS = 300.0
#: The session counts that :meth:`~iqa_robustness.tracking.SessionLogger.finish` logs last, before
#: ending the parent: a session run without them was cut short (see :func:`session_complete`).
COUNT_METRIC = "n_cases"
#: MLflow's status of a run that has not ended.
RUNNING = "RUNNING"


class TrackingError(RuntimeError):
    """The tracking store could not be used; the message says why and what to do."""


# -- where the store is ----------------------------------------------------------------------------


def session_complete(run: Any) -> bool:
    """Whether a session run holds its whole session: ended, with the counts its logger logs last.

    A run still RUNNING (a session under way, or one whose store went away before its end) or
    ended without its counts (its logging was cut short) is partial: ``iqa-robustness upload``
    completes it, and ``latest``, ``previous``, a commit or a branch never name it.
    """
    return run.info.status != RUNNING and COUNT_METRIC in run.data.metrics


def default_artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artefacts go: beside a SQLite file, else wherever the store decides.

    MLflow's own default for a database store is ``./mlruns`` relative to the current directory,
    which scatters artefacts over wherever the suite happened to run; a SQLite store keeps them in
    ``mlartifacts/<experiment>`` next to the database file instead. Servers and file stores choose
    their own location (``None``).
    """
    db = _sqlite_file(uri)
    if db is None:
        return None
    slug = re.sub(r"[^\w.-]+", "_", experiment).strip("_") or "default"
    return (db.resolve().parent / "mlartifacts" / slug).as_uri()


# -- value hygiene ---------------------------------------------------------------------------------


def mlflow_key(name: str) -> str:
    """A key MLflow accepts: letters, digits and ``_ - . / space``; anything else becomes ``_``."""
    return re.sub(r"[^\w./\- ]", "_", str(name))[:KEY_LIMIT] or "_"


def cut_text(value: Any, limit: int) -> str:
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


def finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# -- writing ---------------------------------------------------------------------------------------


def _probe(uri: str, timeout: float = PROBE_SECONDS) -> None:
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


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]).expanduser() if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def store_lock(db: Path, seconds: float = STORE_LOCK_SECONDS) -> Iterator[None]:
    """Hold ``<db>.lock`` beside a SQLite store while MLflow creates or upgrades its tables.

    MLflow creates the tables of a new store when the first client opens it, without any lock: two
    processes opening a new store at the same moment both create them, and one fails (``table ...
    already exists``). The lock is an OS file lock (filelock: ``fcntl.flock`` on POSIX), released when
    its holder exits, however it exits; a left-over lock file is harmless. Where the lock file cannot
    be written (a read-only folder, which no writer could use either), MLflow is left to answer.

    Raises:
        TrackingError: another process held the lock for ``seconds``.
    """
    lock = filelock.FileLock(db.with_name(db.name + ".lock"), timeout=seconds)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise TrackingError(
            f"another process has been creating the MLflow store {db} for {seconds:.0f} s (it holds "
            f"{lock.lock_file}); wait for it to end, or use another store"
        ) from None
    except OSError as exc:
        log.debug("no lock beside %s (%s): opening it without one", db, exc)
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def open_client(uri: str, *, create: bool = True) -> MlflowClient:
    """A client for ``uri``, after checking that an HTTP server answers at all.

    A SQLite store is opened under its :func:`store_lock`, so that sessions of several processes
    may create a new store at the same moment.

    Args:
        uri: tracking URI.
        create: whether a missing SQLite file may be created (readers pass False: an empty new
            store would only hide a wrong path).

    Raises:
        TrackingError: the server is down or unreachable, or the SQLite file is missing.
    """
    _probe(uri)
    db = _sqlite_file(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    if not create and not db.is_file():
        raise TrackingError(
            f"no MLflow store at {db}: run the suite first, or pass --tracking-uri "
            "(or set MLFLOW_TRACKING_URI) to the store the sessions were logged to"
        )
    if not db.parent.is_dir():
        return MlflowClient(tracking_uri=uri)  # MLflow's own error names the missing folder
    with store_lock(db):
        return MlflowClient(tracking_uri=uri)  # creates the tables of a new store, once per process


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


def log_batch(
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


def log_history(client: MlflowClient, run_id: str, key: str, points: list[list[float]]) -> None:
    """A metric's history ``[[step, value], ...]`` (a curve in the MLflow UI); non-finite values are left out."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, value, now, int(step))
        for step, value in ((p[0], finite_or_none(p[1])) for p in points)
        if value is not None
    ]
    for i in range(0, len(metrics), _BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[i : i + _BATCH_METRICS])


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def bounded_requests() -> Iterator[None]:
    """MLflow's HTTP calls within the block retry and wait as :data:`SESSION_HTTP_LIMITS` says.

    Variables the environment already sets are left as they are: whoever set them chose. urllib3's
    warning per retry is held back: a call that fails in the end is reported once, by the caller.
    """
    retries = logging.getLogger("urllib3.connectionpool")
    level = retries.level
    with contextlib.ExitStack() as stack:
        for name, value in SESSION_HTTP_LIMITS.items():
            if name not in os.environ:
                stack.enter_context(_environment(name, value))
        retries.setLevel(max(level, logging.ERROR))
        try:
            yield
        finally:
            retries.setLevel(level)


def no_url_printing() -> contextlib.AbstractContextManager[None]:
    """MLflow prints a "View run" link to stdout per finished run on a server: one log line instead."""
    return _environment("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def no_progress_bars() -> contextlib.AbstractContextManager[None]:
    """MLflow draws a progress bar per downloaded file on stderr: none, for commands that download many."""
    return _environment("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
