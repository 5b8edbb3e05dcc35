"""``iqa-robustness leaderboard``: the metrics of one logged session ranked by their worst case.

Each metric leads with its worst case (docs/verdict.md): the lowest robustness score R any attack of
the session reached and the largest normalised absolute gain, each with the attack, the data set and
the budget; metrics are ranked by that worst R (higher = more robust). The MSU Metrics Robustness
Benchmark's number (Antsiferova et al., AAAI 2024) stays beside it: R averaged per attack (over
datasets, train sets and amplitudes) and then over attacks, with the mean normalised gain. A defended
metric's worst case and mean count adaptive attacks only. Each metric's verdict (fooled / robust /
evaluation unreliable, with the flags of the evaluation checks) follows the table. Printed, saved as
CSV and drawn as a bar chart.

``--cards DIR`` ranks the metrics of a folder of robustness cards instead (``iqa-robustness card``,
docs/card.md): the same table from the verdicts the cards carry, so cards of one session give the
leaderboard its store gives, and cards collected from several sessions (or repositories) rank together.

``--defences`` ranks, per metric, the defences of a session run with ``--defence`` instead: by the
adaptive robust gain ``|c - d(x_adv)| / range`` averaged over attacks (lower = the defence holds),
beside the non-adaptive one and the share of the credited gain the adaptive attack recovers
(:func:`iqa_robustness.scores.defences.defence_leaderboard`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._sessions import add_fooled_gain_argument
from iqa_robustness.cli.commands._store import add_store_arguments, format_table, number, open_store, to_json, write_csv


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="rank the metrics of a logged session (or a folder of robustness cards) by robustness",
        description="Metrics ranked by their worst case over the attacks (higher = more robust), the mean beside it.",
    )
    add_store_arguments(p)
    p.add_argument("--run", default="latest", help="session run id, git commit (prefix), latest or previous")
    p.add_argument(
        "--cards",
        type=Path,
        default=None,
        metavar="DIR",
        help="rank the metrics of a folder of robustness cards (iqa-robustness card) instead of a logged session",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/leaderboard"),
        help="CSV and PNG folder (default: results/leaderboard)",
    )
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="printed format")
    p.add_argument(
        "--defences",
        action="store_true",
        help="rank each metric's defences (a session run with --defence) by the adaptive robust gain",
    )
    add_fooled_gain_argument(p)
    p.set_defaults(func=run)


def session_verdicts(cases: Sequence[Any], fooled_gain: float | None = None) -> list[Any]:
    """The verdicts (:class:`~iqa_robustness.scores.verdict.MetricVerdict`) of one session's logged cases."""
    from iqa_robustness.scores.verdict import policy_for
    from iqa_robustness.scores.verdict import session_verdicts as verdicts_of
    from iqa_robustness.tracking.verdicts import logged_rows

    return verdicts_of(logged_rows(cases), policy_for(fooled_gain))


def leaderboard(cases: Sequence[Any], fooled_gain: float | None = None) -> list[dict[str, Any]]:
    """Ranked rows (:func:`~iqa_robustness.scores.verdict.verdict_leaderboard`) of one session's logged cases.

    Args:
        cases: :class:`iqa_robustness.tracking.store.LoggedCase` list of one session; cases without scores
            (skipped, errors) do not count.
        fooled_gain: the verdict's threshold (``--fooled-gain``).

    Returns:
        Per metric, best first: ``rank, metric, verdict``, the worst case (``worst_robustness_score`` and
        ``worst_robustness_attack``, ``max_norm_abs_gain`` and ``max_gain_attack``), the MSU mean
        (``robustness_score``, ``norm_abs_gain``), ``n_attacks``, ``n_cases``, ``flags``, ``text`` and
        ``weights_mode``.
    """
    from iqa_robustness.scores.verdict import verdict_leaderboard

    return verdict_leaderboard(session_verdicts(cases, fooled_gain))


