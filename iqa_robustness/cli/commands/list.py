"""``iqa-robustness list metrics|attacks|datasets|defences``: what the registries hold, with their declared facts."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered metrics, attacks, datasets or defences")
    p.add_argument("what", choices=["metrics", "attacks", "datasets", "defences"])
    p.add_argument("pattern", nargs="?", default=None, help="glob or comma list (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "metrics":
        from iqa_robustness.metrics import get_spec, list_metrics

        for name in list_metrics(args.pattern):
            s = get_spec(name)
            direction = "lower-better" if s.lower_better else "higher-better"
            grad = "" if s.differentiable else " non-differentiable"
            print(f"{name:24s} {s.kind:9s} {direction:13s} bounds={s.bounds} source={s.source}{grad}")
        _say_uninstalled(args.pattern)
    elif args.what == "defences":
        from iqa_robustness.defences import defence_class, list_defences

        for name in list_defences():
            cls = defence_class(name)
            facts = ("differentiable" if cls.differentiable else "BPDA") + (", random (EoT)" if cls.random else "")
            aliases = f" (also {', '.join(cls.aliases)})" if cls.aliases else ""
            print(f"{name:16s} {facts:28s} {cls.description}{aliases}")
            fields = ", ".join(f"{k}={_default(v)}" for k, v in cls.defaults().items())
            print(f"{'':16s} {fields or 'no parameters'}")
    elif args.what == "datasets":
        from iqa_robustness.data.registry import dataset_info, list_datasets

        for kind in ("images", "clips"):
            for name in list_datasets(kind):
                print(f"{name:16s} {kind:7s} {dataset_info(name).description}")
    else:
        from iqa_robustness.attacks import attack_class, list_attacks
        from iqa_robustness.attacks.budget import describe_budgets
        from iqa_robustness.attacks.presets import PRESETS_FILE

        for name in list_attacks(args.pattern):
            cls = attack_class(name)
            budget = describe_budgets(cls.budget)
            print(f"{name:16s} family={cls.family:10s} universal={cls.universal!s:5s} budget: {budget}")
            fields = ", ".join(f"{k}={_default(v)}" for k, v in cls.defaults().items())
            print(f"{'':16s} {fields}")
            if cls.presets is not None:  # what --eps sets: the follow-up benchmark's calibrated values
                print(f"{'':16s} --eps presets: {cls.presets.describe()} (the benchmark's {PRESETS_FILE})")
    return 0


def _say_uninstalled(pattern: str | None) -> None:
    """On stderr: how many metrics of ``pattern`` need a library that is not installed, and the command."""
    from iqa_robustness.metrics import get_spec, list_metrics
    from iqa_robustness.metrics._libraries import missing_library

    waiting: dict[str, list[str]] = {}
    for name in list_metrics(pattern, uninstalled=True):
        library = missing_library(get_spec(name).source)
        if library is not None:
            waiting.setdefault(library.install, []).append(name)
    for install, names in waiting.items():
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        print(f"not installed: {len(names)} more metrics ({shown}): {install}", file=sys.stderr)


def _default(value: object) -> str:
    """A default as ``--attack`` would take it: floats to 6 significant digits, strings bare."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.6g}" if isinstance(value, float) else str(value)
