"""``iqa-robustness compare A B``: two sessions side by side, case by case, with deltas, and the regression gate.

A and B are session runs in the MLflow store: a run id, a git commit (or a prefix of one: the
latest session of that commit), ``latest``, ``previous`` or a branch name (that branch's latest
session), or results folders (a pytest ``--results-dir``, a ``merge --out``). For every metric x
attack x dataset [x train set x amplitude] the key scores of the MSU benchmark (Antsiferova et
al., AAAI 2024) are shown for A and B with delta = B - A, printed and saved as CSV.

With ``--fail-on-regression`` the command exits 1 when B is less robust than A on any case both
ran, by the paired per-image test of :mod:`iqa_robustness.scores.regression`; the gate's table
names each case's mean drop, its interval and the test's confidence. Cases in one session only,
and cases whose settings differ (image size, images, seed, weights), are listed, not failed.

A and B may also be robustness cards (``iqa-robustness card``, docs/card.md): a card file or a folder
of cards. Then, and after the case table of two sessions (whose cards are made on the fly), the
command lists the card-level changes per metric (:mod:`iqa_robustness.report.card_changes`): the
verdict, the worst case per budget and the mean, flags added or removed, the certified bound.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._cards import cards_of, session_cards
from iqa_robustness.cli.commands._sessions import (
    METRIC_HELP,
    NamedSession,
    add_fooled_gain_argument,
    is_results_folder,
    load_named_session,
    metric_list,
)
from iqa_robustness.cli.commands._store import add_store_arguments, format_table, number, open_store, to_json, write_csv
from iqa_robustness.conventions import dataset_slug
from iqa_robustness.scores.regression import DEFAULT_ALPHA, GATED_SCORES, GateRule, compare_case

COMPARED_SCORES = (
    "norm_abs_gain",
    "robustness_score",
    "wasserstein_score",
    "energy_distance_score",
    "spearman",
    "abs_gain",
    "psnr",
    "seconds_per_image",
)
#: compared too when a session has subjective scores
MOS_COMPARED = ("srocc_clean", "srocc_attacked")
#: compared too when a session has defended metrics (``--defence``): docs/methodology.md, "Defences"
DEFENCE_COMPARED = ("robust_abs_gain", "nonpurified_abs_gain", "clean_consistency", "similarity")
KEY_COLUMNS = ("metric", "attack", "dataset", "train_dataset", "amplitude")
#: case params that must agree for two sessions' numbers of a case to be comparable
COMPARABLE_PARAMS = ("image_size", "max_images", "max_frames", "seed", "image_shard")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two logged sessions (run ids, git commits, latest/previous) case by case",
        description="Side-by-side scores of two sessions from the MLflow store, with delta = B - A.",
    )
    p.add_argument(
        "a",
        metavar="A",
        help="session run id, git commit (prefix), 'latest', 'previous', branch, results folder, card file or folder",
    )
    p.add_argument("b", metavar="B", help="the same kinds of reference; deltas are B - A")
    add_store_arguments(p)
    p.add_argument("--metric", default=None, help=METRIC_HELP)
    p.add_argument("--out", type=Path, default=Path("results/compare"), help="CSV folder (default: results/compare)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="printed format")
    add_fooled_gain_argument(p)
    gate = p.add_argument_group("regression gate")
    gate.add_argument(
        "--fail-on-regression", action="store_true", help="exit 1 when B is less robust than A on a shared case"
    )
    gate.add_argument(
        "--gate-score",
        choices=sorted(GATED_SCORES),
        default="robustness_score",
        help="per-image score tested (default: robustness_score)",
    )
    gate.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="mean drop tolerated, in the score's units (default: 0.05 for R, 0.01 for norm_abs_gain)",
    )
    gate.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="level of the one-sided test (default: 0.05)")
    gate.add_argument(
        "--missing-ok",
        action="store_true",
        help="when A names no session (a target branch that never ran the metric), say so and exit 0",
    )
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


def settings_difference(a: Any, b: Any) -> str:
    """``image_size 160 vs 128; ...`` for the params of two runs of a case that must agree, else ``""``."""
    diffs = [
        f"{k} {a.params.get(k, '-')} vs {b.params.get(k, '-')}"
        for k in COMPARABLE_PARAMS
        if a.params.get(k, "") != b.params.get(k, "")
    ]
    if a.weights_mode != b.weights_mode:
        diffs.append(f"weights {a.weights_mode} vs {b.weights_mode}")
    return "; ".join(diffs)


def gate_cases(session_a: NamedSession, session_b: NamedSession, rule: GateRule) -> list[dict]:
    """One gate row per case key of A or B: the verdict (``regressed``, ``ok``, or why it was not tested)."""
    by_a = {c.key: c for c in session_a.cases}
    by_b = {c.key: c for c in session_b.cases}
    rows = []
    for key in sorted(set(by_a) | set(by_b)):
        row: dict[str, Any] = dict(zip(KEY_COLUMNS, key, strict=True))
        row.update(score=rule.score, n=0, a=math.nan, b=math.nan, drop=math.nan, drop_low=math.nan)
        row.update(drop_high=math.nan, bound=math.nan, confidence=math.nan, regressed=False, note="")
        a, b = by_a.get(key), by_b.get(key)
        if a is None or b is None:
            row["verdict"] = "B only" if a is None else "A only"
        elif a.status in ("error", "skipped") or b.status in ("error", "skipped"):
            row["verdict"] = "not compared"
            row["note"] = f"status {a.status} in A, {b.status} in B"
        elif difference := settings_difference(a, b):
            row["verdict"], row["note"] = "not comparable", difference
        else:
            v = compare_case(session_a.rows(a), session_b.rows(b), a.lower_better, rule)
            row.update(n=v.n, a=v.a, b=v.b, drop=v.drop, drop_low=v.drop_low, drop_high=v.drop_high, bound=v.bound)
            row.update(confidence=v.confidence, regressed=v.regressed, note=v.note)
            row["verdict"] = "REGRESSED" if v.regressed else ("not tested" if not math.isfinite(v.bound) else "ok")
        rows.append(row)
    return rows


def gate_lines(rows: Sequence[dict]) -> list[str]:
    """The gate's table: one line per case, regressions first."""
    with_train = any(r["train_dataset"] for r in rows)
    header = ["verdict", "metric", "attack", "dataset", *(["train"] if with_train else []), "amp", "n", "A", "B"]
    header += ["drop", "95% CI", "confidence", "note"]
    order = {"REGRESSED": 0, "ok": 1}
    body = []
    for r in sorted(rows, key=lambda r: order.get(r["verdict"], 2)):
        ident = [r["verdict"], r["metric"], r["attack"], dataset_slug(r["dataset"])]
        if with_train:
            ident.append(dataset_slug(r["train_dataset"]) or "-")
        ident.append(r["amplitude"] or "-")
        interval = f"[{number(r['drop_low'], signed=True)}, {number(r['drop_high'], signed=True)}]"
        confidence = f"{100 * r['confidence']:.1f}%" if math.isfinite(r["confidence"]) else "-"
        cells = [str(r["n"]), number(r["a"]), number(r["b"]), number(r["drop"], signed=True), interval, confidence]
        body.append([*ident, *cells, r["note"]])
    return format_table(header, body, right=range(len(header) - 7, len(header) - 1))


