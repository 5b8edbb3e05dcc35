"""``iqa-robustness score FILE.csv...``: robustness scores of MSU per-image result CSVs.

Scores as the MSU Metrics Robustness Benchmark (Antsiferova et al., AAAI 2024) computes them,
for each metric the file names state (``<attack>_<metric>_test.csv``), one row per group: each
attack, each universal attack x training set x amplitude, and the aggregates ``all``,
``iterative`` and ``uap`` (see :mod:`iqa_robustness.scores.msu_csv`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMATS = ("table", "csv", "json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="robustness scores of MSU per-image result CSV files",
        description=(
            "Score MSU per-image result CSVs (<attack>_<metric>_test.csv): gains, robustness score, "
            "Wasserstein and energy-distance scores, with 95% Student-t intervals, per attack, per "
            "universal attack x training set x amplitude, and over all/iterative/uap attacks."
        ),
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE.csv", help="MSU result CSV files")
    p.add_argument("--by", choices=["dataset"], default=None, help="split every group by test dataset")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument(
        "--lower-better",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the metric's lower raw values mean better quality (default: from the metric registry "
        "when the metric is known, else higher is better)",
    )
    p.add_argument("--metric", default=None, help="metric name (default: from the file names)")
    p.add_argument(
        "--mos",
        type=Path,
        default=None,
        help="subjective scores (CSV image_name,mos): adds SROCC/PLCC/KROCC before and after the attack "
        "(default: the files' own mos column, if any)",
    )
    p.set_defaults(func=run)


def resolve_lower_better(flag: bool | None, metric: str | None) -> bool:
    """The orientation to score with: the explicit flag, else the registered metric's, else False."""
    if flag is not None:
        return flag
    if metric is None:
        log.info("metric unknown; treating higher raw scores as better (pass --lower-better otherwise)")
        return False
    try:
        from iqa_robustness.metrics import get_spec
    except Exception as exc:  # the registry imports every metric module; scoring must not depend on them
        log.warning("cannot load the metric registry (%s); treating higher %s scores as better", exc, metric)
        return False
    try:
        return bool(get_spec(_registered(metric)).lower_better)
    except (KeyError, ValueError):
        log.warning(
            "metric %r is not registered; treating higher scores as better (pass --lower-better if lower is better)",
            metric,
        )
        return False


def _registered(metric: str) -> str:
    """A defended metric of another session (``jpeg50+niqe``) has its undefended metric's facts: ``niqe``."""
    from iqa_robustness.metrics import get_spec

    try:
        get_spec(metric)
        return metric
    except (KeyError, ValueError):
        from iqa_robustness.defences.base import SEPARATOR

        label, plus, base = metric.partition(SEPARATOR)
        if plus and label and base:
            return base
        raise


def defence_rows(files: Sequence[Any], lower_better_flag: bool | None) -> list[dict[str, Any]]:
    """The defence scores of every file of a defended metric (docs/methodology.md, "Defences"), one row per file."""
    from iqa_robustness.metrics import get_spec
    from iqa_robustness.scores.defences import UNDEFENDED_CLEAR, defence_scores

    out = []
    for f in files:
        if f.metric is None or not any(UNDEFENDED_CLEAR in r for r in f.rows):
            continue
        try:
            score_range = get_spec(_registered(f.metric)).range
        except (KeyError, ValueError):
            log.warning("%s: metric %r is not registered; its defence scores need its range", f.path, f.metric)
            continue
        lower_better = resolve_lower_better(lower_better_flag, f.metric)
        out.append({"file": f.path.name, **defence_scores(f.rows, score_range, lower_better)})
    return out


def split_by_metric(files: Sequence[Any], given: str | None) -> list[tuple[str | None, list[Any]]]:
    """The files grouped by the metric their names state, in name order; ``given`` names them all."""
    if given:
        return [(given, list(files))]
    by_metric: dict[str | None, list[Any]] = {}
    for f in files:
        by_metric.setdefault(f.metric, []).append(f)
    named = sorted(name for name in by_metric if name)
    if None in by_metric and named:
        unnamed = ", ".join(str(f.path) for f in by_metric[None])
        raise ValueError(
            f"cannot tell which metric {unnamed} belongs to (files of {', '.join(named)} are also given); "
            "name files <attack>_<metric>_test.csv or score them separately with --metric"
        )
    return [(name, by_metric[name]) for name in named] or [(None, list(files))]


