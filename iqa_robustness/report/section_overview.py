"""The report's overview: metric x attack heatmaps of R and of the normalised gain, and the leaderboard.

As the MSU benchmark's paper shows a session (Antsiferova et al., AAAI 2024): a heatmap of the
robustness score R (higher = more robust) and one of the normalised absolute gain (higher = more
easily fooled), one cell per case linking to its detail. The leaderboard beside them ranks the
metrics by their worst case (docs/verdict.md) and keeps the benchmark's mean over attacks beside it.
"""

from __future__ import annotations

import math

from iqa_robustness.report.markup import cell_colour, esc, fmt
from iqa_robustness.report.view import CaseView, Section, SessionView
from iqa_robustness.scores.verdict import verdict_leaderboard

#: (score, title, legend, colour map) of each heatmap
HEATMAPS = (
    (
        "robustness_score",
        "Robustness score R",
        "higher = more robust (green); per image log10(room to move / |score change|), on min-max scaled scores",
        "RdYlGn",
    ),
    (
        "norm_abs_gain",
        "Normalised absolute gain",
        "higher = more fooled (red); mean gain towards better quality, in units of the clean scores' range",
        "RdYlGn_r",
    ),
)


def render(view: SessionView) -> str:
    heatmaps = "".join(heatmap(view, *spec) for spec in HEATMAPS)
    return (
        '<section id="overview"><h2>Overview</h2><div class="overview">'
        f'<div class="heatmaps">{heatmaps}</div>'
        f'<aside class="leaderboard">{leaderboard(view)}</aside></div></section>'
    )


def heatmap(view: SessionView, key: str, name: str, legend: str, cmap: str) -> str:
    cases = view.cases
    if not cases:
        return f'<p class="note">No cases: no {esc(name)} heatmap.</p>'
    rows = list(dict.fromkeys(c.row for c in cases))
    columns = list(dict.fromkeys(c.column for c in cases))
    grid = {(c.row, c.column): c for c in cases}
    values = [v for v in (c.score(key) for c in cases) if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    head = "".join(f'<th scope="col">{esc(col)}</th>' for col in columns)
    body = []
    for row in rows:
        cells = [f'<th scope="row">{esc(row)}</th>']
        for col in columns:
            case = grid.get((row, col))
            cells.append('<td class="empty"></td>' if case is None else _cell(case, key, low, high, cmap))
        body.append(f"<tr>{''.join(cells)}</tr>")
    scale = f"colour scale {fmt(low)} … {fmt(high)}" if values else "no finite values"
    return (
        f'<div class="heatmap" data-score="{esc(key)}"><h3>{esc(name)}</h3>'
        f'<p class="legend">{esc(legend)}; {scale}; grey: no score (status shown).</p>'
        f'<div class="scroll"><table class="heat"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div></div>"
    )


def _cell(case: CaseView, key: str, low: float, high: float, cmap: str) -> str:
    r = case.result
    value = case.score(key)
    attrs = f'data-case="{esc(r.case_id)}" title="{esc(r.case_id)} ({esc(r.status)})"'
    link = f'href="#case-{esc(case.slug)}"'
    if not case.scored or not math.isfinite(value):
        text = r.status if not case.scored else "n/a"
        return f'<td class="cell nodata status-{esc(r.status)}" {attrs}><a {link}>{esc(text)}</a></td>'
    t = 0.5 if high <= low else (value - low) / (high - low)
    background, colour = cell_colour(t, cmap)
    mark = " ✗" if r.status == "failed" else ""
    return (
        f'<td class="cell status-{esc(r.status)}" {attrs} style="background:{background}">'
        f'<a {link} style="color:{colour}">{fmt(value)}{mark}</a></td>'
    )


def leaderboard(view: SessionView) -> str:
    """The metrics ranked by worst-case R, with the worst attack, the largest gain and the mean R beside."""
    ranked = verdict_leaderboard(view.verdicts)
    body = "".join(
        f"<tr><td>{r['rank']}</td><td>{esc(r['metric'])}</td><td>{fmt(r['worst_robustness_score'])}</td>"
        f"<td>{fmt(r['max_norm_abs_gain'])}</td><td>{fmt(r['robustness_score'])}</td>"
        f"<td>{esc(r['verdict'])}</td><td>{r['n_cases']}</td></tr>"
        for r in ranked
    )
    return (
        "<h3>Leaderboard</h3>"
        '<p class="legend">Metrics ranked by their worst case: the lowest R any attack reached (higher = more '
        "robust), with the largest normalised gain; the mean R over attacks (each attack's cases averaged, then "
        "the attacks, as the benchmark and <code>iqa-robustness leaderboard</code> do) stays beside it. A defended "
        'metric\'s worst case counts adaptive attacks only (<a href="#verdict">verdict</a>).</p>'
        '<table class="board"><thead><tr><th>#</th><th>metric</th><th>worst R</th><th>max norm gain</th>'
        f"<th>mean R</th><th>verdict</th><th>cases</th></tr></thead><tbody>{body}</tbody></table>"
    )


SECTION = Section(anchor="overview", nav="overview", order=20, render=render)
