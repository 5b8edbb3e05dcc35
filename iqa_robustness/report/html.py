"""One self-contained HTML page per session: heatmaps, leaderboard, every case, perturbations, provenance.

The page shows a session of the MSU Metrics Robustness Benchmark (Antsiferova et al., "Comparing
the robustness of modern no-reference image- and video-quality metrics to adversarial attacks",
AAAI 2024) the way the paper does: a metric x attack heatmap of the robustness score R (higher =
more robust) and one of the normalised absolute gain (higher = more easily fooled), the metrics
ranked by R, and for each case its scores with 95% intervals, the clean-vs-attacked scatter, the
score distributions before and after, and the most-fooled images with their amplified
perturbations. Universal attacks add their perturbations and the gain against the amplitude; a
session at L-inf budgets (``--eps``) adds the gain against the budget per metric and attack, and
the areas over the budgets (``gain_auc``, ``robustness_auc``).

Everything the page needs is inside ``index.html``: CSS in a ``<style>`` element, images and
plots as ``data:`` URIs, no scripts, fonts or links to elsewhere. So the file can be attached to a
CI job or an MLflow run, mailed or archived, and it opens the same anywhere, offline, years later,
whatever happened to the artefact folders it was made from. Images are downscaled (and fewer are
shown when a session has many cases) to keep the page a few megabytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from iqa_robustness.conventions import dataset_slug, orient
from iqa_robustness.pictures import amplified, pair_of_row, read_pair, to_image
from iqa_robustness.report.table import as_number
from iqa_robustness.scores.formulas import CONFIDENCE, MOS_SCORES, PER_IMAGE_SCORES, RANK_SCORES
from iqa_robustness.scores.results import BEST_Q_CURVE, CaseResult
from iqa_robustness.scores.summary import (
    BUDGET_SCORES,
    amplitude_means,
    attack_spec_text,
    budget_rows,
    case_summary,
    leaderboard_rows,
)

log = logging.getLogger(__name__)

#: Images smaller than this (longer side, pixels) are shown enlarged by a whole factor.
MIN_SIDE = 128
#: Statuses whose scores are shown; the others get a grey cell saying so.
SCORED_STATUSES = ("passed", "failed")
#: Provenance tags shown first, in this order; any other tag follows alphabetically.
PROVENANCE_ORDER = (
    "session_id",
    "mlflow_run_id",
    "started",
    "git_commit",
    "git_branch",
    "device",
    "weights_mode",
    "benchmark_number",
    "iqa_robustness_version",
    "torch_version",
    "pyiqa_version",
    "hostname",
    "ci_pipeline_url",
)
_SCORE_LABELS = {
    "robustness_score": "robustness score R (higher = more robust)",
    "norm_abs_gain": "normalised absolute gain (higher = more fooled)",
    "norm_rel_gain": "normalised relative gain",
    "abs_gain": "absolute gain (raw units, oriented)",
    "rel_gain": "relative gain (raw, oriented)",
    "wasserstein_score": "Wasserstein score",
    "energy_distance_score": "energy-distance score",
    "spearman": "Spearman clean vs attacked (1 = ranking kept)",
    "kendall": "Kendall clean vs attacked",
    "pearson": "Pearson clean vs attacked",
    "srocc_clean": "SROCC with MOS, clean",
    "srocc_attacked": "SROCC with MOS, attacked",
    "plcc_clean": "PLCC with MOS, clean",
    "plcc_attacked": "PLCC with MOS, attacked",
    "krocc_clean": "KROCC with MOS, clean",
    "krocc_attacked": "KROCC with MOS, attacked",
}
_PERTURBATION_SUFFIXES = (".npy", ".png", ".pt", ".pth")


# --------------------------------------------------------------------------- entry point


def write_report(results: Sequence[CaseResult], out: Path, provenance: Mapping[str, str], title: str = "") -> Path:
    """Writes out/index.html (and nothing that the page needs from elsewhere); returns its path.

    Args:
        results: the session's cases, in any order; cases without rows (errors) are shown as such.
        out: the folder to write ``index.html`` in (created when missing).
        provenance: the session's tags (``git_commit``, ``device``, ``weights_mode``, ...), shown as given.
        title: the page title; by default one made from the session id or the start time.

    Returns:
        The path of ``index.html``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = _Page(list(results), dict(provenance), title)
    path = out / "index.html"
    path.write_text(page.render(), encoding="utf-8")
    log.info("report of %d cases written to %s", len(page.results), path)
    return path


