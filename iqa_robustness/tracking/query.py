"""Reading sessions back: a session by run id, commit, branch or ``latest``/``previous``, and its cases.

``latest``, ``previous``, a commit and a branch name only sessions that ended with all their cases
logged (FINISHED or FAILED, see :func:`~iqa_robustness.tracking.store.session_complete`): a session
still running, one stopped before its end (KILLED) and one whose store went away mid-way are
partial, and a comparison or the regression gate against one would miss cases. A run id names
any session (docs/tracking.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import re
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from iqa_robustness.scores.msu_csv import read_msu_csv
from iqa_robustness.tracking.store import (
    COUNT_METRIC,
    KIND_SESSION,
    PARENT_TAG,
    RUNNING,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_KIND,
    TrackingError,
    no_progress_bars,
    session_complete,
)

log = logging.getLogger(__name__)


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
    lower_better: bool = False
    message: str = ""
    rows: list[dict] | None = None  # the per-image rows, once read (see :func:`load_case_rows`)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.metric, self.attack, self.dataset, self.train_dataset, self.amplitude)

    @property
    def identity(self) -> dict[str, str]:
        """The case's identity as the columns of a result row: case id, metric, attack, data sets, amplitude."""
        return {
            "case_id": self.case_id,
            "metric": self.metric,
            "attack": self.attack,
            "dataset": self.dataset,
            "train_dataset": self.train_dataset,
            "amplitude": self.amplitude,
        }


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


