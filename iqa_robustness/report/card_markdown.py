"""A robustness card for people: the Markdown summary of a card, and its SVG badge for a README.

The summary (docs/card.md) says in one page what the card's JSON holds: the verdict and the badge,
the metric and its weights' checksum, the data, the worst case per budget with the mean over attacks
beside it, the certified bound, every flag with its evidence, the checks, and how the numbers were made.

The badge is written here, not by a library: it is shields.io's "flat" badge, a fixed template of
two rectangles, a gloss gradient and two lines of text (:func:`badge_svg`), so a badge package
(pybadges, anybadge) would add a dependency for a template string. The one thing a template cannot
know is how wide its texts are; they are measured in DejaVu Sans at 11 px with matplotlib's font
metrics (a dependency already), and each text carries ``textLength`` so a viewer whose fallback font
is wider or narrower still fits it in its box, as shields.io does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

from iqa_robustness.report.markup import fmt

#: text size of the badge and the horizontal padding around each text (shields.io's: 11 px, 5 px each side)
_FONT_PX, _PAD = 11, 5


@functools.cache
def _text_width(text: str) -> float:
    """The width of ``text`` in px, in DejaVu Sans at 11 px (Verdana's metrics are close: shields' font)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    width, _, _ = TextToPath().get_text_width_height_descent(
        text, FontProperties(family="DejaVu Sans", size=_FONT_PX), ismath=False
    )
    return float(width)


def badge_svg(label: str, message: str, colour: str) -> str:
    """A self-contained SVG badge in shields.io's flat style: ``label`` on grey, ``message`` on ``colour``.

    Args:
        label: the left text (the metric's name).
        message: the right text (``robust at 4/255``, ``fooled at 2/255: norm. gain 3.2``, ...).
        colour: the right side's fill, a CSS colour (``#4c1``).
    """
    label_w, message_w = (math.ceil(_text_width(t)) + 2 * _PAD for t in (label, message))
    width = label_w + message_w
    title = escape(f"{label}: {message}")

    def text(value: str, box_x: int, box_w: int) -> str:
        x, length = 10 * box_x + 5 * box_w, 10 * (box_w - 2 * _PAD)  # shields draws at 10x and scales by 0.1
        body = escape(value)
        return (
            f'<text aria-hidden="true" x="{x}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)" '
            f'textLength="{length}">{body}</text>'
            f'<text x="{x}" y="140" transform="scale(.1)" fill="#fff" textLength="{length}">{body}</text>'
        )

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{title}">'
        f"<title>{title}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{label_w}" height="20" fill="#555"/>'
        f'<rect x="{label_w}" width="{message_w}" height="20" fill="{escape(colour)}"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        'text-rendering="geometricPrecision" font-size="110">'
        f"{text(label, 0, label_w)}{text(message, label_w, message_w)}</g></svg>\n"
    )


# ----------------------------------------------------------------------------- the Markdown summary


def _cell(value: Any) -> str:
    """A table cell: numbers with 4 significant digits, ``–`` for missing; ``|`` escaped."""
    if value is None or isinstance(value, float):
        return fmt(value, 4)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _budget(group: Mapping[str, Any]) -> str:
    return "attacks' own" if group.get("budget_255") is None else f"{group['budget_255']:g}/255"


def _certified(group: Mapping[str, Any]) -> str:
    c = group.get("certified")
    if not c:
        return "–"
    breaches = f", **{c['breaches']} breach(es)**" if c.get("breaches") else ""
    return f"≤ {fmt(c.get('bound'))} · achieved {fmt(c.get('achieved'))} (L2 {fmt(c.get('eps'))}){breaches}"


def _worst_case(groups: Sequence[Mapping[str, Any]], certified: bool) -> list[str]:
    header = ["data set", "budget", "verdict", "worst R", "by", "max norm. gain", "by", "mean R", "mean gain",
              "attacks"]  # fmt: skip
    if certified:
        header.append("certified vs achieved")
    rows = []
    for g in groups:
        row = [g["dataset"], _budget(g), g["verdict"], g["worst_robustness_score"], g["worst_robustness_attack"],
               g["max_norm_abs_gain"], g["max_gain_attack"], g["mean_robustness_score"], g["mean_norm_abs_gain"],
               g["n_attacks"]]  # fmt: skip
        if certified:
            row.append(_certified(g))
        rows.append(row)
    return _table(header, rows)


def _evidence(evidence: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(v, 4) if isinstance(v, float) else v}" for k, v in evidence.items())