def _card_rows(a: Sequence[dict], b: Sequence[dict], args: argparse.Namespace, stem: str) -> tuple[list, Path]:
    """The card-level changes from ``a`` to ``b``, saved as ``cards_<stem>.csv``."""
    from iqa_robustness.report.card_changes import card_changes

    rows = card_changes(a, b)
    columns = {"metric": "", "change": "", "where": "", "a": "", "b": "", "delta": math.nan, "detail": ""}
    return rows, write_csv(rows or [columns], args.out / f"cards_{stem}.csv")


def _print_card_changes(rows: Sequence[dict], path: Path) -> None:
    from iqa_robustness.report.card_changes import changes_lines

    print(f"card-level changes, A -> B ({len(rows)}; docs/card.md):" if rows else "cards: no card-level change")
    for line in changes_lines(rows):
        print(f"  {line}")
    print(f"saved: {path}")


def _compare_session_cards(a: NamedSession, b: NamedSession, args: argparse.Namespace, stem: str) -> None:
    """The card-level changes of two sessions, after their case table; a card that cannot be made is a note."""
    from iqa_robustness.report.card import CardError

    try:
        cards = [session_cards(s, args.fooled_gain) for s in (a, b)]
    except CardError as exc:
        print(f"cards: not compared ({exc})")
        return
    _print_card_changes(*_card_rows(*cards, args, stem))


