"""The ``iqa-robustness`` console command. Each subcommand lives in ``iqa_robustness/cli/commands/<name>.py``
and exposes ``register(subparsers)``; a new subcommand is one new file."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from . import CommandError, commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iqa-robustness",
        description="Can this quality metric be fooled? Scores, comparisons and benchmarks of adversarial robustness.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO level)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, ValueError) as exc:
        print(f"iqa-robustness {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
