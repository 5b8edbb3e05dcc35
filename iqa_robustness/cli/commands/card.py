"""``iqa-robustness card [SESSION] [--metric M] [--out DIR]``: a robustness card per metric of a session.

SESSION is a results folder (a pytest ``--results-dir``, a ``merge --out``) or a session in the MLflow
store (run id, commit, ``latest`` (the default), ``previous``, branch). For every metric (or those of
``--metric``) the command writes into DIR, named after the metric:

- ``<metric>.card.json``: the card, checked against its published schema
  (``iqa_robustness/schemas/robustness-card-1.json``) before it is written;
- ``<metric>.card.md``: the card as a page to read;
- ``<metric>.badge.svg``: a badge for a README (``robust at 4/255``, ``fooled at 2/255: norm. gain 3.2``,
  ``evaluation unreliable``).

docs/card.md describes every field, the badge and how to use it; the verdict inside is docs/verdict.md's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._cards import session_cards
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
        "card",
        help="write a robustness card per metric of a session (JSON with a schema, Markdown, an SVG badge)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_session_argument(p)
    p.add_argument("--metric", default=None, help=METRIC_HELP)
    p.add_argument("--out", type=Path, default=Path("results/cards"), help="folder written (default: results/cards)")
    add_fooled_gain_argument(p)
    add_store_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.report.card import write_card

    metrics = metric_list(args.metric)
    session = load_named_session(args.session, args, metrics=metrics)
    if not session.cases:
        if metrics:
            raise CommandError(
                f"{session.description} has no case of {', '.join(metrics)}; leave out --metric to see its metrics"
            )
        raise CommandError(f"{session.description} has no cases")
    cards = session_cards(session, args.fooled_gain)
    print(f"session: {session.description}")
    for card in cards:
        paths = write_card(card, args.out)
        print(f"{card['metric']['name']}: {card['verdict']['text']}")
        print(f"  card: {paths['json']} (valid robustness-card-1)")
        print(f"  summary: {paths['markdown']}")
        print(f"  badge: {paths['badge']} ({card['badge']['message']})")
    return 0
