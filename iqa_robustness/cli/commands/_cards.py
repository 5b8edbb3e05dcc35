"""Robustness cards of a session named on the command line, or read from card files (docs/card.md).

``card`` writes them; ``leaderboard --cards`` ranks a folder of them; ``compare`` puts two sets of
cards side by side, read from files or made from two sessions on the fly.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from typing import Any

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._sessions import NamedSession, load_named_session


def session_policy(session: NamedSession, fooled_gain: float | None) -> Any:
    """The verdicts' policy: ``--fooled-gain`` when given, else the one the session ran with (a folder records
    its ``--fooled-gain``), else the default."""
    from iqa_robustness.scores.verdict import parse_fooled_gain, policy_for

    if fooled_gain is None:
        try:
            fooled_gain = parse_fooled_gain(session.tags.get("fooled_gain", ""))
        except ValueError:  # not recorded ("None"), or a store session: the default
            fooled_gain = None
    return policy_for(fooled_gain)


def session_facts(session: NamedSession) -> dict[str, Any]:
    """Where the session's numbers come from, for its cards: its id, how it was named, folder or store, times."""
    facts: dict[str, Any] = {"ref": session.ref, "source": "results folder" if session.run is None else "mlflow"}
    if session.run is not None:
        info = session.run.info
        facts.update(id=session.tags.get("session_id") or info.run_id, mlflow_run_id=info.run_id)
        for key, millis in (("started", info.start_time), ("finished", info.end_time)):
            if millis:
                facts[key] = dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc).isoformat(timespec="seconds")
    return facts


def session_cards(session: NamedSession, fooled_gain: float | None = None) -> list[dict[str, Any]]:
    """The cards of every metric of a session, made from its logged cases (nothing is recomputed)."""
    from iqa_robustness.report.card import build_cards
    from iqa_robustness.scores.verdict import session_verdicts
    from iqa_robustness.tracking.verdicts import logged_rows

    verdicts = session_verdicts(logged_rows(session.cases), session_policy(session, fooled_gain))
    return build_cards(verdicts, session.cases, session.tags, session_facts(session))


def cards_of(ref: str, args: argparse.Namespace, metrics: Sequence[str] = (), store: Any = None) -> list[dict]:
    """The cards ``ref`` names: a card file or a folder of cards as they are, else a session's, made now.

    Raises:
        CommandError: no cards there, an invalid card, or no case of ``metrics``; the message says which.
    """
    from iqa_robustness.report.card import CardError, is_card_source, read_cards

    if is_card_source(ref):
        try:
            cards = read_cards(ref)
        except CardError as exc:
            raise CommandError(str(exc)) from exc
    else:
        cards = session_cards(load_named_session(ref, args, metrics=metrics, store=store), args.fooled_gain)
    return [c for c in cards if not metrics or c["metric"]["name"] in metrics]
