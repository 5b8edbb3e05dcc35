"""``iqa-robustness upload PATH``: log case results already on disk to MLflow.

For a session whose tracking server was down: the per-case JSON files stay in the results folder,
and this logs them as one session (a parent run with one nested run per case), like the end of a
pytest session does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._store import add_store_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upload",
        help="log case results from a results folder to MLflow (after a tracking server outage)",
        description=(
            "Log per-case JSON files to MLflow as one session. PATH is a folder of case JSON files, "
            "or a results folder: then its most recent session under cases/ is logged."
        ),
    )
    p.add_argument("path", type=Path, nargs="?", default=Path("results"), help="default: results")
    add_store_arguments(p)
    p.set_defaults(func=run)


def cases_folder(path: Path) -> Path:
    """``path`` itself when it holds case JSON files, else its newest ``cases/<session>`` folder."""
    if not path.is_dir():
        raise CommandError(f"{path} is not a folder; give the results folder or a folder of case JSON files")
    if any(path.glob("*.json")):
        return path
    sessions = [d for d in (path / "cases").glob("*") if d.is_dir() and any(d.glob("*.json"))]
    if not sessions:
        raise CommandError(f"no case JSON files in {path} nor in {path / 'cases'}/<session>/")
    return max(sessions, key=lambda d: d.stat().st_mtime)


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.conventions import default_tracking_uri
    from iqa_robustness.scores.summary import load_cases
    from iqa_robustness.tracking import TrackingError, log_session, session_tags

    folder = cases_folder(args.path)
    results = load_cases(folder)
    uri = args.tracking_uri or default_tracking_uri()
    modes = ",".join(sorted({r.weights_mode for r in results}))
    devices = ",".join(sorted({str(r.params.get("device", "")) for r in results}))
    try:
        run_id = log_session(
            results,
            uri=uri,
            experiment=args.experiment,
            tags={**session_tags(device=devices, weights_mode=modes), "uploaded_from": str(folder.resolve())},
            results_dir=None,
        )
    except TrackingError as exc:
        raise CommandError(str(exc)) from exc
    print(f"logged {len(results)} case(s) from {folder} as session run {run_id}")
    print(f"experiment {args.experiment!r} at {uri}")
    return 0
