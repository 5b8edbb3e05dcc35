"""The report's defences: each defence in front of each metric, attacked adaptively and non-adaptively.

docs/methodology.md, "Defences": the defence table (robust gain, recovered share, clean consistency,
similarity) and per metric its defences ranked by the adaptive robust gain.
"""

from __future__ import annotations

from iqa_robustness.report.markup import esc, fmt
from iqa_robustness.report.view import Section, SessionView, any_result


def render(view: SessionView) -> str:
    from iqa_robustness.report.table import DEFENCE_COLUMNS
    from iqa_robustness.scores.defences import defence_leaderboard, defence_table

    table = defence_table(view.summary_with_means)
    head = "".join(f'<th scope="col">{esc(label)}</th>' for _, label in DEFENCE_COLUMNS)
    body = "".join(
        f"<tr><th>{esc(r['metric'])}</th><th>{esc(r['defence'])}</th><th>{esc(r['attack'])}</th>"
        + "".join(f"<td>{fmt(r.get(k))}</td>" for k, _ in DEFENCE_COLUMNS)
        + "</tr>"
        for r in table
    )
    board = defence_leaderboard(table)
    board_rows = "".join(
        f"<tr><td>{r['rank']}</td><th>{esc(r['metric'])}</th><th>{esc(r['defence'])}</th>"
        f"<td>{fmt(r['adaptive_robust_abs_gain'])}</td><td>{fmt(r['nonadaptive_robust_abs_gain'])}</td>"
        f"<td>{fmt(r['recovered_fraction'])}</td><td>{fmt(r['clean_consistency'])}</td>"
        f"<td>{fmt(r['similarity'])}</td><td>{r['n_attacks']}</td></tr>"
        for r in board
    )
    return (
        '<section id="defences"><h2>Defences</h2>'
        '<p class="legend">Each defence in front of each metric, attacked two ways: non-adaptive (NA: the '
        "images made against the undefended metric, then defended, as the source benchmark evaluates) and "
        "adaptive (A: the attack sees the defence, with BPDA through non-differentiable steps and EoT over "
        "random ones). undef: the undefended gain |c - a| / range; robust: |c - d(x_adv)| / range (lower = "
        "the defence holds); recovered: the share of the gain the non-adaptive evaluation credits the defence "
        "with that the adaptive attack wins back; gain: the defended metric's own normalised gain; clean SRC: "
        "Spearman of the clean scores with and without the defence; similar: SSIM + PSNR / 40 of the defended "
        "attacked image with the clean one.</p>"
        f'<table class="board defences"><thead><tr><th>metric</th><th>defence</th><th>attack</th>{head}'
        f"</tr></thead><tbody>{body}</tbody></table>"
        "<h3>Defences per metric, best first (mean over attacks of the adaptive robust gain)</h3>"
        '<table class="board defence-board"><thead><tr><th>rank</th><th>metric</th><th>defence</th>'
        "<th>robust A</th><th>robust NA</th><th>recovered</th><th>clean SRC</th><th>similar</th>"
        f"<th>attacks</th></tr></thead><tbody>{board_rows}</tbody></table></section>"
    )


SECTION = Section(
    anchor="defences",
    nav="defences",
    order=80,
    render=render,
    shown=any_result(lambda r: "defence_label" in r.params),
)
