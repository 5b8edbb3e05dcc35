"""What every section of the HTML report builds with: escaped text, numbers, inline images and plots, the CSS.

Everything a section returns is a fragment of one self-contained page (:mod:`iqa_robustness.report.html`):
images and plots are ``data:`` URIs, text is escaped so that nothing reads as markup or a link.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from PIL import Image

from iqa_robustness.conventions import dataset_slug
from iqa_robustness.report.table import as_number

#: Images smaller than this (longer side, pixels) are shown enlarged by a whole factor.
MIN_SIDE = 128


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` significant digits, ``–`` for missing, ``∞`` for infinite."""
    x = as_number(value)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}g}"


def esc(text: Any) -> str:
    """Escaped for HTML text and attribute values; URL schemes are written so nothing reads as a link."""
    return html.escape(str(text), quote=True).replace("://", "&#58;//")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "case"


def unique_slugs(case_ids: Iterable[str]) -> list[str]:
    """An anchor per case id, numbered where two ids give the same slug."""
    seen: Counter[str] = Counter()
    slugs = []
    for case_id in case_ids:
        base = slug(case_id)
        seen[base] += 1
        slugs.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return slugs


def mean_of(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def dataset_label(row: Mapping[str, object]) -> str:
    """``msu5``, or ``msu5 (on sample)`` for a universal attack's row."""
    label = dataset_slug(str(row["dataset"]))
    return f"{label} (on {dataset_slug(str(row['train_dataset']))})" if row.get("train_dataset") else label


def data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=88)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def image_tag(
    image: Image.Image, max_side: int, alt: str, resample: int = Image.Resampling.LANCZOS, fmt: str = "JPEG"
) -> str:
    """An ``<img>`` of ``image`` at most ``max_side`` pixels on the longer side.

    A smaller image keeps its pixels and is shown enlarged by a whole factor (sharp, not smoothed)
    up to ``MIN_SIDE``, so a 64 px test image stays visible without costing bytes.
    """
    side = max(image.size)
    if side > max_side:
        scale = max_side / side
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    factor = max(1, min(MIN_SIDE, max_side) // max(image.size))
    attrs = f'width="{image.width * factor}" height="{image.height * factor}"'
    if factor > 1:
        attrs += ' class="enlarged"'
    return f'<img src="{data_uri(image, fmt)}" {attrs} alt="{esc(alt)}" title="{esc(alt)}">'


def gain_axes(fig: Any, ax: Any, xlabel: str, title: str) -> None:
    """The look every gain curve shares: a zero line, labels, the legend, the margins."""
    ax.axhline(0.0, color="0.6", linewidth=0.7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("norm. abs. gain (higher = more fooled)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(loc="best", fontsize=7)
    fig.subplots_adjust(left=0.16, bottom=0.14, right=0.97, top=0.9)


def figure_uri(draw: Callable[[Any], None], size: tuple[float, float], dpi: int = 80) -> str:
    """A matplotlib figure drawn by ``draw(fig)`` as a palette PNG data URI (no pyplot, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    draw(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    with Image.open(buffer) as image:
        # plots are flat colours: a 64-colour palette keeps them sharp at a third of the size
        return data_uri(image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT))


def cell_colour(t: float, cmap: str) -> tuple[str, str]:
    """Background and text colour for a position ``t`` in [0, 1] of a matplotlib colour map."""
    import matplotlib

    r, g, b, _ = matplotlib.colormaps[cmap](min(max(t, 0.0), 1.0))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    background = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
    return background, "#000" if luminance > 0.5 else "#fff"


def table(head: Iterable[str], rows: Iterable[Iterable[str]], css_class: str = "board") -> str:
    """A ``<table>`` of escaped header labels and ready-made cell markup (``<td>`` / ``<th>`` per cell)."""
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    return f'<table class="{esc(css_class)}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
:root { --grey: #d9d9d9; --ink: #1d1d1f; --muted: #5f6368; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  margin: 0; background: #fafafa; }
header, main { max-width: 1400px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 12px; }
h1 { font-size: 22px; margin: 8px 0; } h2 { font-size: 19px; border-bottom: 2px solid #ccc; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 12px 0 6px; } h4 { font-size: 14px; margin: 10px 0 4px; }
nav a { color: #1558b0; } .summary, .legend, .note { color: var(--muted); }
.legend { font-size: 12px; margin: 2px 0 6px; }
.note { font-style: italic; }
.banner { background: #b3261e; color: #fff; padding: 10px 14px; border-radius: 6px; margin: 8px 0;
  font-size: 15px; }
.overview { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.heatmaps { flex: 3 1 560px; min-width: 0; } .leaderboard { flex: 1 1 300px; min-width: 280px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #e0e0e0; padding: 3px 7px; text-align: left; font-size: 13px; }
table.heat th { font-weight: 600; white-space: nowrap; background: #f1f3f4; }
table.heat td { text-align: center; min-width: 64px; padding: 0; }
table.heat td a { display: block; padding: 4px 6px; text-decoration: none; font-variant-numeric: tabular-nums; }
table.heat td.nodata { background: var(--grey); } table.heat td.nodata a { color: #444; font-style: italic; }
table.heat td.empty { background: repeating-linear-gradient(45deg, #fff, #fff 4px, #f0f0f0 4px, #f0f0f0 8px); }
table.board td:nth-child(n+3), table.scores td:nth-child(n+2) { font-variant-numeric: tabular-nums; }
table.transfer td.own { font-weight: bold; outline: 1.5px solid #000; }
.case { background: #fff; border: 1px solid #e0e0e0; border-radius: 6px; padding: 4px 14px 10px;
  margin: 12px 0; }
.case-body { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.case-body > .pairs-block { flex: 1 1 420px; min-width: 0; }
.case-body > img.plot { flex: 0 1 640px; }
.case-top { display: flex; flex-wrap: wrap; gap: 20px; align-items: flex-start; }
dl.identity { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 10px; margin: 4px 0;
  flex: 1 1 320px; }
dl.identity dt { color: var(--muted); } dl.identity dd { margin: 0; overflow-wrap: anywhere; }
.badge { font-size: 12px; padding: 1px 8px; border-radius: 10px; background: #e6f4ea; color: #137333;
  vertical-align: middle; }
.badge.status-failed { background: #fce8e6; color: #b3261e; }
.badge.status-error, .badge.status-interrupted, .badge.status-skipped { background: var(--grey); color: #333; }
pre.message { white-space: pre-wrap; background: #f6f6f6; padding: 6px 8px; border-left: 3px solid #b3261e;
  font-size: 12px; }
img.plot { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.pairs, .perturbations, .amp-plots { display: flex; flex-wrap: wrap; gap: 14px; }
.amp-plots img.plot { max-width: 460px; }
figure { margin: 0; background: #f8f9fa; border: 1px solid #e8eaed; border-radius: 4px; padding: 6px;
  max-width: 100%; }
figure img.enlarged { image-rendering: pixelated; }
figure img { image-rendering: auto; margin-right: 4px; vertical-align: top; max-width: 256px; height: auto; }
figcaption { font-size: 12px; color: var(--muted); max-width: 400px; margin-top: 4px; }
.perturbations figcaption { max-width: 300px; }
table.provenance th { background: #f1f3f4; font-weight: 600; white-space: nowrap; }
table.provenance td { overflow-wrap: anywhere; }
.verdicts { display: flex; flex-wrap: wrap; gap: 14px; align-items: stretch; }
.verdict { background: #fff; border: 1px solid #e0e0e0; border-left: 6px solid var(--grey); border-radius: 6px;
  padding: 4px 14px 10px; flex: 1 1 860px; min-width: 0; }
.verdict.fooled { border-left-color: #b3261e; } .verdict.robust { border-left-color: #137333; }
.verdict.unreliable { border-left-color: #e37400; }
.verdict h3 .badge.fooled { background: #fce8e6; color: #b3261e; }
.verdict h3 .badge.unreliable { background: #fef7e0; color: #8a4b00; }
.verdict h3 .badge.no-scores { background: var(--grey); color: #333; }
.verdict p.line { font-weight: 600; margin: 4px 0 8px; }
table.worst td.fooled { background: #fce8e6; } table.worst td.unreliable { background: #fef7e0; }
table.worst td.robust { background: #e6f4ea; }
table.worst tr.optimistic td, table.worst tr.optimistic th { color: var(--muted); font-style: italic; }
ul.flags { margin: 6px 0; padding-left: 20px; } ul.flags li { margin: 3px 0; }
ul.flags code { font-size: 11px; color: var(--muted); }
table.checks td.flagged { color: #b3261e; font-weight: 600; } table.checks td.passed { color: #137333; }
strong.breach { color: #b3261e; }
"""
