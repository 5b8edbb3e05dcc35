"""``iqa-robustness leaderboard``: the metrics of one logged session ranked by robustness.

As in the MSU Metrics Robustness Benchmark (Antsiferova et al., AAAI 2024), a metric's robustness
score R is averaged per attack (over datasets, train sets and amplitudes) and then over attacks;
higher R means more robust. The mean normalised absolute gain is shown beside it (higher = more
easily fooled). Printed, saved as CSV and drawn as a bar chart.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._store import add_store_arguments, format_table, number, open_store, to_json, write_csv


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="rank the metrics of a logged session by robustness",
        description="Metrics ranked by mean robustness score over attacks (higher = more robust).",
    )
    add_store_arguments(p)
    p.add_argument("--run", default="latest", help="session run id, git commit (prefix), latest or previous")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/leaderboard"),
        help="CSV and PNG folder (default: results/leaderboard)",
    )
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="printed format")
    p.set_defaults(func=run)


def leaderboard(cases: Sequence[Any]) -> list[dict[str, Any]]:
    """Ranked rows (see :func:`iqa_robustness.scores.summary.leaderboard_rows`) of one session's logged cases.

    Args:
        cases: :class:`iqa_robustness.tracking.store.LoggedCase` list of one session; cases without scores
            (skipped, errors) do not count.
    """
    from iqa_robustness.scores.summary import leaderboard_rows

    rows = leaderboard_rows(
        {"metric": c.metric, "attack": c.attack, "weights_mode": c.weights_mode, **c.metrics} for c in cases
    )
    for row in rows:
        del row["n_total"]
    return rows


def plot_leaderboard(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Horizontal bars of the mean robustness score, most robust on top."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no display needed

    shown = [r for r in rows if not math.isnan(r["robustness_score"])]
    fig = Figure(figsize=(6.5, 1.2 + 0.35 * max(len(shown), 1)), dpi=100)
    ax = fig.add_subplot()
    names = [r["metric"] for r in reversed(shown)]
    values = [r["robustness_score"] for r in reversed(shown)]
    bars = ax.barh(names, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=8)
    ax.set_xlabel("mean robustness score R over attacks (higher = more robust)")
    ax.set_title(title, fontsize=9)
    ax.margins(x=0.15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.tracking import TrackingError, describe_session, find_session, load_session_cases

    client, uri = open_store(args)
    try:
        session = find_session(client, args.experiment, args.run, uri)
        cases = load_session_cases(client, session)
    except TrackingError as exc:
        raise CommandError(str(exc)) from exc
    rows = leaderboard(cases)
    if not any(r["n_cases"] for r in rows):
        raise CommandError(f"session {session.info.run_id} has no case with a robustness score")
    random = any("random" in r["weights_mode"].split(",") for r in rows)
    title = f"session {session.info.run_id[:8]}"
    if random:
        title += " - random weights: not benchmark numbers"
    csv_path = write_csv(rows, args.out / "leaderboard.csv")
    png_path = plot_leaderboard(rows, args.out / "leaderboard.png", title)
    if args.format == "json":
        print(to_json(rows))
    elif args.format == "csv":
        print(csv_path.read_text(), end="")
    else:
        print(f"session {describe_session(session)}")
        if random:
            print("random weights in this session: these are not benchmark numbers")
        header = ["rank", "metric", "R (mean)", "norm gain", "attacks", "cases", "weights"]
        body = [
            [
                str(r["rank"]),
                r["metric"],
                number(r["robustness_score"]),
                number(r["norm_abs_gain"]),
                str(r["n_attacks"]),
                str(r["n_cases"]),
                r["weights_mode"],
            ]
            for r in rows
        ]
        for line in format_table(header, body, right=(0, 2, 3, 4, 5)):
            print(line)
        print(f"saved: {csv_path}, {png_path}")
    return 0
