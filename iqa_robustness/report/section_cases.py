"""The report's per-case detail: identity, scores with intervals, plots and the most-fooled images.

For each case: the metric, attack (as run), data set and weights; every score with its 95% interval;
the clean-vs-attacked scatter and the score distributions before and after; a query-based attack's best
score against queries; and the images the attack fooled most, with their amplified perturbations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from iqa_robustness.conventions import dataset_slug, orient
from iqa_robustness.pictures import amplified, pair_of_row, read_pair, to_image
from iqa_robustness.report.markup import esc, figure_uri, fmt, image_tag, mean_of
from iqa_robustness.report.table import as_number
from iqa_robustness.report.view import CaseView, Section, SessionView
from iqa_robustness.scores.formulas import CONFIDENCE, MOS_SCORES, PER_IMAGE_SCORES, RANK_SCORES
from iqa_robustness.scores.results import BEST_Q_CURVE, CaseResult
from iqa_robustness.scores.summary import attack_spec_text

log = logging.getLogger(__name__)

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


def render(view: SessionView) -> str:
    return (
        f'<section id="cases"><h2>Cases ({len(view.cases)})</h2>'
        + "".join(case_section(view, c) for c in view.cases)
        + "</section>"
    )


def case_section(view: SessionView, case: CaseView) -> str:
    """One case: identity, scores with intervals, message and skipped images, plots, most-fooled pairs."""
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
        ("time per image", f"{fmt(r.seconds_per_image)} s"),
    ]
    if "queries_used" in r.scores:
        limit = r.params.get("query_limit", "")
        identity.append(
            (
                "queries per image",
                f"mean {fmt(r.scores['queries_used'])}, max {fmt(r.scores.get('queries_used_max'))} "
                f"of {r.params.get('queries', '?')}" + (f" ({limit})" if limit else ""),
            )
        )
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in identity)
    message = f'<pre class="message">{esc(r.message)}</pre>' if r.message else ""
    skipped = ""
    if r.n_skipped:
        items = "".join(
            f"<li>{esc(x.get('image_name', '?'))}: {esc(x.get('skip_reason'))}</li>" for x in r.skipped_rows
        )
        skipped = f'<details><summary>{r.n_skipped} skipped</summary><ul class="skipped">{items}</ul></details>'
    return (
        f'<section class="case" id="case-{esc(case.slug)}"><h3>{esc(r.case_id)} '
        f'<span class="badge status-{esc(r.status)}">{esc(r.status)}</span></h3>'
        f'<div class="case-top"><dl class="identity">{dl}</dl>{scores_table(r)}</div>'
        f'{message}{skipped}<div class="case-body">{plots(r)}{pairs(view, r)}</div></section>'
    )


def scores_table(r: CaseResult) -> str:
    if not r.scores:
        return '<p class="note">No scores: the case has no scored images.</p>'
    rows = []
    for key in (*PER_IMAGE_SCORES, "wasserstein_score", "energy_distance_score", *RANK_SCORES, *MOS_SCORES):
        if key not in r.scores:
            continue
        low, high = r.scores.get(f"{key}_ci_low"), r.scores.get(f"{key}_ci_high")
        interval = f"[{fmt(low)}, {fmt(high)}]" if low is not None and high is not None else ""
        label = _SCORE_LABELS.get(key, key)
        rows.append(f"<tr><td>{esc(label)}</td><td>{fmt(r.scores[key])}</td><td>{interval}</td></tr>")
    for key in ("psnr", "ssim"):
        values = [as_number(x.get(key)) for x in r.scored_rows]
        if any(math.isfinite(v) for v in values):
            rows.append(f"<tr><td>mean {key.upper()}</td><td>{fmt(mean_of(values), 4)}</td><td></td></tr>")
    return (
        f'<table class="scores"><thead><tr><th>score</th><th>value</th><th>{CONFIDENCE:.0%} interval</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def plots(r: CaseResult) -> str:
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

    uri = figure_uri(draw, (8.0, 3.2))
    alt = f"clean against attacked score per image and the score distributions of {r.case_id}"
    return f'<img class="plot" src="{uri}" alt="{esc(alt)}" width="640" height="256">' + query_plot(r)


def query_plot(r: CaseResult) -> str:
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

    uri = figure_uri(draw, (4.0, 3.2))
    alt = f"mean best oriented score against queries of {r.case_id}"
    return f'<img class="plot query-curve" src="{uri}" alt="{esc(alt)}" width="320" height="256">'


def pairs(view: SessionView, r: CaseResult) -> str:
    pair_files = {name: Path(path) for name, path in r.artifacts.items() if is_pair(name)}
    if not pair_files:
        return '<p class="note">No image pairs were kept for this case.</p>' if r.rows else ""
    shown = [
        (row, path)
        for name, path in pair_files.items()
        for row in r.scored_rows
        if pair_of_row(str(row.get("image_name", "")), name)
    ]
    candidates = sorted(shown, key=lambda x: -oriented_gain(x[0], r.lower_better))
    figures, notes = [], []
    for row, path in candidates:
        if len(figures) == view.pairs_shown:
            break
        try:
            figures.append(pair_figure(view, r, row, path))
        except (OSError, ValueError) as exc:
            log.warning("case %s: cannot show the image pair %s (%s)", r.case_id, path, exc)
            notes.append(f"{path.name}: {exc}")
    if notes:
        notes_html = "".join(f"<li>{esc(n)}</li>" for n in notes)
        notes_html = f'<div class="note">Image pairs not shown (missing or unreadable): <ul>{notes_html}</ul></div>'
    else:
        notes_html = ""
    if not figures:
        return notes_html or '<p class="note">No kept image pair matches a scored image.</p>'
    heading = f"<h4>Most fooled images (largest gain towards {'lower' if r.lower_better else 'higher'} scores)</h4>"
    return f'<div class="pairs-block">{heading}<div class="pairs">{"".join(figures)}</div>{notes_html}</div>'


def pair_figure(view: SessionView, r: CaseResult, row: Mapping[str, Any], path: Path) -> str:
    clean, adversarial = read_pair(path)
    amplified_view, k = amplified(adversarial - clean)
    images = [
        (to_image(clean), "clean", Image.Resampling.LANCZOS),
        (to_image(adversarial), "adversarial", Image.Resampling.LANCZOS),
        (to_image(amplified_view), f"perturbation ×{k:.3g}", Image.Resampling.NEAREST),
    ]
    tags = "".join(image_tag(im, view.max_side, label, resample) for im, label, resample in images)
    name = str(row.get("image_name", path.name))
    gain = oriented_gain(row, r.lower_better)
    psnr = as_number(row.get("psnr"))
    caption = (
        f"<strong>{esc(name)}</strong>: clean {fmt(row.get('clear'), 4)}, attacked {fmt(row.get('attacked'), 4)}, "
        f"gain {'+' if gain > 0 else ''}{fmt(gain, 3)} (raw units, towards better quality), "
        f"PSNR {fmt(psnr, 4)} dB. Left to right: clean, adversarial, perturbation "
        f"0.5 + (adversarial − clean) × {k:.3g}."
    )
    return f"<figure>{tags}<figcaption>{caption}</figcaption></figure>"


def oriented_gain(row: Mapping[str, Any], lower_better: bool) -> float:
    """``attacked - clear`` oriented so that positive means the attack raised the quality (fooled)."""
    gain = float(orient(as_number(row.get("attacked")) - as_number(row.get("clear")), lower_better))
    return gain if math.isfinite(gain) else -math.inf


def is_pair(name: str) -> bool:
    """Whether an artefact is a kept clean | adversarial image pair (``pair_<image>.png``)."""
    return name.startswith("pair_") and name.endswith(".png")


SECTION = Section(anchor="cases", nav="cases", order=30, render=render)
