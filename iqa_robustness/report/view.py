"""The session as the HTML report sees it, and what a section of the page is.

A :class:`SessionView` is built once per page: the cases with their anchors and heatmap places, the
image budget, the provenance, the summary rows and the verdicts. Every section
(``iqa_robustness/report/section_*.py``, one file each) is a :class:`Section`: where it goes on the
page, its link in the navigation, when it is shown, and a function from the view to its HTML.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from iqa_robustness.conventions import dataset_slug
from iqa_robustness.report.markup import unique_slugs
from iqa_robustness.report.table import as_number
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.summary import amplitude_means, case_summary, verdict_rows
from iqa_robustness.scores.verdict import MetricVerdict, VerdictPolicy, session_verdicts

#: Statuses whose scores are shown; the others get a grey cell saying so.
SCORED_STATUSES = ("passed", "failed")


@dataclasses.dataclass
class CaseView:
    """A result with what the page derives from it: anchor slug, heatmap row and column."""

    result: CaseResult
    slug: str
    row: str = ""
    column: str = ""

    @property
    def scored(self) -> bool:
        return self.result.status in SCORED_STATUSES and bool(self.result.scores)

    def score(self, key: str) -> float:
        return as_number(self.result.scores.get(key)) if self.scored else math.nan


def place(cases: list[CaseView]) -> None:
    """Heatmap row (metric [x dataset]) and column (attack [@ amplitude] [on train set]), one cell per case."""
    several_datasets = len({dataset_slug(c.result.dataset) for c in cases}) > 1
    train_sets: dict[str, set[str]] = defaultdict(set)
    for c in cases:
        if c.result.train_dataset is not None:
            train_sets[c.result.attack].add(c.result.train_dataset)
    taken: set[tuple[str, str]] = set()
    for c in cases:
        r = c.result
        c.row = f"{r.metric} · {dataset_slug(r.dataset)}" if several_datasets else r.metric
        column = r.attack
        if r.amplitude is not None:
            column += f" @{r.amplitude:g}"
        if r.train_dataset is not None and len(train_sets[r.attack]) > 1:
            column += f" on {dataset_slug(r.train_dataset)}"
        if (c.row, column) in taken:  # same identity twice (e.g. two weights modes): its own column
            column = f"{column} [{r.case_id}]"
        c.column = column
        taken.add((c.row, column))


def image_budget(n_cases: int) -> tuple[int, int]:
    """(longest image side, images shown per case): smaller and fewer as a session grows."""
    if n_cases <= 30:
        return 256, 3
    if n_cases <= 100:
        return 160, 2
    return 96, 1


class SessionView:
    """What every section reads: the results, the cases as the page places them, provenance, verdicts.

    Args:
        results: the session's cases, in any order.
        provenance: the session's tags, shown as given.
        title: the page title; by default one made from the session id or the start time.
        policy: what *fooled* means for the verdicts (:class:`~iqa_robustness.scores.verdict.VerdictPolicy`).
    """

    def __init__(
        self,
        results: list[CaseResult],
        provenance: dict[str, str],
        title: str = "",
        policy: VerdictPolicy | None = None,
    ) -> None:
        self.results = results
        self.provenance = provenance
        self.policy = policy or VerdictPolicy()
        self.cases = [CaseView(r, s) for r, s in zip(results, unique_slugs(r.case_id for r in results), strict=True)]
        place(self.cases)
        self.max_side, self.pairs_shown = image_budget(len(results))
        session = provenance.get("session_id") or provenance.get("mlflow_run_id") or provenance.get("started", "")
        self.title = title or (f"iqa-robustness session {session}" if session else "iqa-robustness session report")
        self.generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    @functools.cached_property
    def summary(self) -> list[dict[str, object]]:
        """The summary rows of every case (:func:`~iqa_robustness.scores.summary.case_summary`)."""
        return [case_summary(r) for r in self.results]

    @functools.cached_property
    def summary_with_means(self) -> list[dict[str, object]]:
        """:attr:`summary` and the universal attacks' amplitude means."""
        return self.summary + amplitude_means(self.summary)

    @functools.cached_property
    def verdicts(self) -> list[MetricVerdict]:
        """Every metric's verdict (docs/verdict.md)."""
        return session_verdicts(verdict_rows(self.results), self.policy)

    @property
    def random_weights(self) -> bool:
        """Whether any metric ran with random weights (or the session says its numbers are no benchmark's)."""
        modes = {self.provenance.get("weights_mode", "")} | {r.weights_mode for r in self.results}
        return any("random" in m for m in modes) or str(self.provenance.get("benchmark_number", "")).lower() == "false"


@dataclasses.dataclass(frozen=True)
class Section:
    """One section of the page.

    Attributes:
        anchor: its ``id`` (the navigation links to ``#anchor``).
        nav: the navigation's link text.
        order: where it goes: sections are laid out by ascending order.
        render: the section's HTML (a ``<section id="anchor">`` element) from the view.
        shown: whether the session has anything for it (always, by default).
    """

    anchor: str
    nav: str
    order: int
    render: Callable[[SessionView], str]
    shown: Callable[[SessionView], bool] = lambda view: True

    def applies(self, view: SessionView) -> bool:
        return bool(self.shown(view))


def any_result(test: Callable[[CaseResult], Any]) -> Callable[[SessionView], bool]:
    """A :attr:`Section.shown` that holds when some result passes ``test``."""
    return lambda view: any(test(r) for r in view.results)
