"""The report's budgets: a session at L-inf budgets (``--eps``) drawn as gain against budget, and its areas.

docs/methodology.md, "Threat-model budgets": per metric x attack the normalised gain at each budget, and
``gain_auc`` / ``robustness_auc``, the mean of the score's piecewise-linear curve over the budgets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from iqa_robustness.report.markup import dataset_label, esc, figure_uri, fmt, gain_axes
from iqa_robustness.report.table import as_number
from iqa_robustness.report.view import Section, SessionView, any_result
from iqa_robustness.scores.summary import BUDGET_SCORES, amplitude_means, budget_rows, case_summary


def render(view: SessionView) -> str:
    summary = [case_summary(c.result) for c in view.cases if c.scored]
    rows = budget_rows(summary + amplitude_means(summary))
    if not rows:
        return (
            '<section id="budgets"><h2>Budgets</h2><p class="note">No case at an L-inf budget has scores.</p></section>'
        )
    by_attack: dict[str, list[Mapping[str, object]]] = defaultdict(list)
    for row in rows:
        by_attack[str(row["attack"])].append(row)
    plots = []
    for attack, members in by_attack.items():

        def draw(fig: Any, attack: str = attack, members: list[Mapping[str, object]] = members) -> None:
            ax = fig.add_subplot()
            several = len({(r["dataset"], r["train_dataset"]) for r in members}) > 1
            for row in members:
                units = [float(u) for u in str(row["budgets"]).split(",")]
                gains = [as_number(row.get(f"norm_abs_gain_eps{u:g}")) for u in units]
                label = str(row["metric"])
                if several:
                    label += f" · {dataset_label(row)}"
                label += f" (AUC {fmt(row['gain_auc'])})"
                ax.plot(units, gains, marker="o", markersize=4, label=label)
            gain_axes(fig, ax, "L∞ budget (/255)", attack)

        uri = figure_uri(draw, (4.6, 3.4))
        plots.append(f'<img class="plot" src="{uri}" alt="{esc(f"gain against budget, {attack}")}">')
    areas = list(BUDGET_SCORES.values())
    head = "".join(f"<th>{esc(h)}</th>" for h in ("metric", "attack", "dataset", "budgets (/255)", *areas))
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{esc(v)}</td>"
            for v in (r["metric"], r["attack"], dataset_label(r), r["budgets"], *(fmt(r[a]) for a in areas))
        )
        + "</tr>"
        for r in rows
    )
    return (
        '<section id="budgets"><h2>Budgets</h2>'
        "<h3>Gain against L∞ budget</h3>"
        '<p class="legend">Normalised absolute gain (higher = more fooled) of each metric × attack at each '
        "L∞ budget of <code>--eps</code> (a universal attack: its mean over the amplitudes).</p>"
        f'<div class="amp-plots">{"".join(plots)}</div>'
        "<h3>Areas over the budgets</h3>"
        '<p class="legend"><code>gain_auc</code>: trapezoidal area under the normalised absolute gain against '
        "the budget (in units of 1/255), divided by the budget span, i.e. the mean gain over the budgets "
        "(higher = more fooled); <code>robustness_auc</code>: the same for R (higher = more robust).</p>"
        f'<table class="board budgets"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>'
    )


SECTION = Section(
    anchor="budgets", nav="budgets", order=60, render=render, shown=any_result(lambda r: r.budget is not None)
)
