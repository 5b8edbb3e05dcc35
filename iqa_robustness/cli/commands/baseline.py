"""``iqa-robustness baseline --from SESSION``: a thresholds file (``pytest --baseline``) from a logged session.

SESSION is a results folder or an MLflow reference (run id, commit, ``latest``, ``previous``,
branch). Each case gets a ``min`` and ``max`` for the robustness score and the normalised gain:
the value -+ ``--margin`` half-widths of its 95% interval (see
:func:`iqa_robustness.report.baseline.thresholds_from_cases`). A later session of the same grid
whose robustness differs beyond them fails its cases, with the numbers in the message.

Accepting a new baseline on purpose (a metric became more or less robust, and that is the
intended change): run the grid, write the file from that session over the committed one, and
commit it with the change, so the review shows the old and the new thresholds side by side
(docs/results.md, "Baselines").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iqa_robustness.cli.commands._sessions import METRIC_HELP, load_named_session, metric_list
from iqa_robustness.cli.commands._store import add_store_arguments


def register(sub: argparse._SubParsersAction) -> None:
    from iqa_robustness.report.baseline import BASELINE_SCORES, DEFAULT_MARGIN, DEFAULT_MIN_MARGIN

    p = sub.add_parser(
        "baseline",
        help="write a thresholds file (pytest --baseline) from a session's scores and intervals",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--from", dest="session", required=True, help="results folder, run id, commit, latest/previous or branch"
    )
    p.add_argument("--out", type=Path, default=Path("baselines/baseline.csv"), help="file written")
    p.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help=f"half-widths of each score's 95%% interval on either side (default: {DEFAULT_MARGIN})",
    )
    p.add_argument(
        "--min-margin",
        type=float,
        default=DEFAULT_MIN_MARGIN,
        help=f"the least distance from a value to its bounds (default: {DEFAULT_MIN_MARGIN})",
    )
    p.add_argument(
        "--scores", default=",".join(BASELINE_SCORES), help=f"scores bounded (default: {','.join(BASELINE_SCORES)})"
    )
    p.add_argument("--metric", default=None, help=METRIC_HELP)
    add_store_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.report.baseline import thresholds_from_cases, write_baseline

    session = load_named_session(args.session, args, metrics=metric_list(args.metric))
    cases = [c for c in session.cases if c.status in ("passed", "failed")]
    rows = [
        {"metric": c.metric, "attack": c.attack, "dataset": c.dataset, "amplitude": c.amplitude, **c.metrics}
        for c in cases
    ]
    scores = [s.strip() for s in args.scores.split(",") if s.strip()]
    thresholds = thresholds_from_cases(rows, scores, args.margin, args.min_margin)
    path = write_baseline(thresholds, args.out)
    left_out = len(session.cases) - len(cases)
    print(f"session: {session.description}")
    print(f"wrote {len(thresholds)} threshold(s) for {len(cases)} case(s) to {path}")
    if left_out:
        print(f"{left_out} case(s) left out (not scored)")
    return 0
