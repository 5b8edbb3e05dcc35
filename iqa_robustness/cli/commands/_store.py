"""Helpers shared by the subcommands that read the MLflow store: options, tables, CSV/JSON output."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqa_robustness.cli import CommandError
from iqa_robustness.conventions import DEFAULT_EXPERIMENT, default_tracking_uri

_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current folder)"


def add_store_arguments(parser: argparse.ArgumentParser, uri_help: str = _URI_HELP) -> None:
    """``--experiment`` and ``--tracking-uri``, with the defaults the pytest plugin logs to (``uri_help`` says)."""
    parser.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment (default: {DEFAULT_EXPERIMENT})"
    )
    parser.add_argument("--tracking-uri", default=None, help=uri_help)


def open_store(args: argparse.Namespace) -> tuple[Any, str]:
    """The client and URI named by the options; an unreachable or missing store is a CommandError."""
    from iqa_robustness.tracking import TrackingError, open_client

    uri = args.tracking_uri or default_tracking_uri()
    try:
        return open_client(uri, create=False), uri
    except TrackingError as exc:
        raise CommandError(str(exc)) from exc


def number(value: Any, signed: bool = False) -> str:
    """A score for a console table: 5 significant digits, ``-`` when missing."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "-"
    return f"{x:+.5g}" if signed else f"{x:.5g}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int]) -> list[str]:
    """Fixed-width lines; the columns numbered in ``right`` (numbers) are right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{c!s:>{w}}" if i in right else f"{c!s:<{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header)]
    out.append("-" * len(out[0]))
    out.extend(line(r) for r in rows)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Rows as CSV (full float precision; missing and non-finite values empty)."""
    from iqa_robustness.scores.summary import write_summary

    return write_summary([{k: ("" if _plain(v) is None else v) for k, v in row.items()} for row in rows], path)


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a JSON list (NaN becomes null)."""
    return json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows], indent=1)
