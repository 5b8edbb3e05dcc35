"""The MSU per-image result CSV: read, write, and group rows the way the benchmark scores them.

The interchange format of the MSU Metrics Robustness Benchmark (Antsiferova et al., AAAI 2024):
one row per test image with the metric's raw clear and attacked values and the distortion the
attack caused. Two layouts, as the benchmark writes them (``methods/utils/evaluate.py``):

* image-specific attacks: ``image_name,test_dataset,clear,attacked,rel_gain,psnr,ssim,mse``
* universal attacks: ``image_name,train_dataset,test_dataset,clear,attacked,amplitude,rel_gain,
  psnr,ssim,mse`` (one row per image, training set and amplitude).

``rel_gain`` is ``attacked / clear`` in both (``inf`` when ``|clear| < 1e-3``). Files are named
``<attack>_<metric>_test.csv``; attack names contain dashes, never underscores.

A certify case's rows (docs/certify.md) add the certificate's columns
(:data:`~iqa_robustness.scores.certificate.CERTIFY_COLUMNS`): ``clear`` and ``attacked`` are then the
smoothed metric's scores of the clean image and of the attacked image that moved it most.

An image this suite skipped (too small for the metric, unreadable, a NaN clean score) is a row
with ``nan`` measurements and its reason in a trailing ``skip_reason`` column. The column is only
written when some row has a reason, so a file without skipped images keeps the benchmark's layout
byte for byte; skipped rows are read back but never scored.

Grouping follows the benchmark's ``collect_results``/``evaluate_robustness``: one group per
image-specific attack; universal results per attack x training set x amplitude, named
``<attack>_<train set>_amp<amplitude>`` (the attack ``uap`` is labelled ``default-uap``); the
pooled rows of each universal attack; and the aggregates ``all``, ``iterative`` (non-universal)
and ``uap`` (universal). Each group is scored on its own pooled rows, so the min-max scaling of an
aggregate is fitted on the whole aggregate.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqa_robustness.scores.certificate import CERTIFIED_LOWER, CERTIFY_COLUMNS, CERTIFY_TEXT_COLUMNS
from iqa_robustness.scores.defences import DEFENCE_COLUMNS, DRAW_PREFIX, UNDEFENDED_CLEAR
from iqa_robustness.scores.formulas import group_scores
from iqa_robustness.scores.rows import SKIP_REASON, is_skipped

log = logging.getLogger(__name__)

IMAGE_COLUMNS: tuple[str, ...] = (
    "image_name",
    "test_dataset",
    "clear",
    "attacked",
    "rel_gain",
    "psnr",
    "ssim",
    "mse",
)
#: The benchmark's column order for universal attacks (``run_uap``).
UNIVERSAL_COLUMNS: tuple[str, ...] = (
    "image_name",
    "train_dataset",
    "test_dataset",
    "clear",
    "attacked",
    "amplitude",
    "rel_gain",
    "psnr",
    "ssim",
    "mse",
)
NUMERIC_COLUMNS = frozenset({"clear", "attacked", "amplitude", "rel_gain", "psnr", "ssim", "mse", "mos"})
#: the optional column of subjective scores (ours: the benchmark's layout has none)
MOS = "mos"
#: Test-set spellings merged when splitting by dataset, as the benchmark's demo scoring does.
DATASET_ALIASES: Mapping[str, str] = {"NIPS2017": "NIPS"}
#: Aggregate group names.
AGGREGATES: tuple[str, ...] = ("all", "iterative", "uap")


@dataclass
class ResultFile:
    """The rows of one MSU result CSV and what its name says.

    Attributes:
        rows: per-image dicts with the layout's columns; numbers as floats; a file with the
            ``skip_reason`` column gives every row that key (empty on a scored row).
        universal: True for the universal layout (``train_dataset``, ``amplitude``).
        attack: attack name (from the file name, or given); used to group rows.
        metric: metric name from the file name, if it follows ``<attack>_<metric>_test.csv``.
        path: the file read, if any.
    """

    rows: list[dict[str, Any]]
    universal: bool
    attack: str
    metric: str | None = None
    path: Path | None = None


@dataclass(frozen=True, eq=False)
class ScoreGroup:
    """Clear and attacked raw values of one scored group."""

    name: str
    clear: np.ndarray
    attacked: np.ndarray
    dataset: str | None = None
    universal: bool = False
    mos: np.ndarray | None = None  # subjective scores per image (nan where unknown), when the rows have them

    @property
    def n(self) -> int:
        return int(self.clear.size)


def parse_result_name(path: str | Path) -> tuple[str | None, str | None]:
    """``(attack, metric)`` from an MSU file name ``<attack>_<metric>_test.csv``, else ``(None, None)``.

    >>> parse_result_name("results/korhonen-et-al_maniqa_test.csv")
    ('korhonen-et-al', 'maniqa')
    """
    stem = Path(path).name.removesuffix(".csv")
    if not stem.endswith("_test"):
        return None, None
    attack, _, metric = stem.removesuffix("_test").partition("_")
    if not attack or not metric:
        return None, None
    return attack, metric


def _parse_number(text: str, column: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: column {column!r} is not a number: {text!r}") from None


def _decoded_lines(fh: Iterable[bytes], path: Path) -> Iterator[str]:
    """UTF-8 lines (a leading byte-order mark dropped), so a decoding error can name its line."""
    for number, raw in enumerate(fh, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not a UTF-8 text file ({exc.reason})") from None


def read_msu_csv(path: str | Path, attack: str | None = None, metric: str | None = None) -> ResultFile:
    """Read one MSU per-image result CSV (either layout).

    Args:
        path: the CSV file.
        attack: attack name; default from the file name (``<attack>_<metric>_test.csv``), else the
            file's stem.
        metric: metric name; default from the file name, else None.

    Raises:
        ValueError: naming the file and line, for an unreadable or empty file, missing columns,
            a row with too few or too many fields, or a value that is not a number.
    """
    path = Path(path)
    name_attack, name_metric = parse_result_name(path)
    attack = attack or name_attack or path.stem
    metric = metric or name_metric
    rows: list[dict[str, Any]] = []
    line = 0  # last line read whole; errors name the next one
    try:
        with path.open("rb") as fh:
            reader = csv.reader(_decoded_lines(fh, path))
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}, line 1: empty file; expected an MSU result CSV header")
            header = [h.strip() for h in header]
            line = reader.line_num
            universal = "train_dataset" in header or "amplitude" in header
            layout = UNIVERSAL_COLUMNS if universal else IMAGE_COLUMNS
            missing = [c for c in layout if c not in header]
            if missing:
                kind = "universal" if universal else "image-specific"
                raise ValueError(
                    f"{path}, line 1: missing column(s) {', '.join(missing)}; the {kind} MSU layout is "
                    f"{','.join(layout)}"
                )
            draws = tuple(c for c in header if c.startswith(DRAW_PREFIX))
            extra = tuple(c for c in (MOS, *DEFENCE_COLUMNS, *draws, *CERTIFY_COLUMNS, SKIP_REASON) if c in header)
            index = {c: header.index(c) for c in (*layout, *extra)}
            for fields in reader:
                line = reader.line_num
                if not fields:
                    continue
                where = f"{path}, line {line}"
                if len(fields) > len(header):
                    raise ValueError(f"{where}: {len(fields)} fields but the header has {len(header)}")
                row: dict[str, Any] = {}
                for col, i in index.items():
                    text = fields[i].strip() if i < len(fields) else None
                    if text is None and col == SKIP_REASON:
                        text = ""  # the last column of a scored row may be left off
                    if text is None:
                        raise ValueError(f"{where}: missing value for column {col!r} (too few fields)")
                    numeric = col in NUMERIC_COLUMNS or col in DEFENCE_COLUMNS or col in draws
                    numeric = numeric or (col in CERTIFY_COLUMNS and col not in CERTIFY_TEXT_COLUMNS)
                    row[col] = _parse_number(text, col, where) if numeric else text
                rows.append(row)
    except csv.Error as exc:
        raise ValueError(f"{path}, line {line + 1}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not rows:
        raise ValueError(f"{path}, line 2: no data rows after the header")
    log.debug("read %d rows of %s (attack=%s, metric=%s)", len(rows), path, attack, metric)
    return ResultFile(rows=rows, universal=universal, attack=attack, metric=metric, path=path)


def _format(value: Any) -> str:
    if value is None:
        return "nan"
    if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
        return repr(float(value))  # shortest text that reads back as the same float
    return str(value)


def _msu_rel_gain(clear: float, attacked: float) -> float:
    return attacked / clear if abs(clear) >= 1e-3 else math.inf


def write_msu_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], universal: bool | None = None) -> Path:
    """Write per-image rows as an MSU result CSV.

    Args:
        path: destination (parent folders are created).
        rows: dicts with the layout's columns (extra keys are ignored). A missing ``rel_gain`` is
            filled as the benchmark does: ``attacked / clear``, ``inf`` when ``|clear| < 1e-3``;
            missing distortion values are written as ``nan``.
        universal: force the layout; default: universal when any row has ``train_dataset`` or
            ``amplitude``. A ``mos`` column (subjective scores) is added when any row has one,
            the defence columns (:data:`~iqa_robustness.scores.defences.DEFENCE_COLUMNS`) for a
            defended metric's rows, then a random defence's draw columns (``draw_*``), the certificate's
            columns for a certify case's, and a trailing ``skip_reason`` column when any row has one.

    Returns:
        The path written.
    """
    rows = list(rows)
    if universal is None:
        universal = any(r.get("train_dataset") is not None or r.get("amplitude") is not None for r in rows)
    layout = UNIVERSAL_COLUMNS if universal else IMAGE_COLUMNS
    required = [c for c in layout if c not in ("rel_gain", "psnr", "ssim", "mse")]
    if any(MOS in r for r in rows):
        layout = (*layout, MOS)
    if any(UNDEFENDED_CLEAR in r for r in rows):  # a defended metric's case: what the defence scores need
        layout = (*layout, *DEFENCE_COLUMNS)
    layout = (*layout, *dict.fromkeys(k for r in rows for k in r if k.startswith(DRAW_PREFIX)))
    if any(CERTIFIED_LOWER in r for r in rows):  # a certify case: each image's certificate and what attacks did
        layout = (*layout, *CERTIFY_COLUMNS)
    if any(is_skipped(r) for r in rows):
        layout = (*layout, SKIP_REASON)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(layout)
        for i, row in enumerate(rows):
            absent = [c for c in required if row.get(c) is None]
            if absent:
                raise ValueError(f"row {i} for {path} lacks {', '.join(absent)}; the MSU layout needs them")
            values = dict(row)
            if is_skipped(row):
                values = {"rel_gain": math.nan, "psnr": math.nan, "ssim": math.nan, "mse": math.nan, **values}
            elif values.get(SKIP_REASON) is None and SKIP_REASON in layout:
                values[SKIP_REASON] = ""
            if values.get("rel_gain") is None:
                values["rel_gain"] = _msu_rel_gain(float(values["clear"]), float(values["attacked"]))
            writer.writerow([_format(values.get(c, "" if c in CERTIFY_TEXT_COLUMNS else None)) for c in layout])
    return path


def attack_label(attack: str, universal: bool) -> str:
    """The benchmark's group label of an attack: universal ``uap`` is ``default-uap``."""
    return "default-uap" if universal and attack == "uap" else attack


