"""Robustness thresholds: a CSV of ``metric,attack,score,min,max`` rows (globs allowed).

Example::

    metric,attack,score,min,max
    cnniqa-live,ifgsm,robustness_score,0.5,
    *,*uap*,norm_abs_gain,,0.3

A case is checked against every row whose ``metric`` and ``attack`` patterns match it; an empty
``min``/``max`` means unbounded on that side. ``dataset`` and ``amplitude`` columns are optional
patterns too.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import math
from pathlib import Path

from iqa_robustness.scores.results import CaseResult

_REQUIRED = ("metric", "attack", "score")


@dataclasses.dataclass(frozen=True)
class Threshold:
    metric: str
    attack: str
    score: str
    low: float | None
    high: float | None
    dataset: str = "*"
    amplitude: str = "*"

    def applies_to(self, r: CaseResult) -> bool:
        amp = "" if r.amplitude is None else f"{r.amplitude:g}"
        return (
            fnmatch.fnmatch(r.metric, self.metric)
            and fnmatch.fnmatch(r.attack, self.attack)
            and fnmatch.fnmatch(r.dataset, self.dataset)
            and (self.amplitude == "*" or fnmatch.fnmatch(amp, self.amplitude))
        )


@dataclasses.dataclass(frozen=True)
class Baseline:
    thresholds: tuple[Threshold, ...]
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"baseline file {path} not found; pass a CSV with columns {', '.join(_REQUIRED)}")
        rows: list[Threshold] = []
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: baseline lacks column(s) {missing}; expected metric,attack,score,min,max")
            for line, row in enumerate(reader, start=2):
                try:
                    low, high = (float(row[k]) if (row.get(k) or "").strip() else None for k in ("min", "max"))
                except ValueError as exc:
                    raise ValueError(f"{path}:{line}: min/max must be numbers or empty ({exc})") from None
                rows.append(
                    Threshold(
                        row["metric"].strip(),
                        row["attack"].strip(),
                        row["score"].strip(),
                        low,
                        high,
                        (row.get("dataset") or "*").strip(),
                        (row.get("amplitude") or "*").strip(),
                    )
                )
        return cls(tuple(rows), str(path))

    def check(self, result: CaseResult) -> list[str]:
        """Human-readable violations for one case (empty when it is within every threshold)."""
        out: list[str] = []
        for t in self.thresholds:
            if not t.applies_to(result):
                continue
            value = result.scores.get(t.score, math.nan)
            if not math.isfinite(value):
                out.append(f"{t.score} is {value} (threshold {t.low}..{t.high})")
            elif t.low is not None and value < t.low:
                out.append(f"{result.metric} x {result.attack}: {t.score} = {value:.4g} < minimum {t.low:g}")
            elif t.high is not None and value > t.high:
                out.append(f"{result.metric} x {result.attack}: {t.score} = {value:.4g} > maximum {t.high:g}")
        return out
