"""Reading sessions back: a session by run id, commit, branch or ``latest``/``previous``, and its cases."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import re

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from iqa_robustness.tracking.store import (
    KIND_SESSION,
    PARENT_TAG,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_KIND,
    TrackingError,
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
