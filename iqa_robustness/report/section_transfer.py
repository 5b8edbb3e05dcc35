"""The report's transfer section: the adversarial images of each source scored by the ``--transfer-to`` metrics.

docs/methodology.md, "Transferability": per source x target the normalised gain on the target, as a heatmap
(:mod:`iqa_robustness.report.transfer`) and a table.
"""

from __future__ import annotations

from iqa_robustness.report.markup import esc, figure_uri, fmt
from iqa_robustness.report.view import Section, SessionView, any_result


def render(view: SessionView) -> str:
    from iqa_robustness.report.transfer import draw_matrix, figure_size
    from iqa_robustness.scores.transfer import session_transfer_rows, transfer_matrix

    rows = session_transfer_rows(view.results)
    matrix = transfer_matrix(rows)
    uri = figure_uri(lambda fig: draw_matrix(fig, matrix), figure_size(matrix))
    head = "".join(f'<th scope="col">{esc(t)}</th>' for t in matrix["targets"])
    body = "".join(
        f'<tr><th scope="row">{esc(source)}</th>'
        + "".join(f'<td class="{"own" if own else ""}">{fmt(v)}</td>' for v, own in zip(values, owns, strict=True))
        + "</tr>"
        for source, values, owns in zip(matrix["sources"], matrix["values"], matrix["own"], strict=True)
    )
    errors = sorted({str(r["error"]) for r in rows if r.get("error")})
    notes = "".join(f'<p class="note">Not scored: {esc(e)}</p>' for e in errors)
    return (
        '<section id="transfer"><h2>Transfer</h2>'
        '<p class="legend">The adversarial images of each source (an attack against a metric, a universal '
        "attack averaged over its amplitudes, or a published perturbation by its file) scored by the "
        "<code>--transfer-to</code> metrics: normalised absolute gain on each target, min-max scaled on the "
        "target's own clean scores (higher = the target was fooled too; near 0 = no transfer). Outlined, "
        "bold: the source's own metric.</p>"
        f'<img class="plot" src="{uri}" alt="transfer matrix of normalised absolute gain">'
        f'<table class="board transfer"><thead><tr><th>source</th>{head}</tr></thead><tbody>{body}</tbody></table>'
        f"{notes}</section>"
    )


SECTION = Section(anchor="transfer", nav="transfer", order=70, render=render, shown=any_result(lambda r: r.transfer))
