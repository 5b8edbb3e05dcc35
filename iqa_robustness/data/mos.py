"""Subjective scores of a dataset's images: ``mos.csv`` (``image_name,mos``) beside the images, or a given file.

With them every case also reports how well the metric agrees with people before and after the
attack (SROCC, PLCC, KROCC; :func:`iqa_robustness.scores.formulas.mos_scores`). Names are the
dataset's image names (file names relative to its folder); a MOS for an image the dataset does
not hold is ignored, an image without one is left out of those correlations.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

#: the file a dataset folder may hold
MOS_FILE = "mos.csv"


def read_mos(path: str | Path) -> dict[str, float]:
    """``image name -> MOS`` from a CSV with the columns ``image_name`` and ``mos``.

    Raises:
        ValueError: naming the file and line, for a missing file or column, a value that is not a
            finite number, or an image given twice.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"MOS file {path} not found; give a CSV with the columns image_name,mos")
    out: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("image_name", "mos") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column(s) {', '.join(missing)}; a MOS file has the columns image_name,mos")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            name = (row["image_name"] or "").strip()
            try:
                value = float(row["mos"])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: mos {row['mos']!r} is not a number") from None
            if not name or not math.isfinite(value):
                raise ValueError(f"{where}: give an image name and a finite mos")
            if name in out:
                raise ValueError(f"{where}: {name} has a MOS already (line of its first one above)")
            out[name] = value
    if not out:
        raise ValueError(f"{path}: no MOS rows after the header")
    return out


def dataset_mos(root: Path | None, override: str | Path | None = None) -> tuple[dict[str, float], Path] | None:
    """The MOS of a dataset: ``override`` when given, else ``<root>/mos.csv`` when there is one; with its path."""
    if override is not None:
        return read_mos(override), Path(override)
    if root is not None and Path(root).is_dir() and (Path(root) / MOS_FILE).is_file():
        return read_mos(Path(root) / MOS_FILE), Path(root) / MOS_FILE
    return None