def run_cards(args: argparse.Namespace, metrics: Sequence[str]) -> int:
    """``compare`` of two sets of robustness cards (either side a card file, a folder of cards, or a session)."""
    if args.fail_on_regression:
        raise CommandError(
            "--fail-on-regression tests the per-image scores of two sessions; cards hold none: give two sessions"
        )
    store = None
    if not all(is_results_folder(ref) or Path(ref).is_file() for ref in (args.a, args.b)):
        store = open_store(args)
    cards = [cards_of(ref, args, metrics, store) for ref in (args.a, args.b)]
    for ref, found in zip((args.a, args.b), cards, strict=True):
        if not found:
            raise CommandError(f"{ref} has no card" + (f" of metric(s) {args.metric}" if metrics else ""))
    stem = "_".join(Path(ref).name.removesuffix(".json") or "cards" for ref in (args.a, args.b))
    rows, path = _card_rows(*cards, args, stem)
    if args.format == "json":
        print(to_json(rows))
    elif args.format == "csv":
        print(path.read_text(), end="")
    else:
        print(f"A = {args.a} ({len(cards[0])} card(s))")
        print(f"B = {args.b} ({len(cards[1])} card(s))")
        _print_card_changes(rows, path)
    return 0


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.report.card import is_card_source

    metrics = metric_list(args.metric)
    if any(is_card_source(ref) for ref in (args.a, args.b)):
        return run_cards(args, metrics)
    rule = GateRule(args.gate_score, args.tolerance, args.alpha)
    store = None
    if not all(is_results_folder(ref) for ref in (args.a, args.b)):
        store = open_store(args)
    try:
        session_a = load_named_session(args.a, args, metrics=metrics, store=store)
    except CommandError as exc:
        if not args.missing_ok:
            raise
        print(f"nothing to compare with: {exc}")
        print("--missing-ok: no regression can be shown without a session A; passing")
        return 0
    session_b = load_named_session(args.b, args, metrics=metrics, store=store)
    scores = COMPARED_SCORES
    if any("srocc_attacked" in c.metrics for c in (*session_a.cases, *session_b.cases)):
        scores = (*COMPARED_SCORES, *MOS_COMPARED)  # sessions with subjective scores
    if any("robust_abs_gain" in c.metrics for c in (*session_a.cases, *session_b.cases)):
        scores = (*scores, *DEFENCE_COMPARED)  # sessions with defended metrics
    rows = compare_cases(session_a.cases, session_b.cases, scores)
    if not rows:
        raise CommandError(
            "neither session has case runs to compare" + (f" of metric(s) {args.metric}" if metrics else "")
        )
    stem = f"{session_a.label}_{session_b.label}"
    path = write_csv(rows, args.out / f"compare_{stem}.csv")
    gate = gate_cases(session_a, session_b, rule) if args.fail_on_regression else []
    regressed = [r for r in gate if r["regressed"]]
    if args.format == "json":
        print(to_json(rows + gate))
    elif args.format == "csv":
        print(path.read_text(), end="")
    else:
        print(f"A = {session_a.description}")
        print(f"B = {session_b.description}")
        print("delta = B - A; gains > 0 mean the metric was fooled, higher R means more robust")
        only = [r for r in rows if r["present"] != "both"]
        if only:
            print(f"{len(only)} case(s) in one session only (their other side shows '-')")
        for line in table_lines(rows, scores):
            print(line)
        print(f"saved: {path}")
        _compare_session_cards(session_a, session_b, args, stem)
    if gate:
        lines = [f"regression gate: {rule.describe()}", *gate_lines(gate)]
        if regressed:
            lines.append(f"{len(regressed)} case(s) REGRESSED (B less robust than A):")
            lines += [
                f"  {r['metric']} x {r['attack']} x {dataset_slug(r['dataset'])}"
                + (f" @ {r['amplitude']}" if r["amplitude"] else "")
                + f": {rule.score} {number(r['a'])} -> {number(r['b'])} (drop {number(r['drop'], signed=True)}, "
                f"{100 * r['confidence']:.1f}% confidence over {r['n']} images)"
                for r in regressed
            ]
        else:
            tested = sum(r["verdict"] == "ok" for r in gate)
            lines.append(f"no regression: {tested} case(s) tested, {len(gate) - tested} listed only")
        write_csv(gate, args.out / f"gate_{stem}.csv")
        text = args.out / f"gate_{stem}.txt"
        text.write_text("\n".join([f"A = {session_a.description}", f"B = {session_b.description}", *lines]) + "\n")
        if args.format == "table":
            print("\n".join(lines))
        print(f"gate: {text}", file=sys.stderr if args.format != "table" else sys.stdout)
    return 1 if regressed else 0