def plot_leaderboard(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Horizontal bars of the worst-case robustness score, most robust on top, the mean R marked beside."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no display needed

    shown = [r for r in rows if not math.isnan(r["worst_robustness_score"])]
    fig = Figure(figsize=(6.5, 1.4 + 0.4 * max(len(shown), 1)), dpi=100)
    ax = fig.add_subplot()
    names = [r["metric"] for r in reversed(shown)]
    values = [r["worst_robustness_score"] for r in reversed(shown)]
    bars = ax.barh(names, values, color="tab:blue", label="worst case (lowest R over attacks)")
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=8)
    ax.scatter([r["robustness_score"] for r in reversed(shown)], names, marker="|", s=200, color="black",
               label="mean over attacks (MSU)", zorder=3)  # fmt: skip
    ax.axvline(0.0, color="0.6", linewidth=0.7)
    ax.set_xlabel("robustness score R (higher = more robust)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.margins(x=0.15)
    return _save(fig, path)


def _printed_as_data(args: argparse.Namespace, rows: Sequence[dict[str, Any]], csv_path: Path) -> bool:
    """``--format json`` / ``csv``: the rows printed as data (True); ``table``: nothing printed yet (False)."""
    if args.format == "json":
        print(to_json(rows))
    elif args.format == "csv":
        print(csv_path.read_text(), end="")
    return args.format != "table"


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def defence_rows(cases: Sequence[Any]) -> list[dict[str, Any]]:
    """The defence leaderboard of one session's logged cases (their params name the defence and the mode)."""
    from iqa_robustness.scores.defences import defence_leaderboard, defence_table

    flat = [
        {
            "metric": c.metric,
            "attack": c.attack,
            "dataset": c.dataset,
            "train_dataset": c.train_dataset,
            "amplitude": c.amplitude,
            "status": c.status,
            "defence": c.params.get("defence_label", ""),
            "base_metric": c.params.get("base_metric", ""),
            "defence_mode": c.params.get("defence_mode", ""),
            **c.metrics,
        }
        for c in cases
    ]
    return defence_leaderboard(defence_table(flat))


def plot_defences(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Paired bars per metric x defence: the robust gain under the adaptive and the non-adaptive attack."""
    from matplotlib.figure import Figure

    labels = [f"{r['metric']} · {r['defence']}" for r in reversed(rows)]
    fig = Figure(figsize=(7, 1.4 + 0.45 * max(len(rows), 1)), dpi=100)
    ax = fig.add_subplot()
    y = range(len(labels))
    ax.barh([i + 0.2 for i in y], [r["adaptive_robust_abs_gain"] for r in reversed(rows)], 0.4, label="adaptive")
    ax.barh([i - 0.2 for i in y], [r["nonadaptive_robust_abs_gain"] for r in reversed(rows)], 0.4, label="non-adaptive")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.set_xlabel("robust gain |c - d(x_adv)| / range, mean over attacks (lower = the defence holds)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _run_defences(args: argparse.Namespace, session: Any, cases: Sequence[Any]) -> int:
    from iqa_robustness.tracking import describe_session

    rows = defence_rows(cases)
    if not rows:
        raise CommandError(
            f"session {session.info.run_id} has no defended metric: run the suite with --defence "
            "(e.g. --defence none,jpeg,median) to rank defences"
        )
    csv_path = write_csv(rows, args.out / "defences_leaderboard.csv")
    png_path = plot_defences(rows, args.out / "defences_leaderboard.png", f"session {session.info.run_id[:8]}")
    if not _printed_as_data(args, rows, csv_path):
        print(f"session {describe_session(session)}")
        print("per metric, defences ranked by the adaptive robust gain (lower = the defence holds)")
        header = ["rank", "metric", "defence", "robust A", "robust NA", "recovered", "clean SRC", "similar", "attacks"]
        body = [
            [
                str(r["rank"]),
                r["metric"],
                r["defence"],
                number(r["adaptive_robust_abs_gain"]),
                number(r["nonadaptive_robust_abs_gain"]),
                number(r["recovered_fraction"]),
                number(r["clean_consistency"]),
                number(r["similarity"]),
                str(r["n_attacks"]),
            ]
            for r in rows
        ]
        for line in format_table(header, body, right=(0, 3, 4, 5, 6, 7, 8)):
            print(line)
        print(f"saved: {csv_path}, {png_path}")
    return 0


def card_leaderboard(folder: Path, fooled_gain: float | None = None) -> tuple[list[dict[str, Any]], str]:
    """Ranked rows of the verdicts a folder of robustness cards carries, and a line naming their sessions.

    Without ``fooled_gain`` each card's verdict stands as written; with it, the cards' worst cases and flags
    are judged again at that threshold (:meth:`~iqa_robustness.scores.verdict.MetricVerdict.judged`).

    Raises:
        CommandError: no card in the folder, an invalid card, or two cards of one metric.
    """
    from iqa_robustness.report.card import CardError, card_verdicts, read_cards
    from iqa_robustness.scores.verdict import policy_for, verdict_leaderboard

    try:
        cards = read_cards(folder)
    except CardError as exc:
        raise CommandError(str(exc)) from exc
    policy = policy_for(fooled_gain) if fooled_gain is not None else None
    sessions = sorted({str(c["session"].get("id") or c["session"].get("ref")) for c in cards})
    source = f"{len(cards)} card(s) in {folder} (session {', '.join(sessions)})"
    return verdict_leaderboard(card_verdicts(cards, policy)), source


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.tracking import TrackingError, describe_session, find_session, load_session_cases

    if args.cards is not None:
        if args.defences:
            raise CommandError("--defences ranks a session's defences from its cases; leave out --cards")
        rows, source = card_leaderboard(args.cards, args.fooled_gain)
        title = f"cards in {args.cards.name or args.cards}"
    else:
        client, uri = open_store(args)
        try:
            session = find_session(client, args.experiment, args.run, uri)
            cases = load_session_cases(client, session)
        except TrackingError as exc:
            raise CommandError(str(exc)) from exc
        if args.defences:
            return _run_defences(args, session, cases)
        rows, source = leaderboard(cases, args.fooled_gain), f"session {describe_session(session)}"
        title = f"session {session.info.run_id[:8]}"
        if not any(r["n_cases"] for r in rows):
            raise CommandError(f"session {session.info.run_id} has no case with a robustness score")
    random = any("random" in r["weights_mode"].split(",") for r in rows)
    if random:
        title += " - random weights: not benchmark numbers"
    csv_path = write_csv(rows, args.out / "leaderboard.csv")
    png_path = plot_leaderboard(rows, args.out / "leaderboard.png", title)
    if not _printed_as_data(args, rows, csv_path):
        print(source)
        if random:
            print("random weights in this session: these are not benchmark numbers")
        print("ranked by the worst case over the attacks (lowest R); the MSU mean over attacks beside it")
        header = ["rank", "metric", "worst R", "by", "max gain", "by", "mean R", "mean gain", "attacks", "cases",
                  "verdict", "weights"]  # fmt: skip
        body = [
            [
                str(r["rank"]),
                r["metric"],
                number(r["worst_robustness_score"]),
                r["worst_robustness_attack"],
                number(r["max_norm_abs_gain"]),
                r["max_gain_attack"],
                number(r["robustness_score"]),
                number(r["norm_abs_gain"]),
                str(r["n_attacks"]),
                str(r["n_cases"]),
                r["verdict"],
                r["weights_mode"],
            ]
            for r in rows
        ]
        for line in format_table(header, body, right=(0, 2, 4, 6, 7, 8, 9)):
            print(line)
        for r in rows:
            print(f"{r['metric']}: {r['text']}")
        print(f"saved: {csv_path}, {png_path}")
    return 0
