"""``iqa-robustness transfer [SESSION]``: how far the adversarial images of each source fool the other metrics.

SESSION is a results folder (a pytest ``--results-dir``, a ``merge --out``) or a session in the
MLflow store (run id, commit, ``latest`` (the default), ``previous``, branch) run with
``--transfer-to``. The matrix has one row per source (an attack against a metric, a universal
attack averaged over its amplitudes, or a published perturbation by its file) and one column per
target metric; each cell is the normalised absolute gain on the target, min-max scaled on the
target's own clean scores (positive = the target was fooled too, near 0 = the perturbation did
not transfer). The cell of the source's own metric (the diagonal) is the source's own gain.
Printed, and written as ``transfer_matrix.csv`` and ``transfer_matrix.png`` into ``--out``
(docs/transfer.md).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._sessions import NamedSession, add_session_argument, load_named_session
from iqa_robustness.cli.commands._store import add_store_arguments, format_table, number, to_json, write_csv


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer",
        help="the source x target matrix of normalised absolute gain of a session run with --transfer-to",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_session_argument(p)
    p.add_argument(
        "--score",
        choices=["norm_abs_gain", "robustness_score"],
        default="norm_abs_gain",
        help="the score in the cells (default: norm_abs_gain; robustness_score: R on the target)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("results/transfer"), help="CSV and PNG folder (default: results/transfer)"
    )
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="printed format")
    add_store_arguments(p)
    p.set_defaults(func=run)


def session_rows(session: NamedSession) -> list[dict[str, Any]]:
    """Case x target rows of a session, amplitude means included.

    See :func:`~iqa_robustness.scores.transfer.case_transfer_rows`.
    """
    from iqa_robustness.scores.transfer import (
        amplitude_mean_rows,
        case_transfer_rows,
        session_transfer_rows,
        transfer_from_metrics,
    )

    if session.results is not None:
        return session_transfer_rows(session.results)
    rows: list[dict[str, Any]] = []
    for case in session.cases:
        rows += case_transfer_rows({**case.metrics, **case.identity}, transfer_from_metrics(case.metrics))
    return rows + amplitude_mean_rows(rows)


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.report.transfer import save_matrix_png
    from iqa_robustness.scores.transfer import matrix_rows, transfer_matrix

    session = load_named_session(args.session, args)
    rows = session_rows(session)
    if not rows:
        raise CommandError(
            f"{session.description} has no transfer scores; run the suite with --transfer-to METRICS "
            "(e.g. --transfer-to niqe,brisque) to score every case's adversarial images with those metrics"
        )
    matrix = transfer_matrix(rows, args.score)
    table = matrix_rows(matrix)
    csv_path = write_csv(table, args.out / "transfer_matrix.csv")
    what = "normalised absolute gain" if args.score == "norm_abs_gain" else "robustness score R"
    png_path = save_matrix_png(matrix, args.out / "transfer_matrix.png", f"transfer: {what} on each target")
    if args.format == "json":
        print(to_json(table))
    elif args.format == "csv":
        print(csv_path.read_text(), end="")
    else:
        print(f"session: {session.description}")
        print(f"{what} on each target (rows: sources, columns: targets; * = the source's own metric)")
        header = ["source", *matrix["targets"]]
        body = [
            [source, *(_cell(v, own) for v, own in zip(values, owns, strict=True))]
            for source, values, owns in zip(matrix["sources"], matrix["values"], matrix["own"], strict=True)
        ]
        for line in format_table(header, body, right=tuple(range(1, len(header)))):
            print(line)
        errors = sorted({str(r["error"]) for r in rows if r.get("error")})
        for error in errors:
            print(f"not scored: {error}")
        print(f"saved: {csv_path}, {png_path}")
    return 0


def _cell(value: float, own: bool) -> str:
    text = number(value, signed=True) if math.isfinite(value) else "n/a"
    return f"{text}*" if own else text
