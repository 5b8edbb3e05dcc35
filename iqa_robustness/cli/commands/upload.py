"""``iqa-robustness upload PATH``: log case results already on disk to MLflow.

For a session whose tracking store was down or went away: the per-case JSON files stay in the
results folder, and this logs them like the end of a pytest session does. When the session's
record (``sessions/<id>.json``) names the MLflow run the session made while it ran, and the store
still has it, that run is completed (same run id, its missing case runs, its end status and end
time); otherwise a new session run holds the cases (docs/tracking.md).
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._store import add_store_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upload",
        help="log case results from a results folder to MLflow (after a tracking server outage)",
        description=(
            "Log per-case JSON files to MLflow as one session. PATH is a folder of case JSON files, "
            "or a results folder: then its most recent session under cases/ is logged. The session's own "
            "run is completed when the store still has it; else a new session run is made."
        ),
    )
    p.add_argument("path", type=Path, nargs="?", default=Path("results"), help="default: results")
    add_store_arguments(
        p,
        uri_help="MLflow tracking URI (default: the store the session logged to, as its record says; else "
        "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current folder)",
    )
    p.set_defaults(func=run)


def cases_folder(path: Path) -> Path:
    """``path`` itself when it holds case JSON files, else its newest ``cases/<session>`` folder.

    A results folder (one with ``cases/``) holds JSON files of its own (``verdict.json``): its cases are below.
    """
    if not path.is_dir():
        raise CommandError(f"{path} is not a folder; give the results folder or a folder of case JSON files")
    if not (path / "cases").is_dir() and any(path.glob("*.json")):
        return path
    sessions = [d for d in (path / "cases").glob("*") if d.is_dir() and any(d.glob("*.json"))]
    if not sessions:
        raise CommandError(f"no case JSON files in {path} nor in {path / 'cases'}/<session>/")
    return max(sessions, key=lambda d: d.stat().st_mtime)


def session_record(folder: Path):
    """The record of the session whose cases are in ``folder`` (``<results>/cases/<id>``), or None."""
    from iqa_robustness.runner.sessions import SessionRecord

    path = SessionRecord.path_in(folder.parent.parent, folder.name)
    try:
        return SessionRecord.load(path)
    except (OSError, ValueError, TypeError):
        return None


def _ended(record) -> tuple[str | None, _dt.datetime | None]:
    """The session's MLflow status and end time, when its record says it ended."""
    if record is None or record.status == "running" or not record.finished:
        return None, None
    try:
        return record.status.upper(), _dt.datetime.fromisoformat(record.finished)
    except ValueError:
        return record.status.upper(), None


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.conventions import default_tracking_uri
    from iqa_robustness.scores.summary import load_cases
    from iqa_robustness.tracking import KIND_SESSION, KIND_SHARD, TrackingError, log_session, session_tags

    folder = cases_folder(args.path)
    results = load_cases(folder)
    record = session_record(folder)
    uri = args.tracking_uri or (record.tracking_uri if record is not None else "") or default_tracking_uri()
    own_run = record.mlflow_run_id if record is not None else ""
    status, ended = _ended(record)
    results_dir = folder.parent.parent if record is not None else None
    modes = ",".join(sorted({r.weights_mode for r in results}))
    devices = ",".join(sorted({str(r.params.get("device", "")) for r in results}))
    tags = record.tags if record is not None and record.tags else session_tags(device=devices, weights_mode=modes)
    try:
        run_id = log_session(
            results,
            uri=uri,
            experiment=args.experiment,
            tags={**tags, "uploaded_from": str(folder.resolve())},
            results_dir=results_dir,
            kind=KIND_SHARD if record is not None and (record.shard or record.image_shard) else KIND_SESSION,
            run_id=own_run or None,
            status=status,
            ended=ended,
            report=results_dir / "report" if results_dir is not None else None,
        )
    except TrackingError as exc:
        raise CommandError(str(exc)) from exc
    how = "the session's own run" if run_id == own_run else "a new session run"
    print(f"logged {len(results)} case(s) from {folder} in session run {run_id} ({how})")
    print(f"experiment {args.experiment!r} at {uri}" if run_id != own_run else f"at {uri}")
    return 0