def columns_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Output columns: ``group``, ``dataset`` when split, then every score key."""
    from iqa_robustness.scores.formulas import MOS_KEYS, RANK_KEYS, SCORE_KEYS

    label = ["group", "dataset"] if rows and "dataset" in rows[0] else ["group"]
    with_mos = bool(rows) and "srocc_clean" in rows[0]
    return [*label, *SCORE_KEYS, *RANK_KEYS, *(MOS_KEYS if with_mos else ())]


def _number(value: float, digits: int = 4) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_table(rows: Sequence[dict[str, Any]], caption: str = "") -> str:
    """Aligned text table; per-image means are shown as ``mean ± half-width`` of the 95% interval."""
    from iqa_robustness.scores.formulas import DISTRIBUTION_SCORES, PER_IMAGE_SCORES, RANK_SCORES

    label = [c for c in columns_of(rows) if c in ("group", "dataset")]
    mos = ("srocc_clean", "srocc_attacked", "plcc_clean", "plcc_attacked") if rows and "srocc_clean" in rows[0] else ()
    header = [*label, "n", *PER_IMAGE_SCORES, *DISTRIBUTION_SCORES, *RANK_SCORES, *mos]
    body: list[list[str]] = []
    for r in rows:
        cells = [str(r[c]) for c in label] + [str(r["n"])]
        for key in PER_IMAGE_SCORES:
            half = (r[f"{key}_ci_high"] - r[f"{key}_ci_low"]) / 2
            cells.append(_number(r[key]) + ("" if math.isnan(half) else f" ± {_number(half)}"))
        cells += [_number(r[key]) for key in DISTRIBUTION_SCORES]
        cells += [_number(r[key]) for key in (*RANK_SCORES, *mos)]
        body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    n_left = len(label)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < n_left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [caption] if caption else []
    lines += [line(header), line(["-" * w for w in widths]), *(line(b) for b in body)]
    return "\n".join(lines) + "\n"


def format_defence_table(rows: Sequence[dict[str, Any]]) -> str:
    """The defence scores, one line per file (gains: |difference| / range; similarity: SSIM + PSNR / 40)."""
    from iqa_robustness.cli.commands._store import format_table as fixed_width
    from iqa_robustness.scores.defences import DEFENCE_SCORES

    columns = [c for c in DEFENCE_SCORES if any(c in r for r in rows)]
    short = [c.replace("_gain", "").replace("both_defended", "both").replace("_per_image", "") for c in columns]
    body = [[str(r["file"]), *(_number(float(r.get(c, math.nan))) for c in columns)] for r in rows]
    lines = fixed_width(["file", *short], body, right=range(1, len(columns) + 1))
    return (
        "\n".join(["defence scores (robust = gain(c, da), nonpurified = gain(c, a), both = gain(dc, da)):", *lines])
        + "\n"
    )


def format_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV with full-precision numbers (``nan`` where an interval is undefined)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = columns_of(rows)
    writer.writerow(cols)
    for r in rows:
        writer.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in cols])
    return buf.getvalue()


def format_csv_by_metric(parts: Sequence[tuple[str | None, bool, Sequence[dict[str, Any]]]]) -> str:
    """CSV of several metrics' groups: the columns of :func:`format_csv` after a ``metric`` column."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = columns_of(parts[0][2])
    writer.writerow(["metric", *cols])
    for metric, _, rows in parts:
        for r in rows:
            writer.writerow([metric or "", *(repr(r[c]) if isinstance(r[c], float) else r[c] for c in cols)])
    return buf.getvalue()


def format_json(rows: Sequence[dict[str, Any]], metric: str | None, lower_better: bool) -> str:
    """``{"metric", "lower_better", "groups": [...]}``; undefined numbers are ``null``."""
    cols = columns_of(rows)
    clean = [_nulls({c: r[c] for c in cols}) for r in rows]
    return json.dumps({"metric": metric, "lower_better": lower_better, "groups": clean}, indent=1) + "\n"


def _nulls(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its undefined numbers (nan, inf) as ``None``: JSON ``null``."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.data.mos import read_mos
    from iqa_robustness.scores.msu_csv import collect_groups, read_msu_csv, score_groups

    files = [read_msu_csv(path) for path in args.files]
    mos = read_mos(args.mos) if args.mos is not None else None
    parts: list[tuple[str | None, bool, list[dict[str, Any]]]] = []
    for metric, metric_files in split_by_metric(files, args.metric):
        lower_better = resolve_lower_better(args.lower_better, metric)
        groups = collect_groups(metric_files, by_dataset=args.by == "dataset", mos=mos)
        parts.append((metric, lower_better, score_groups(groups, lower_better=lower_better)))
    defences = defence_rows(files, args.lower_better)
    if args.format == "json":
        objects = [json.loads(format_json(rows, metric, lb)) for metric, lb, rows in parts]
        if defences:
            objects.append({"defences": [_nulls(r) for r in defences]})
        out = json.dumps(objects[0] if len(objects) == 1 else objects, indent=1) + "\n"
    elif args.format == "csv":
        out = format_csv(parts[0][2]) if len(parts) == 1 else format_csv_by_metric(parts)
    else:
        tables = []
        for metric, lower_better, rows in parts:
            direction = "lower" if lower_better else "higher"
            caption = (
                f"{metric or 'metric'}: {direction} raw scores are better; "
                "± is the half-width of the 95% Student-t interval"
            )
            tables.append(format_table(rows, caption))
        if defences:
            tables.append(format_defence_table(defences))
        out = "\n".join(tables)
    sys.stdout.write(out)
    return 0