def universal_group_name(attack: str, train_dataset: str, amplitude: float) -> str:
    """``<attack>_<train set>_amp<amplitude>``, e.g. ``default-uap_COCO_amp0.2`` (benchmark naming)."""
    return f"{attack_label(attack, True)}_{train_dataset}_amp{float(amplitude)!s}"


def collect_groups(
    files: Sequence[ResultFile],
    by_dataset: bool = False,
    dataset_aliases: Mapping[str, str] = DATASET_ALIASES,
    mos: Mapping[str, float] | None = None,
) -> list[ScoreGroup]:
    """Group the rows of result files as the benchmark scores them.

    Groups, in order: each attack as it first appears (an image-specific attack is one group; a
    universal attack gives one group per training set x amplitude, then its pooled rows under the
    attack's label); then ``all`` when there is more than one attack, and ``iterative`` and ``uap``
    when both kinds are present. Files with the same attack are pooled.

    Args:
        files: results read by :func:`read_msu_csv` (or built in memory).
        by_dataset: split every group by test dataset (names merged through ``dataset_aliases``).
        dataset_aliases: test-set spellings to merge when splitting (default ``NIPS2017 -> NIPS``).
        mos: subjective scores by image name; default the rows' own ``mos`` column, if any.

    Returns:
        The groups with their raw clear and attacked values (and MOS, when known); skipped rows (a
        ``skip_reason``) are left out.
    """
    clear: list[float] = []
    attacked: list[float] = []
    pooled: list[str] = []
    leaf: list[str] = []
    is_universal: list[bool] = []
    dataset: list[str] = []
    subjective: list[float] = []
    for f in files:
        label = attack_label(f.attack, f.universal)
        for row in f.rows:
            if is_skipped(row):
                continue
            clear.append(float(row["clear"]))
            attacked.append(float(row["attacked"]))
            pooled.append(label)
            is_universal.append(f.universal)
            leaf.append(universal_group_name(label, row["train_dataset"], row["amplitude"]) if f.universal else label)
            ds = str(row["test_dataset"])
            dataset.append(dataset_aliases.get(ds, ds))
            given = mos.get(str(row["image_name"]), math.nan) if mos is not None else row.get(MOS, math.nan)
            subjective.append(float(given))
    c, a = np.asarray(clear, dtype=np.float64), np.asarray(attacked, dtype=np.float64)
    m = np.asarray(subjective, dtype=np.float64)
    has_mos = mos is not None or any(MOS in row for f in files for row in f.rows)
    pooled_arr, leaf_arr = np.asarray(pooled, dtype=object), np.asarray(leaf, dtype=object)
    uni, ds_arr = np.asarray(is_universal, dtype=bool), np.asarray(dataset, dtype=object)

    selections: list[tuple[str, np.ndarray, bool]] = []
    labels = list(dict.fromkeys(pooled))
    for label in labels:
        mask = pooled_arr == label
        if uni[mask].any():
            # training sets in order of appearance, amplitudes ascending
            leaves = list(dict.fromkeys(leaf_arr[mask]))
            split = {name: name.rsplit("_amp", 1) for name in leaves}
            order = {train: i for i, train in enumerate(dict.fromkeys(p[0] for p in split.values()))}
            leaves.sort(key=lambda name: (order[split[name][0]], float(split[name][1])))
            selections.extend((name, leaf_arr == name, True) for name in leaves)
        selections.append((label, mask, bool(uni[mask].any())))
    if len(labels) > 1:
        selections.append(("all", np.ones(c.size, dtype=bool), bool(uni.all())))
    if uni.any() and not uni.all():
        selections.append(("iterative", ~uni, False))
        selections.append(("uap", uni, True))

    groups: list[ScoreGroup] = []
    for name, mask, universal in selections:
        if by_dataset:
            for ds in dict.fromkeys(ds_arr[mask]):
                sub = mask & (ds_arr == ds)
                groups.append(
                    ScoreGroup(name, c[sub], a[sub], dataset=ds, universal=universal, mos=m[sub] if has_mos else None)
                )
        else:
            groups.append(ScoreGroup(name, c[mask], a[mask], universal=universal, mos=m[mask] if has_mos else None))
    return groups


def score_groups(groups: Sequence[ScoreGroup], lower_better: bool = False) -> list[dict[str, Any]]:
    """Score every group: ``{"group": name, ["dataset": ds,] **group_scores(...)}`` per group."""
    out: list[dict[str, Any]] = []
    for g in groups:
        label: dict[str, Any] = {"group": g.name}
        if g.dataset is not None:
            label["dataset"] = g.dataset
        out.append({**label, **group_scores(g.clear, g.attacked, lower_better, g.mos)})
    return out
