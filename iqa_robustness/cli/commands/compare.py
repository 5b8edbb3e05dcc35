"""``iqa-robustness compare A B``: two logged sessions side by side, case by case, with deltas.

A and B are session runs in the MLflow store: a run id, a git commit (or a prefix of one: the
latest session of that commit), ``latest`` or ``previous``. For every metric x attack x dataset
[x train set x amplitude] the key scores of the MSU benchmark (Antsiferova et al., AAAI 2024) are
shown for A and B with delta = B - A, printed and saved as CSV.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._store import add_store_arguments, format_table, number, open_store, to_json, write_csv
from iqa_robustness.conventions import dataset_slug

COMPARED_SCORES = (
    "norm_abs_gain",
    "robustness_score",
    "wasserstein_score",
    "energy_distance_score",
    "abs_gain",
    "psnr",
    "seconds_per_image",
)
KEY_COLUMNS = ("metric", "attack", "dataset", "train_dataset", "amplitude")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two logged sessions (run ids, git commits, latest/previous) case by case",
        description="Side-by-side scores of two sessions from the MLflow store, with delta = B - A.",
    )
    p.add_argument("a", metavar="A", help="session run id, git commit (prefix), 'latest' or 'previous'")
    p.add_argument("b", metavar="B", help="the same kinds of reference; deltas are B - A")
    add_store_arguments(p)
    p.add_argument("--out", type=Path, default=Path("results/compare"), help="CSV folder (default: results/compare)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="printed format")
    p.set_defaults(func=run)


def compare_cases(a: Sequence[Any], b: Sequence[Any], scores: Sequence[str] = COMPARED_SCORES) -> list[dict]:
    """One row per case key found in A or B: ``<score>_a``, ``<score>_b``, ``<score>_delta`` (B - A).

    Args:
        a, b: :class:`iqa_robustness.tracking.store.LoggedCase` lists of the two sessions.
        scores: the metric names compared.
    """
    by_a = {c.key: c for c in a}
    by_b = {c.key: c for c in b}
    rows = []
    for key in sorted(set(by_a) | set(by_b)):
        row: dict[str, Any] = dict(zip(KEY_COLUMNS, key, strict=True))
        row["present"] = "both" if key in by_a and key in by_b else ("A only" if key in by_a else "B only")
        for score in scores:
            va = by_a[key].metrics.get(score, math.nan) if key in by_a else math.nan
            vb = by_b[key].metrics.get(score, math.nan) if key in by_b else math.nan
            row[f"{score}_a"], row[f"{score}_b"], row[f"{score}_delta"] = va, vb, vb - va
        rows.append(row)
    return rows


def table_lines(rows: Sequence[dict], scores: Sequence[str] = COMPARED_SCORES) -> list[str]:
    """One line per case and score: metric, attack, dataset, [train,] amplitude, score, A, B, delta."""
    with_train = any(r["train_dataset"] for r in rows)
    header = [
        "metric",
        "attack",
        "dataset",
        *(["train"] if with_train else []),
        "amp",
        "score",
        "A",
        "B",
        "delta",
    ]
    body = []
    for r in rows:
        ident = [r["metric"], r["attack"], dataset_slug(r["dataset"])]
        if with_train:
            ident.append(dataset_slug(r["train_dataset"]) or "-")
        ident.append(r["amplitude"] or "-")
        for score in scores:
            cells = [
                number(r[f"{score}_a"]),
                number(r[f"{score}_b"]),
                number(r[f"{score}_delta"], signed=True),
            ]
            body.append([*ident, score, *cells])
    return format_table(header, body, right=range(len(header) - 3, len(header)))


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.tracking import TrackingError, describe_session, find_session, load_session_cases

    client, uri = open_store(args)
    try:
        session_a = find_session(client, args.experiment, args.a, uri)
        session_b = find_session(client, args.experiment, args.b, uri)
        cases_a = load_session_cases(client, session_a)
        cases_b = load_session_cases(client, session_b)
    except TrackingError as exc:
        raise CommandError(str(exc)) from exc
    rows = compare_cases(cases_a, cases_b)
    if not rows:
        raise CommandError("neither session has case runs to compare")
    id_a, id_b = session_a.info.run_id, session_b.info.run_id
    path = write_csv(rows, args.out / f"compare_{id_a[:8]}_{id_b[:8]}.csv")
    if args.format == "json":
        print(to_json(rows))
    elif args.format == "csv":
        print(path.read_text(), end="")
    else:
        print(f"A = {describe_session(session_a)}")
        print(f"B = {describe_session(session_b)}")
        print("delta = B - A; gains > 0 mean the metric was fooled, higher R means more robust")
        only = [r for r in rows if r["present"] != "both"]
        if only:
            print(f"{len(only)} case(s) in one session only (their other side shows '-')")
        for line in table_lines(rows):
            print(line)
        print(f"saved: {path}")
    return 0