def child_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The case runs nested under the session run ``parent_id``, newest first."""
    return _search(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_id}'")


#: the sessions ``latest``, ``previous``, a commit or a branch may name: whole ones (see the module docstring)
WHOLE_SESSIONS = (
    f"tags.{TAG_KIND} = '{KIND_SESSION}' and attributes.status != '{RUNNING}' and attributes.status != 'KILLED' "
    f"and metrics.{COUNT_METRIC} >= 0"
)


def _has_metric(client: MlflowClient, session: Run, metric: str) -> bool:
    found = client.search_runs(
        [session.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{session.info.run_id}' and params.metric = '{_quoted(metric)}'",
        max_results=1,
    )
    return bool(found)


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")


def _sessions(client: MlflowClient, experiment_id: str, extra: str, count: int, metric: str | None) -> list[Run]:
    """The newest ``count`` whole sessions matching ``extra``; with ``metric``, only those that ran it."""
    filter_string = WHOLE_SESSIONS + (f" and {extra}" if extra else "")
    if metric is None:
        return _search(client, experiment_id, filter_string, max_results=count)
    found: list[Run] = []
    for run in _search(client, experiment_id, filter_string):  # newest first: stop at the count-th match
        if _has_metric(client, run, metric):
            found.append(run)
            if len(found) == count:
                break
    return found


def find_session(client: MlflowClient, experiment: str, ref: str, uri: str = "", *, metric: str | None = None) -> Run:
    """The session (parent) run that ``ref`` names.

    Args:
        client: see :func:`open_client`.
        experiment: experiment searched for ``latest``, ``previous``, commits and branches.
        ref: a run id (a case run id gives its session), a git commit or a prefix of one (the
            latest session of that commit), ``latest`` or ``previous`` (the one before it), or a
            branch name (that branch's latest session; ``branch:NAME`` when the name could be
            read as a commit).
        uri: the store, for error messages.
        metric: only sessions that ran this metric count (a pipeline logs one session per
            metric, so "the target branch's latest session" is per metric).

    Raises:
        TrackingError: nothing matches; the message lists what would.
    """
    experiment_id = _experiment_id(client, experiment, uri)
    text = ref.strip()
    word = text.lower()
    having = f" with metric {metric!r}" if metric else ""
    if word in ("latest", "previous"):
        index = 0 if word == "latest" else 1
        runs = _sessions(client, experiment_id, "", 2, metric)
        if len(runs) <= index:
            raise TrackingError(
                f"experiment {experiment!r} has {len(runs)} whole session(s){having}: there is no {word!r} "
                "session; run the suite (again) first (sessions still running, stopped, or cut short by their "
                "store are not counted: `iqa-robustness upload RESULTS` completes one, a run id names any)"
            )
        return runs[index]
    if re.fullmatch(r"[0-9a-f]{32}", word):
        with contextlib.suppress(MlflowException):
            run = client.get_run(word)
            parent = run.data.tags.get(PARENT_TAG)
            session = client.get_run(parent) if parent else run
            if not session_complete(session):
                log.warning(
                    "session run %s is partial (status %s, %s): it holds the cases logged so far; "
                    "`iqa-robustness upload RESULTS` completes it from its results folder",
                    session.info.run_id,
                    session.info.status,
                    "with its counts" if COUNT_METRIC in session.data.metrics else "without its counts",
                )
            return session
    if re.fullmatch(r"[0-9a-f]{4,40}", word):
        runs = _sessions(client, experiment_id, f"tags.{TAG_COMMIT} LIKE '{word}%'", 1, metric)
        if runs:
            return runs[0]
    branch = text.removeprefix("branch:")
    runs = _sessions(client, experiment_id, f"tags.{TAG_BRANCH} = '{_quoted(branch)}'", 1, metric)
    if runs:
        return runs[0]
    branches = sorted(
        {r.data.tags[TAG_BRANCH] for r in _sessions(client, experiment_id, "", 200, None) if TAG_BRANCH in r.data.tags}
    )
    raise TrackingError(
        f"{ref!r} names no session{having} in experiment {experiment!r}: it is neither a run id, a git commit, "
        f"'latest', 'previous' nor a branch with sessions (branches with sessions: {', '.join(branches) or 'none'})"
    )


def load_session_cases(client: MlflowClient, session: Run) -> list[LoggedCase]:
    """Every case run nested under ``session``."""
    runs = child_runs(client, session.info.experiment_id, session.info.run_id)
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
                lower_better=tags.get("lower_better", "false") == "true",
                message=tags.get("message", ""),
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


def load_case_rows(client: MlflowClient, case: LoggedCase, folder: Path) -> list[dict]:
    """The per-image rows of a logged case (its MSU CSV artefact), downloaded into ``folder``; cached on ``case``.

    Raises:
        TrackingError: the case run has no per-image CSV, or it cannot be read.
    """
    if case.rows is not None:
        return case.rows
    tables = [a.path for a in client.list_artifacts(case.run_id) if a.path.endswith(".csv")]
    if not tables:
        raise TrackingError(f"case run {case.run_id} ({case.case_id}) has no per-image CSV artefact")
    target = Path(folder) / case.run_id
    target.mkdir(parents=True, exist_ok=True)
    try:
        with no_progress_bars():
            local = client.download_artifacts(case.run_id, tables[0], str(target))
        case.rows = read_msu_csv(local).rows
    except (MlflowException, OSError, ValueError) as exc:
        raise TrackingError(f"case {case.case_id}: cannot read its per-image CSV ({exc})") from exc
    return case.rows


#: case files larger than this are not downloaded for a report (a generator's weights, a video perturbation)
REPORT_FILE_BYTES = 64 * 2**20


def download_case_files(
    client: MlflowClient, case: LoggedCase, folder: Path, max_bytes: int = REPORT_FILE_BYTES
) -> dict[str, str]:
    """The case run's files (image pairs, perturbation images and arrays) downloaded into ``folder``: name -> path.

    Files over ``max_bytes`` and PyTorch checkpoints are left in the store.
    """
    target = Path(folder) / case.run_id
    out: dict[str, str] = {}
    try:
        infos = client.list_artifacts(case.run_id, "files")
    except MlflowException as exc:
        log.warning("case %s: its files cannot be listed (%s)", case.case_id, exc)
        return out
    for info in infos:
        name = Path(info.path).name
        if info.is_dir or name.endswith((".pt", ".pth")) or (info.file_size or 0) > max_bytes:
            continue
        try:
            with no_progress_bars():
                out[name] = client.download_artifacts(case.run_id, info.path, str(target))
        except (MlflowException, OSError) as exc:
            log.warning("case %s: %s not downloaded (%s)", case.case_id, info.path, exc)
    return out
