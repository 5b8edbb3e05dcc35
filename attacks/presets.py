"""The follow-up benchmark's budget presets of the black-box attacks, shipped as data.

The benchmark runs every attack at a few budget levels ("categories"), calibrated per metric in its
``picked_presets_v1.csv`` (adversarial-defenses-for-iqa, commit 2642c99,
``metrics/methods/utils/picked_presets_v1.csv``): Square and NES at L-inf 2, 4, 8 and 16 / 255;
Parsimonious's eps and Patch-RS's patch area calibrated to PSNR 30, 35 and 40 dB; One-pixel at 10, 20
and 40 pixels. The rows of those attacks ship with the package (``picked_presets_v1.csv`` beside this
module, its header naming the source), so a budget sweep (``--eps``) runs them at the benchmark's
values without the reference folder.

Which level of ``--eps`` a category stands for is each attack class's :class:`Presets`, as data
(docs/methodology.md, "Threat-model budgets"):

- square, nes: category k is the L-inf budget 2^(k+1) / 255, the value that budget;
- parsimonious, patch-rs: the PSNR 30, 35 and 40 dB levels are the PSNR Square reaches at 16, 8 and
  4 / 255 in the same table (30.9, 36.3 and 41.9 dB, mean over its metrics), so categories 0, 1, 2
  stand for 16, 8 and 4 / 255 (Parsimonious's eps, 0.0337, 0.0186 and 0.0104, stays inside each);
- onepixel: the three levels in order of strength, as for the other two three-level attacks: 10, 20
  and 40 pixels stand for 4, 8 and 16 / 255.

A metric the table calibrated (by its name there: ``niqe``, ``linearity``, ``maniqa``, ...) takes its
own row; any other metric the median over the table's metrics (the lower middle value, so one the
table holds). Square's and NES's values are 2^(k+1) / 255 rounded to float32; such a value is read as
the budget itself.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import statistics

from .budget import BUDGET_UNIT

#: the shipped table, beside this module
PRESETS_FILE = "picked_presets_v1.csv"

#: a table value this close to its level's budget is that budget (float32 rounding in the source)
_SAME = 1e-6


@dataclasses.dataclass(frozen=True)
class Presets:
    """How an attack class takes the benchmark's presets at a budget level of ``--eps``.

    Attributes:
        attack: the attack's name in the table (``square-attack``, ``grad-est``, ...).
        field: the hyperparameter a preset sets.
        levels: ``(category, budget in units of 1/255)`` pairs: the level each category stands for.
        integer: the field takes an integer (a patch area, a pixel count).
    """

    attack: str
    field: str
    levels: tuple[tuple[int, float], ...]
    integer: bool = False

    @property
    def budgets(self) -> tuple[float, ...]:
        """The L-inf budgets (in [0, 1] units) that have a preset, ascending."""
        return tuple(sorted(units * BUDGET_UNIT for _, units in self.levels))

    def category(self, budget: float) -> int | None:
        """The category that stands for ``budget``, or ``None`` when none does."""
        return next((c for c, units in self.levels if abs(budget / BUDGET_UNIT - units) < 1e-6), None)

    def value(self, budget: float, metric: str | None = None) -> float | int | None:
        """The preset value at ``budget`` for ``metric`` (the median over the table's metrics when the table
        has no row for it); ``None`` when no category stands for ``budget``."""
        category = self.category(budget)
        if category is None:
            return None
        rows = {m: v for a, m, c, v in _table() if a == self.attack and c == category}
        if not rows:
            raise LookupError(f"{PRESETS_FILE} has no row of {self.attack!r} at category {category}")
        value = rows[metric] if metric in rows else statistics.median_low(rows.values())
        if abs(value - budget) < _SAME:
            value = budget
        return round(value) if self.integer else value

    def describe(self) -> str:
        """``eps: 0.0104 at 4/255, 0.0186 at 8/255, 0.0338 at 16/255`` (the values for a metric the table lacks)."""
        shown = ", ".join(f"{self.value(b):.4g} at {b / BUDGET_UNIT:g}/255" for b in self.budgets)
        return f"{self.field}: {shown}"


@functools.cache
def _table() -> tuple[tuple[str, str, int, float], ...]:
    """``(attack, metric, category, value)`` of every row of the shipped table."""
    text = importlib.resources.files(__package__).joinpath(PRESETS_FILE).read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return tuple((r["attack"], r["metric"], int(r["category"]), float(r["param_val"])) for r in rows)
