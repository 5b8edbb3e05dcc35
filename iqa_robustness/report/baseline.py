"""Robustness thresholds: a CSV of ``metric,attack,score,min,max`` rows (globs allowed).

Example::

    metric,attack,score,min,max
    cnniqa-live,ifgsm,robustness_score,0.5,
    *,*uap*,norm_abs_gain,,0.3

A case is checked against every row whose ``metric`` and ``attack`` patterns match it; an empty
``min``/``max`` means unbounded on that side. ``dataset`` and ``amplitude`` columns are optional
patterns too.

:func:`thresholds_from_cases` writes such a file from a session (``iqa-robustness baseline``):
for every case and gated score, the interval ``value -+ margin x half-width`` of the score's 95%
Student-t interval, so a later session of the same grid fails when it reports a different
robustness. With ``margin = 1`` the bounds are the interval itself (what another sample of
images could explain); the default 0.25 suits reruns of the same images, which are
deterministic up to floating-point differences between machines (``min_margin`` covers those).
docs/results.md, "Baselines", says which baselines are committed and how to accept a new one.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from iqa_robustness.report.table import as_number
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
            case = f"{result.metric} x {result.attack}" + (
                f" @ {result.amplitude:g}" if result.amplitude is not None else ""
            )
            if not math.isfinite(value):
                out.append(f"{case}: {t.score} is {value} (threshold {t.low}..{t.high})")
            elif t.low is not None and value < t.low:
                out.append(f"{case}: {t.score} = {value:.6g} < minimum {t.low:.6g}{self._where}")
            elif t.high is not None and value > t.high:
                out.append(f"{case}: {t.score} = {value:.6g} > maximum {t.high:.6g}{self._where}")
        return out

    @property
    def _where(self) -> str:
        return f" ({self.source})" if self.source else ""


#: scores a baseline bounds by default: the robustness score and the normalised gain
BASELINE_SCORES: tuple[str, ...] = ("robustness_score", "norm_abs_gain")
#: the default margin, in half-widths of the score's 95% interval
DEFAULT_MARGIN = 0.25
#: the least margin, for scores whose interval is (near) zero wide
DEFAULT_MIN_MARGIN = 1e-3


def thresholds_from_cases(
    cases: Iterable[Mapping[str, object]],
    scores: Sequence[str] = BASELINE_SCORES,
    margin: float = DEFAULT_MARGIN,
    min_margin: float = DEFAULT_MIN_MARGIN,
) -> list[Threshold]:
    """One threshold per case and score, from each case's value and 95% interval.

    Args:
        cases: dicts with ``metric``, ``attack``, ``dataset``, ``amplitude`` (``""`` when none)
            and the scores with their ``<score>_ci_low`` / ``<score>_ci_high`` (a summary row, or
            a logged case's metrics with its identity).
        scores: the scores bounded.
        margin: half-widths of the 95% interval on each side of the value.
        min_margin: the least distance from the value to a bound.

    Raises:
        ValueError: a negative margin, or no case with a finite value of any of ``scores``.
    """
    if margin < 0 or min_margin < 0:
        raise ValueError(f"margins must be >= 0 (got margin={margin}, min_margin={min_margin})")
    out: list[Threshold] = []
    for case in cases:
        amplitude = case.get("amplitude")
        amp = "*" if amplitude in (None, "", "None") else f"{float(amplitude):g}"  # type: ignore[arg-type]
        for score in scores:
            value = as_number(case.get(score))
            if not math.isfinite(value):
                continue
            low, high = as_number(case.get(f"{score}_ci_low")), as_number(case.get(f"{score}_ci_high"))
            half = (high - low) / 2 if math.isfinite(low) and math.isfinite(high) else 0.0
            room = max(margin * half, min_margin)
            out.append(
                Threshold(
                    str(case["metric"]),
                    str(case["attack"]),
                    score,
                    value - room,
                    value + room,
                    str(case["dataset"]),
                    amp,
                )
            )
    if not out:
        raise ValueError(f"no case has a finite {' or '.join(scores)}: nothing to write a baseline from")
    return out


def write_baseline(thresholds: Sequence[Threshold], path: str | Path) -> Path:
    """The thresholds as a baseline CSV (``metric,attack,score,min,max,dataset,amplitude``), as loaded by Baseline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["metric", "attack", "score", "min", "max", "dataset", "amplitude"])
        for t in thresholds:
            writer.writerow([t.metric, t.attack, t.score, _bound(t.low), _bound(t.high), t.dataset, t.amplitude])
    return path


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