# --------------------------------------------------------------------------- small helpers


def _fmt(value: Any, digits: int = 3) -> str:
    x = as_number(value)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}g}"


def _e(text: Any) -> str:
    """Escaped for HTML text and attribute values; URL schemes are written so nothing reads as a link."""
    return html.escape(str(text), quote=True).replace("://", "&#58;//")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "case"


def _unique_slugs(case_ids: Iterable[str]) -> list[str]:
    seen: Counter[str] = Counter()
    slugs = []
    for case_id in case_ids:
        base = _slug(case_id)
        seen[base] += 1
        slugs.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return slugs


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=88)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _image_tag(
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
    return f'<img src="{_data_uri(image, fmt)}" {attrs} alt="{_e(alt)}" title="{_e(alt)}">'


def _gain_axes(fig: Any, ax: Any, xlabel: str, title: str) -> None:
    """The look every gain curve shares: a zero line, labels, the legend, the margins."""
    ax.axhline(0.0, color="0.6", linewidth=0.7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("norm. abs. gain (higher = more fooled)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(loc="best", fontsize=7)
    fig.subplots_adjust(left=0.16, bottom=0.14, right=0.97, top=0.9)


def _figure_uri(draw: Callable[[Any], None], size: tuple[float, float], dpi: int = 80) -> str:
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
        return _data_uri(image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT))


def _cell_colour(t: float, cmap: str) -> tuple[str, str]:
    """Background and text colour for a position ``t`` in [0, 1] of a matplotlib colour map."""
    import matplotlib

    r, g, b, _ = matplotlib.colormaps[cmap](min(max(t, 0.0), 1.0))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    background = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
    return background, "#000" if luminance > 0.5 else "#fff"


def _budget(n_cases: int) -> tuple[int, int]:
    """(longest image side, images shown per case): smaller and fewer as a session grows."""
    if n_cases <= 30:
        return 256, 3
    if n_cases <= 100:
        return 160, 2
    return 96, 1


# --------------------------------------------------------------------------- the cases as data


@dataclass
class _Case:
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


def _place(cases: list[_Case]) -> None:
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


# --------------------------------------------------------------------------- the page


class _Page:
    def __init__(self, results: list[CaseResult], provenance: dict[str, str], title: str) -> None:
        self.results = results
        self.provenance = provenance
        self.cases = [_Case(r, s) for r, s in zip(results, _unique_slugs(r.case_id for r in results), strict=True)]
        _place(self.cases)
        self.max_side, self.pairs_shown = _budget(len(results))
        session = provenance.get("session_id") or provenance.get("mlflow_run_id") or provenance.get("started", "")
        self.title = title or (f"iqa-robustness session {session}" if session else "iqa-robustness session report")
        self.generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    # -- the whole ------------------------------------------------------------------------
    def render(self) -> str:
        universal = [c for c in self.cases if c.result.amplitude is not None]
        nav = ['<a href="#overview">overview</a>', '<a href="#cases">cases</a>']
        budgeted = any(c.result.budget is not None for c in self.cases)
        if universal:
            nav.append('<a href="#universal">universal perturbations</a>')
        if budgeted:
            nav.append('<a href="#budgets">budgets</a>')
        transferred = any(r.transfer for r in self.results)
        if transferred:
            nav.append('<a href="#transfer">transfer</a>')
        defended = any("defence_label" in r.params for r in self.results)
        if defended:
            nav.append('<a href="#defences">defences</a>')
        nav.append('<a href="#provenance">provenance</a>')
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<header><h1>{_e(self.title)}</h1>{self._banner()}",
            f'<p class="summary">{self._status_text()} · generated {_e(self.generated)}</p>',
            f"<nav>{' · '.join(nav)}</nav></header>",
            '<main><section id="overview"><h2>Overview</h2>',
            '<div class="overview">',
            f'<div class="heatmaps">{self._heatmaps()}</div>',
            f'<aside class="leaderboard">{self._leaderboard()}</aside>',
            "</div></section>",
            f'<section id="cases"><h2>Cases ({len(self.cases)})</h2>',
            *(self._case_section(c) for c in self.cases),
            "</section>",
        ]
        if universal:
            parts.append(self._universal(universal))
        if budgeted:
            parts.append(self._budgets())
        if transferred:
            parts.append(self._transfer())
        if defended:
            parts.append(self._defences())
        parts += [self._provenance(), "</main></body></html>"]
        return "\n".join(parts)

    def _random_weights(self) -> bool:
        modes = {self.provenance.get("weights_mode", "")} | {r.weights_mode for r in self.results}
        return any("random" in m for m in modes) or str(self.provenance.get("benchmark_number", "")).lower() == "false"

    def _banner(self) -> str:
        if not self._random_weights():
            return ""
        return (
            '<div class="banner" role="alert"><strong>Random weights: these are not benchmark numbers.</strong> '
            "At least one metric of this session ran with randomly initialised weights; the scores only show "
            "that the pipeline works.</div>"
        )

    def _status_text(self) -> str:
        counts = Counter(r.status for r in self.results)
        text = ", ".join(f"{n} {_e(s)}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{len(self.results)} cases" + (f" ({text})" if text else "")

    # -- heatmaps ---------------------------------------------------------------------------
    def _heatmaps(self) -> str:
        return self._heatmap(
            "robustness_score",
            "Robustness score R",
            "higher = more robust (green); per image log10(room to move / |score change|), on min-max scaled scores",
            "RdYlGn",
        ) + self._heatmap(
            "norm_abs_gain",
            "Normalised absolute gain",
            "higher = more fooled (red); mean gain towards better quality, in units of the clean scores' range",
            "RdYlGn_r",
        )

    def _heatmap(self, key: str, name: str, legend: str, cmap: str) -> str:
        if not self.cases:
            return f'<p class="note">No cases: no {_e(name)} heatmap.</p>'
        rows = list(dict.fromkeys(c.row for c in self.cases))
        columns = list(dict.fromkeys(c.column for c in self.cases))
        grid = {(c.row, c.column): c for c in self.cases}
        values = [v for v in (c.score(key) for c in self.cases) if math.isfinite(v)]
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        head = "".join(f'<th scope="col">{_e(col)}</th>' for col in columns)
        body = []
        for row in rows:
            cells = [f'<th scope="row">{_e(row)}</th>']
            for col in columns:
                case = grid.get((row, col))
                cells.append('<td class="empty"></td>' if case is None else self._cell(case, key, low, high, cmap))
            body.append(f"<tr>{''.join(cells)}</tr>")
        scale = f"colour scale {_fmt(low)} … {_fmt(high)}" if values else "no finite values"
        return (
            f'<div class="heatmap" data-score="{_e(key)}"><h3>{_e(name)}</h3>'
            f'<p class="legend">{_e(legend)}; {scale}; grey: no score (status shown).</p>'
            f'<div class="scroll"><table class="heat"><thead><tr><th></th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div></div>"
        )

    def _cell(self, case: _Case, key: str, low: float, high: float, cmap: str) -> str:
        r = case.result
        value = case.score(key)
        attrs = f'data-case="{_e(r.case_id)}" title="{_e(r.case_id)} ({_e(r.status)})"'
        link = f'href="#case-{_e(case.slug)}"'
        if not case.scored or not math.isfinite(value):
            text = r.status if not case.scored else "n/a"
            return f'<td class="cell nodata status-{_e(r.status)}" {attrs}><a {link}>{_e(text)}</a></td>'
        t = 0.5 if high <= low else (value - low) / (high - low)
        background, colour = _cell_colour(t, cmap)
        mark = " ✗" if r.status == "failed" else ""
        return (
            f'<td class="cell status-{_e(r.status)}" {attrs} style="background:{background}">'
            f'<a {link} style="color:{colour}">{_fmt(value)}{mark}</a></td>'
        )

    # -- leaderboard ------------------------------------------------------------------------
    def _leaderboard(self) -> str:
        ranked = leaderboard_rows(
            {"metric": r.metric, "attack": r.attack, "weights_mode": r.weights_mode, **r.scores}
            for r in (c.result for c in self.cases)
        )
        rows = [(r["metric"], r["robustness_score"], r["norm_abs_gain"], r["n_cases"], r["n_total"]) for r in ranked]
        body = "".join(
            f"<tr><td>{i}</td><td>{_e(m)}</td><td>{_fmt(rob)}</td><td>{_fmt(gain)}</td><td>{n}/{total}</td></tr>"
            for i, (m, rob, gain, n, total) in enumerate(rows, 1)
        )
        return (
            "<h3>Leaderboard</h3>"
            '<p class="legend">Metrics ranked by mean robustness score R, most robust first: R is averaged over '
            "each attack's cases (datasets, train sets, amplitudes), then over the attacks, as the benchmark and "
            "<code>iqa-robustness leaderboard</code> do. Cases without a score do not count.</p>"
            '<table class="board"><thead><tr><th>#</th><th>metric</th><th>mean R</th><th>mean norm gain</th>'
            f"<th>cases scored</th></tr></thead><tbody>{body}</tbody></table>"
        )

    # -- one case ---------------------------------------------------------------------------
    def _case_section(self, case: _Case) -> str:
        r = case.result
        direction = "lower" if r.lower_better else "higher"
        identity = [
            ("metric", f"{r.metric} ({direction} raw score = better quality)"),
            ("attack", attack_spec_text(r)),
            ("dataset", dataset_slug(r.dataset)),
        ]
        if r.train_dataset is not None:
            identity.append(("trained on", dataset_slug(r.train_dataset)))
        if r.amplitude is not None:
            identity.append(("amplitude", f"{r.amplitude:g}"))
        identity += [
            ("weights", r.weights_mode),
            ("images", f"{r.n_images} scored" + (f", {r.n_skipped} skipped" if r.n_skipped else "")),
            ("time per image", f"{_fmt(r.seconds_per_image)} s"),
        ]
        if "queries_used" in r.scores:
            limit = r.params.get("query_limit", "")
            identity.append(
                (
                    "queries per image",
                    f"mean {_fmt(r.scores['queries_used'])}, max {_fmt(r.scores.get('queries_used_max'))} "
                    f"of {r.params.get('queries', '?')}" + (f" ({limit})" if limit else ""),
                )
            )
        dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in identity)
        message = f'<pre class="message">{_e(r.message)}</pre>' if r.message else ""
        skipped = ""
        if r.n_skipped:
            items = "".join(
                f"<li>{_e(x.get('image_name', '?'))}: {_e(x.get('skip_reason'))}</li>" for x in r.skipped_rows
            )
            skipped = f'<details><summary>{r.n_skipped} skipped</summary><ul class="skipped">{items}</ul></details>'
        return (
            f'<section class="case" id="case-{_e(case.slug)}"><h3>{_e(r.case_id)} '
            f'<span class="badge status-{_e(r.status)}">{_e(r.status)}</span></h3>'
            f'<div class="case-top"><dl class="identity">{dl}</dl>{self._scores_table(r)}</div>'
            f'{message}{skipped}<div class="case-body">{self._plots(r)}{self._pairs(r)}</div></section>'
        )

    @staticmethod
    def _scores_table(r: CaseResult) -> str:
        if not r.scores:
            return '<p class="note">No scores: the case has no scored images.</p>'
        rows = []
        for key in (*PER_IMAGE_SCORES, "wasserstein_score", "energy_distance_score", *RANK_SCORES, *MOS_SCORES):
            if key not in r.scores:
                continue
            low, high = r.scores.get(f"{key}_ci_low"), r.scores.get(f"{key}_ci_high")
            interval = f"[{_fmt(low)}, {_fmt(high)}]" if low is not None and high is not None else ""
            label = _SCORE_LABELS.get(key, key)
            rows.append(f"<tr><td>{_e(label)}</td><td>{_fmt(r.scores[key])}</td><td>{interval}</td></tr>")
        for key in ("psnr", "ssim"):
            values = [as_number(x.get(key)) for x in r.scored_rows]
            if any(math.isfinite(v) for v in values):
                rows.append(f"<tr><td>mean {key.upper()}</td><td>{_fmt(_mean(values), 4)}</td><td></td></tr>")
        return (
            f'<table class="scores"><thead><tr><th>score</th><th>value</th><th>{CONFIDENCE:.0%} interval</th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )

    def _plots(self, r: CaseResult) -> str:
        points = [(as_number(x.get("clear")), as_number(x.get("attacked"))) for x in r.scored_rows]
        points = [(c, a) for c, a in points if math.isfinite(c) and math.isfinite(a)]
        if not points:
            return '<p class="note">No per-image scores to plot.</p>'
        clear, attacked = (np.array(v) for v in zip(*points, strict=True))
        better = "lower" if r.lower_better else "higher"

        def draw(fig: Any) -> None:
            scatter, hist = fig.subplots(1, 2)
            lo, hi = float(min(clear.min(), attacked.min())), float(max(clear.max(), attacked.max()))
            scatter.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", linewidth=0.8, label="unchanged")
            scatter.scatter(clear, attacked, s=12, alpha=0.75, label="image")
            scatter.set_xlabel(f"clean score ({better} is better)", fontsize=8)
            scatter.set_ylabel("attacked score", fontsize=8)
            scatter.set_title("clean vs attacked", fontsize=9)
            scatter.legend(loc="best", fontsize=7)
            edges = np.histogram_bin_edges(np.concatenate([clear, attacked]), bins=min(30, max(5, len(clear))))
            hist.hist(clear, bins=edges, alpha=0.55, label="clean", color="tab:blue")
            hist.hist(attacked, bins=edges, alpha=0.55, label="attacked", color="tab:red")
            hist.set_xlabel(f"raw score ({better} is better)", fontsize=8)
            hist.set_ylabel("images", fontsize=8)
            hist.set_title("score distributions", fontsize=9)
            hist.legend(loc="best", fontsize=7)
            for ax in (scatter, hist):
                ax.tick_params(labelsize=7)
            fig.subplots_adjust(left=0.08, bottom=0.16, right=0.98, top=0.9, wspace=0.28)

        uri = _figure_uri(draw, (8.0, 3.2))
        alt = f"clean against attacked score per image and the score distributions of {r.case_id}"
        return f'<img class="plot" src="{uri}" alt="{_e(alt)}" width="640" height="256">' + self._query_plot(r)

    @staticmethod
    def _query_plot(r: CaseResult) -> str:
        """A query-based case's mean best q against queries (nothing for other attacks)."""
        curve = [(as_number(s), as_number(v)) for s, v in r.curves.get(BEST_Q_CURVE, [])]
        curve = [(s, v) for s, v in curve if math.isfinite(s) and math.isfinite(v)]
        if not curve:
            return ""
        steps, values = zip(*curve, strict=True)

        def draw(fig: Any) -> None:
            ax = fig.add_subplot()
            ax.plot(steps, values, color="tab:red", linewidth=1.2, drawstyle="steps-post")
            ax.set_xlabel("queries per image", fontsize=8)
            ax.set_ylabel("mean best q (oriented: higher = better)", fontsize=8)
            ax.set_title("best score found against queries", fontsize=9)
            ax.tick_params(labelsize=7)
            fig.subplots_adjust(left=0.16, bottom=0.16, right=0.97, top=0.88)

        uri = _figure_uri(draw, (4.0, 3.2))
        alt = f"mean best oriented score against queries of {r.case_id}"
        return f'<img class="plot query-curve" src="{uri}" alt="{_e(alt)}" width="320" height="256">'

    def _pairs(self, r: CaseResult) -> str:
        pair_files = {name: Path(path) for name, path in r.artifacts.items() if _is_pair(name)}
        if not pair_files:
            return '<p class="note">No image pairs were kept for this case.</p>' if r.rows else ""
        shown = [
            (row, path)
            for name, path in pair_files.items()
            for row in r.scored_rows
            if pair_of_row(str(row.get("image_name", "")), name)
        ]
        candidates = sorted(shown, key=lambda x: -_oriented_gain(x[0], r.lower_better))
        figures, notes = [], []
        for row, path in candidates:
            if len(figures) == self.pairs_shown:
                break
            try:
                figures.append(self._pair_figure(r, row, path))
            except (OSError, ValueError) as exc:
                log.warning("case %s: cannot show the image pair %s (%s)", r.case_id, path, exc)
                notes.append(f"{path.name}: {exc}")
        if notes:
            notes_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
            notes_html = f'<div class="note">Image pairs not shown (missing or unreadable): <ul>{notes_html}</ul></div>'
        else:
            notes_html = ""
        if not figures:
            return notes_html or '<p class="note">No kept image pair matches a scored image.</p>'
        heading = f"<h4>Most fooled images (largest gain towards {'lower' if r.lower_better else 'higher'} scores)</h4>"
        return f'<div class="pairs-block">{heading}<div class="pairs">{"".join(figures)}</div>{notes_html}</div>'

    def _pair_figure(self, r: CaseResult, row: Mapping[str, Any], path: Path) -> str:
        clean, adversarial = read_pair(path)
        view, k = amplified(adversarial - clean)
        images = [
            (to_image(clean), "clean", Image.Resampling.LANCZOS),
            (to_image(adversarial), "adversarial", Image.Resampling.LANCZOS),
            (to_image(view), f"perturbation ×{k:.3g}", Image.Resampling.NEAREST),
        ]
        tags = "".join(_image_tag(im, self.max_side, label, resample) for im, label, resample in images)
        name = str(row.get("image_name", path.name))
        gain = _oriented_gain(row, r.lower_better)
        psnr = as_number(row.get("psnr"))
        caption = (
            f"<strong>{_e(name)}</strong>: clean {_fmt(row.get('clear'), 4)}, attacked {_fmt(row.get('attacked'), 4)}, "
            f"gain {'+' if gain > 0 else ''}{_fmt(gain, 3)} (raw units, towards better quality), "
            f"PSNR {_fmt(psnr, 4)} dB. Left to right: clean, adversarial, perturbation "
            f"0.5 + (adversarial − clean) × {k:.3g}."
        )
        return f"<figure>{tags}<figcaption>{caption}</figcaption></figure>"

    # -- universal perturbations ------------------------------------------------------------
    def _universal(self, cases: list[_Case]) -> str:
        groups: dict[str, dict[str, Path]] = {}  # stem -> suffix -> path, in order of first use
        used_by: dict[str, list[str]] = defaultdict(list)
        for c in cases:
            for stem, files in _perturbation_files(c.result).items():
                groups.setdefault(stem, {}).update(files)
                used_by[stem].append(c.result.case_id)
        figures = [self._perturbation_figure(stem, files, used_by[stem]) for stem, files in groups.items()]
        images = (
            f'<div class="perturbations">{"".join(figures)}</div>'
            if figures
            else '<p class="note">No perturbation files were listed with the universal cases.</p>'
        )
        return (
            '<section id="universal"><h2>Universal perturbations</h2>'
            f"<h3>Perturbations ({len(figures)})</h3>{images}"
            "<h3>Gain against amplitude</h3>"
            '<p class="legend">Normalised absolute gain (higher = more fooled) of each metric × universal attack '
            f"at each amplitude, with its {CONFIDENCE:.0%} interval.</p>{self._amplitude_plots(cases)}</section>"
        )

    def _perturbation_figure(self, stem: str, files: Mapping[str, Path], used_by: list[str]) -> str:
        from iqa_robustness.attacks.perturbation import load_perturbation

        cases = ", ".join(used_by[:6]) + (f" and {len(used_by) - 6} more" if len(used_by) > 6 else "")
        caption_tail = f"used by {_e(cases)}"
        source = files.get(".npy") or files.get(".png")
        if source is None:
            generator = files.get(".pt") or files.get(".pth")
            what = f"{_e(generator.name)}: " if generator else ""
            return (
                f'<figure class="nodata"><p class="note">{what}an image-conditioned generator: no single '
                f"perturbation to show.</p><figcaption>{_e(stem)}, {caption_tail}</figcaption></figure>"
            )
        try:
            delta = load_perturbation(source).to_numpy()
        except (OSError, ValueError) as exc:
            log.warning("cannot show the perturbation %s (%s)", source, exc)
            return (
                f'<figure class="nodata"><p class="note">{_e(source.name)} missing or unreadable: {_e(exc)}</p>'
                f"<figcaption>{_e(stem)}, {caption_tail}</figcaption></figure>"
            )
        view, k = amplified(delta)
        tag = _image_tag(to_image(view), self.max_side, stem, Image.Resampling.NEAREST, fmt="PNG")
        linf = float(np.max(np.abs(delta))) if delta.size else 0.0
        return (
            f"<figure>{tag}<figcaption>"
            f"<strong>{_e(source.name)}</strong>: "
            f"{delta.shape[1]}×{delta.shape[0]} px, L∞ {_fmt(linf)}, shown as 0.5 + δ × {k:.3g}; "
            f"{caption_tail}</figcaption></figure>"
        )

    def _amplitude_plots(self, cases: list[_Case]) -> str:
        by_attack: dict[str, dict[str, list[CaseResult]]] = defaultdict(lambda: defaultdict(list))
        several = len({(c.result.dataset, c.result.train_dataset) for c in cases}) > 1
        for c in cases:
            if not c.scored:
                continue
            r = c.result
            line = r.metric
            if several:
                line += f" · {dataset_slug(r.dataset)} (on {dataset_slug(r.train_dataset or '?')})"
            by_attack[r.attack][line].append(r)
        if not by_attack:
            return '<p class="note">No universal case has scores.</p>'
        plots = []
        for attack, lines in by_attack.items():

            def draw(fig: Any, attack: str = attack, lines: Mapping[str, list[CaseResult]] = lines) -> None:
                ax = fig.add_subplot()
                for label, members in lines.items():
                    members = sorted(members, key=lambda m: m.amplitude or 0.0)
                    amps = np.array([m.amplitude for m in members], dtype=float)
                    gains = np.array([as_number(m.scores.get("norm_abs_gain")) for m in members])
                    low = np.array([as_number(m.scores.get("norm_abs_gain_ci_low")) for m in members])
                    high = np.array([as_number(m.scores.get("norm_abs_gain_ci_high")) for m in members])
                    errors = np.nan_to_num(np.vstack([gains - low, high - gains]), nan=0.0).clip(min=0)
                    ax.errorbar(amps, gains, yerr=errors, marker="o", markersize=4, capsize=3, label=label)
                _gain_axes(fig, ax, "amplitude", attack)

            uri = _figure_uri(draw, (4.6, 3.4))
            plots.append(f'<img class="plot" src="{uri}" alt="{_e(f"gain against amplitude, {attack}")}">')
        return f'<div class="amp-plots">{"".join(plots)}</div>'

    # -- budgets ----------------------------------------------------------------------------
    def _budgets(self) -> str:
        summary = [case_summary(c.result) for c in self.cases if c.scored]
        rows = budget_rows(summary + amplitude_means(summary))
        if not rows:
            return (
                '<section id="budgets"><h2>Budgets</h2>'
                '<p class="note">No case at an L-inf budget has scores.</p></section>'
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
                        label += f" · {_dataset_label(row)}"
                    label += f" (AUC {_fmt(row['gain_auc'])})"
                    ax.plot(units, gains, marker="o", markersize=4, label=label)
                _gain_axes(fig, ax, "L∞ budget (/255)", attack)

            uri = _figure_uri(draw, (4.6, 3.4))
            plots.append(f'<img class="plot" src="{uri}" alt="{_e(f"gain against budget, {attack}")}">')
        areas = list(BUDGET_SCORES.values())
        head = "".join(f"<th>{_e(h)}</th>" for h in ("metric", "attack", "dataset", "budgets (/255)", *areas))
        body = "".join(
            "<tr>"
            + "".join(
                f"<td>{_e(v)}</td>"
                for v in (r["metric"], r["attack"], _dataset_label(r), r["budgets"], *(_fmt(r[a]) for a in areas))
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

    # -- transfer ---------------------------------------------------------------------------
    def _transfer(self) -> str:
        from iqa_robustness.report.transfer import draw_matrix, figure_size
        from iqa_robustness.scores.transfer import session_transfer_rows, transfer_matrix

        rows = session_transfer_rows(self.results)
        matrix = transfer_matrix(rows)
        uri = _figure_uri(lambda fig: draw_matrix(fig, matrix), figure_size(matrix))
        head = "".join(f'<th scope="col">{_e(t)}</th>' for t in matrix["targets"])
        body = "".join(
            f'<tr><th scope="row">{_e(source)}</th>'
            + "".join(f'<td class="{"own" if own else ""}">{_fmt(v)}</td>' for v, own in zip(values, owns, strict=True))
            + "</tr>"
            for source, values, owns in zip(matrix["sources"], matrix["values"], matrix["own"], strict=True)
        )
        errors = sorted({str(r["error"]) for r in rows if r.get("error")})
        notes = "".join(f'<p class="note">Not scored: {_e(e)}</p>' for e in errors)
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

    # -- defences ---------------------------------------------------------------------------
    def _defences(self) -> str:
        from iqa_robustness.report.table import DEFENCE_COLUMNS
        from iqa_robustness.scores.defences import defence_leaderboard, defence_table
        from iqa_robustness.scores.summary import amplitude_means, case_summary

        summary = [case_summary(r) for r in self.results]
        table = defence_table(summary + amplitude_means(summary))
        head = "".join(f'<th scope="col">{_e(label)}</th>' for _, label in DEFENCE_COLUMNS)
        body = "".join(
            f"<tr><th>{_e(r['metric'])}</th><th>{_e(r['defence'])}</th><th>{_e(r['attack'])}</th>"
            + "".join(f"<td>{_fmt(r.get(k))}</td>" for k, _ in DEFENCE_COLUMNS)
            + "</tr>"
            for r in table
        )
        board = defence_leaderboard(table)
        board_rows = "".join(
            f"<tr><td>{r['rank']}</td><th>{_e(r['metric'])}</th><th>{_e(r['defence'])}</th>"
            f"<td>{_fmt(r['adaptive_robust_abs_gain'])}</td><td>{_fmt(r['nonadaptive_robust_abs_gain'])}</td>"
            f"<td>{_fmt(r['recovered_fraction'])}</td><td>{_fmt(r['clean_consistency'])}</td>"
            f"<td>{_fmt(r['similarity'])}</td><td>{r['n_attacks']}</td></tr>"
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

    # -- provenance -------------------------------------------------------------------------
    def _provenance(self) -> str:
        keys = [k for k in PROVENANCE_ORDER if k in self.provenance]
        keys += sorted(k for k in self.provenance if k not in PROVENANCE_ORDER)
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(self.provenance[k])}</td></tr>" for k in keys)
        counts = Counter(r.status for r in self.results)
        rows += "".join(f"<tr><th>cases {_e(s)}</th><td>{n}</td></tr>" for s, n in sorted(counts.items()))
        rows += f"<tr><th>cases in all</th><td>{len(self.results)}</td></tr>"
        rows += f"<tr><th>report generated</th><td>{_e(self.generated)}</td></tr>"
        return f'<section id="provenance"><h2>Provenance</h2><table class="provenance">{rows}</table></section>'


# --------------------------------------------------------------------------- row and file helpers


def _dataset_label(row: Mapping[str, object]) -> str:
    """``msu5``, or ``msu5 (on sample)`` for a universal attack's row."""
    label = dataset_slug(str(row["dataset"]))
    return f"{label} (on {dataset_slug(str(row['train_dataset']))})" if row.get("train_dataset") else label


def _oriented_gain(row: Mapping[str, Any], lower_better: bool) -> float:
    """``attacked - clear`` oriented so that positive means the attack raised the quality (fooled)."""
    gain = float(orient(as_number(row.get("attacked")) - as_number(row.get("clear")), lower_better))
    return gain if math.isfinite(gain) else -math.inf


def _is_pair(name: str) -> bool:
    return name.startswith("pair_") and name.endswith(".png")


def _perturbation_files(r: CaseResult) -> dict[str, dict[str, Path]]:
    """A universal case's perturbation files, stem -> suffix -> path (``perturbation_*``, or any .npy/.pt group)."""
    groups: dict[str, dict[str, Path]] = defaultdict(dict)
    for name, path in r.artifacts.items():
        suffix = Path(name).suffix.lower()
        if _is_pair(name) or suffix not in _PERTURBATION_SUFFIXES:
            continue
        groups[str(Path(path).with_suffix(""))][suffix] = Path(path)
    return {
        stem: files
        for stem, files in groups.items()
        if Path(stem).name.startswith("perturbation_") or {".npy", ".pt", ".pth"} & files.keys()
    }


_CSS = """
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
"""
