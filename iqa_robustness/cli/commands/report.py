"""``iqa-robustness report [SESSION] --out DIR``: a session's self-contained HTML page.

SESSION is a results folder (a pytest ``--results-dir``, a ``merge --out``) or a session in the
MLflow store (run id, commit, ``latest`` (the default), ``previous``, branch); a store session's
per-image CSVs and image files are downloaded for the page. The page
(:func:`iqa_robustness.report.html.write_report`) needs nothing else to be viewed: open
``DIR/index.html`` in a browser, or publish the folder. Every pytest session and ``merge``
already write one into their results folder (``report/``) and log it to MLflow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._sessions import (
    METRIC_HELP,
    add_fooled_gain_argument,
    add_session_argument,
    load_named_session,
    metric_list,
)
from iqa_robustness.cli.commands._store import add_store_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a session's self-contained HTML report (heatmaps, leaderboard, cases, images, provenance)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_session_argument(p)
    p.add_argument("--out", type=Path, default=Path("results/report"), help="folder written (default: results/report)")
    p.add_argument("--metric", default=None, help=METRIC_HELP)
    p.add_argument("--title", default="", help="the page's title (default: from the session)")
    add_fooled_gain_argument(p)
    add_store_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.report.html import write_report
    from iqa_robustness.scores.verdict import policy_for

    session = load_named_session(args.session, args, metrics=metric_list(args.metric))
    results = session.case_results()
    if not results:
        raise CommandError(f"{session.description} has no cases" + (f" of {args.metric}" if args.metric else ""))
    provenance = dict(session.tags)
    if session.run is not None:
        provenance.setdefault("mlflow_run_id", session.run.info.run_id)
        provenance.setdefault("status", session.run.info.status)
    page = write_report(results, args.out, provenance, title=args.title, policy=policy_for(args.fooled_gain))
    print(f"session: {session.description}")
    print(f"report: {page} ({len(results)} cases, {page.stat().st_size / 2**20:.1f} MiB)")
    return 0