def _facts(card: Mapping[str, Any]) -> list[str]:
    m, suite, session, hw, seeds = card["metric"], card["suite"], card["session"], card["hardware"], card["seeds"]
    implementation = m.get("implementation") or m.get("source") or "unknown"
    library = f"{m['library']} {m.get('version') or '(version unknown)'}" if m.get("library") else None
    version = library or (f"iqa-robustness {m['version']} adapter" if m.get("version") else "version unknown")
    checksum = m.get("weights_checksum")
    weights = ", ".join(m.get("weight_files") or []) or "no parameter file"
    weights += f" ({m.get('weights_mode') or 'weights mode unknown'})"
    if checksum:
        weights += f"; {checksum['algorithm']} of the {checksum['of']}: `{checksum['value']}`"
    data = "; ".join(
        f"{d['name']}: {d['images']} image(s)"
        + (f", {d['skipped']} skipped" if d.get("skipped") else "")
        + (f" at {d['image_size']} px" if d.get("image_size") else "")
        + (
            f", clean SROCC with MOS {fmt(d['mos'].get('srocc'))} (PLCC {fmt(d['mos'].get('plcc'))}, "
            f"{d['mos'].get('n')} images)"
            if d.get("mos")
            else ", MOS not known"
        )
        for d in card["datasets"]
    )
    where = session.get("ref") or session.get("id") or "?"
    commit = f", commit `{session['git_commit'][:12]}`" if session.get("git_commit") else ""
    branch = f" ({session['git_branch']})" if session.get("git_branch") else ""
    case_seeds = seeds.get("cases") or {}
    seed_text = f"base {seeds['base']}" if seeds.get("base") is not None else "base not recorded"
    seed_text += f"; {len(case_seeds)} case seed(s) in the JSON" if case_seeds else ""
    hardware = ", ".join(
        x
        for x in (
            hw.get("device"),
            hw.get("device_name"),
            f"torch {hw['torch_version']}" if hw.get("torch_version") else None,
            f"Python {hw['python_version']}" if hw.get("python_version") else None,
        )
        if x
    )
    rows = [
        ["metric", f"{m['name']}" + (f" ({m['defence']} in front of {m['base_metric']})" if m.get("defence") else "")],
        ["implementation", f"`{implementation}`, {version}"],
        ["weights", weights],
        ["data", data or "none"],
        ["session", f"{where} ({session.get('source')}{commit}{branch}, started {session.get('started') or '?'})"],
        ["suite", f"iqa-robustness {suite.get('version') or '(version unknown)'}"],
        ["seeds", seed_text],
        ["hardware", hardware or "not recorded"],
    ]
    return _table(["", ""], rows)


def card_markdown(card: Mapping[str, Any], badge_file: str | None = None) -> str:
    """The card as a Markdown page: badge, verdict, facts, worst case, certified bound, flags, checks."""
    v = card["verdict"]
    name = card["metric"]["name"]
    lines = [f"# Robustness card: {name}", ""]
    if badge_file:
        lines += [f"![{card['badge']['label']}: {card['badge']['message']}]({badge_file})", ""]
    lines += [f"**Verdict:** {v['text']}", ""]
    lines += _facts(card)
    certified = any(g.get("certified") for g in v["worst_case"])
    lines += ["", "## Worst case per budget", ""]
    if v["worst_case"]:
        lines += [
            "The worst any attack of the session achieved, per data set and L∞ budget: the lowest robustness score "
            "R and the largest normalised absolute gain, each with its attack; the benchmark's mean over attacks "
            f"beside them. Fooled from a normalised gain of {v['policy']['fooled_gain']:g} (docs/verdict.md).",
            "",
            *_worst_case(v["worst_case"], certified),
        ]
    else:
        lines.append("No attack case of this metric has scores.")
    lines += ["", f"Mean over {v['n_attacks']} attack(s) (MSU benchmark): R {fmt(v['mean_robustness_score'])}, "
              f"normalised gain {fmt(v['mean_norm_abs_gain'])}."]  # fmt: skip
    if v["non_adaptive"]:
        lines += ["", "## Non-adaptive (optimistic)", "",
                  "Images made against the undefended metric, then defended: optimistic by construction, never the "
                  "defence's robustness.", "", *_worst_case(v["non_adaptive"], False)]  # fmt: skip
    lines += ["", "## Certified bound", ""]
    if v.get("certified"):
        header = ["data set", "certified", "achieved", "largest achieved / certified", "breaches", "L2 radius",
                  "sigma", "n", "alpha", "case"]  # fmt: skip
        fields = ("dataset", "bound", "achieved", "achieved_ratio_max", "breaches", "eps", "sigma", "n", "alpha",
                  "case")  # fmt: skip
        lines += [
            "Median smoothing (docs/certify.md): no perturbation within the L2 radius moves the smoothed metric "
            "by more than the bound (mean over the images, in units of the span of its clean smoothed scores); "
            "achieved: the mean of each image's largest change by the session's attacks within the same radius.",
            "",
            *_table(header, [[c[f] for f in fields] for c in v["certified"]["certificates"]]),
        ]
    else:
        lines.append("Not certified in this session (`--certify` adds a certify case per metric and data set).")
    lines += ["", f"## Flags ({len(v['flags'])})", ""]
    lines += [f"- **{f['check']}**: {f['reason']}  \n  evidence: `{_evidence(f['evidence'])}`" for f in v["flags"]]
    if not v["flags"]:
        lines.append("No evaluation check fired.")
    lines += ["", "## Evaluation checks", "", *_table(["check", "state"], list(v["checks"].items()))]
    lines += [
        "",
        f"Attacks: {', '.join(a['label'] for a in card['attacks']) or 'none'}.",
        "",
        f"Card schema {card['schema']}-{card['schema_version']} (docs/card.md), written {card['created']} by "
        f"iqa-robustness {card['suite'].get('card_written_by')}.",
        "",
    ]
    return "\n".join(lines)
