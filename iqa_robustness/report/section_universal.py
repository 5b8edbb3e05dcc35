"""The report's universal perturbations: each trained perturbation amplified, and the gain against amplitude.

Universal attacks (docs/methodology.md, "Universal attacks") train one perturbation per metric and apply it
at several amplitudes; the section shows every perturbation file once, with the cases that used it, and
per attack the normalised gain of each metric at each amplitude with its 95% interval.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from iqa_robustness.conventions import dataset_slug
from iqa_robustness.pictures import amplified, to_image
from iqa_robustness.report.markup import esc, figure_uri, fmt, gain_axes, image_tag
from iqa_robustness.report.section_cases import is_pair
from iqa_robustness.report.table import as_number
from iqa_robustness.report.view import CaseView, Section, SessionView, any_result
from iqa_robustness.scores.formulas import CONFIDENCE
from iqa_robustness.scores.results import CaseResult

log = logging.getLogger(__name__)

_PERTURBATION_SUFFIXES = (".npy", ".png", ".pt", ".pth")


def render(view: SessionView) -> str:
    cases = [c for c in view.cases if c.result.amplitude is not None]
    groups: dict[str, dict[str, Path]] = {}  # stem -> suffix -> path, in order of first use
    used_by: dict[str, list[str]] = defaultdict(list)
    for c in cases:
        for stem, files in perturbation_files(c.result).items():
            groups.setdefault(stem, {}).update(files)
            used_by[stem].append(c.result.case_id)
    figures = [perturbation_figure(view, stem, files, used_by[stem]) for stem, files in groups.items()]
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
        f"at each amplitude, with its {CONFIDENCE:.0%} interval.</p>{amplitude_plots(cases)}</section>"
    )


def perturbation_figure(view: SessionView, stem: str, files: Mapping[str, Path], used_by: list[str]) -> str:
    """One perturbation file shown amplified, with its size, L-inf norm and the cases that used it."""
    from iqa_robustness.attacks.perturbation import load_perturbation

    cases = ", ".join(used_by[:6]) + (f" and {len(used_by) - 6} more" if len(used_by) > 6 else "")
    caption_tail = f"used by {esc(cases)}"
    source = files.get(".npy") or files.get(".png")
    if source is None:
        generator = files.get(".pt") or files.get(".pth")
        what = f"{esc(generator.name)}: " if generator else ""
        return (
            f'<figure class="nodata"><p class="note">{what}an image-conditioned generator: no single '
            f"perturbation to show.</p><figcaption>{esc(stem)}, {caption_tail}</figcaption></figure>"
        )
    try:
        delta = load_perturbation(source).to_numpy()
    except (OSError, ValueError) as exc:
        log.warning("cannot show the perturbation %s (%s)", source, exc)
        return (
            f'<figure class="nodata"><p class="note">{esc(source.name)} missing or unreadable: {esc(exc)}</p>'
            f"<figcaption>{esc(stem)}, {caption_tail}</figcaption></figure>"
        )
    amplified_view, k = amplified(delta)
    tag = image_tag(to_image(amplified_view), view.max_side, stem, Image.Resampling.NEAREST, fmt="PNG")
    linf = float(np.max(np.abs(delta))) if delta.size else 0.0
    return (
        f"<figure>{tag}<figcaption>"
        f"<strong>{esc(source.name)}</strong>: "
        f"{delta.shape[1]}×{delta.shape[0]} px, L∞ {fmt(linf)}, shown as 0.5 + δ × {k:.3g}; "
        f"{caption_tail}</figcaption></figure>"
    )


def amplitude_plots(cases: list[CaseView]) -> str:
    """Per universal attack, the normalised gain of each metric against the amplitude, with intervals."""
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
            gain_axes(fig, ax, "amplitude", attack)

        uri = figure_uri(draw, (4.6, 3.4))
        plots.append(f'<img class="plot" src="{uri}" alt="{esc(f"gain against amplitude, {attack}")}">')
    return f'<div class="amp-plots">{"".join(plots)}</div>'


def perturbation_files(r: CaseResult) -> dict[str, dict[str, Path]]:
    """A universal case's perturbation files, stem -> suffix -> path (``perturbation_*``, or any .npy/.pt group)."""
    groups: dict[str, dict[str, Path]] = defaultdict(dict)
    for name, path in r.artifacts.items():
        suffix = Path(name).suffix.lower()
        if is_pair(name) or suffix not in _PERTURBATION_SUFFIXES:
            continue
        groups[str(Path(path).with_suffix(""))][suffix] = Path(path)
    return {
        stem: files
        for stem, files in groups.items()
        if Path(stem).name.startswith("perturbation_") or {".npy", ".pt", ".pth"} & files.keys()
    }


SECTION = Section(
    anchor="universal",
    nav="universal perturbations",
    order=50,
    render=render,
    shown=any_result(lambda r: r.amplitude is not None),
)
