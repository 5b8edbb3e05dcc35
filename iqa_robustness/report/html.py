"""One self-contained HTML page per session: verdict, heatmaps, leaderboard, every case, perturbations, provenance.

The page shows a session of the MSU Metrics Robustness Benchmark (Antsiferova et al., "Comparing
the robustness of modern no-reference image- and video-quality metrics to adversarial attacks",
AAAI 2024) the way the paper does, led by each metric's verdict (docs/verdict.md): the worst case
over the attacks with the mean beside it, and the flags of the evaluation checks. Each part of the
page is one module, ``iqa_robustness/report/section_<name>.py``, defining a ``SECTION``
(:class:`~iqa_robustness.report.view.Section`); every such module is found here and laid out by its
``order``, so a new section is one new file.

Everything the page needs is inside ``index.html``: CSS in a ``<style>`` element, images and
plots as ``data:`` URIs, no scripts, fonts or links to elsewhere. So the file can be attached to a
CI job or an MLflow run, mailed or archived, and it opens the same anywhere, offline, years later,
whatever happened to the artefact folders it was made from. Images are downscaled (and fewer are
shown when a session has many cases) to keep the page a few megabytes.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from iqa_robustness import report
from iqa_robustness.report.markup import CSS, esc
from iqa_robustness.report.view import Section, SessionView
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.verdict import VerdictPolicy

log = logging.getLogger(__name__)

#: the modules that each define one section of the page
SECTION_PREFIX = "section_"


def sections() -> list[Section]:
    """Every section of the page (``report/section_*.py``), in page order."""
    found = []
    for module in pkgutil.iter_modules(report.__path__):
        if module.name.startswith(SECTION_PREFIX):
            found.append(importlib.import_module(f"{report.__name__}.{module.name}").SECTION)
    return sorted(found, key=lambda s: (s.order, s.anchor))


def write_report(
    results: Sequence[CaseResult],
    out: Path,
    provenance: Mapping[str, str],
    title: str = "",
    policy: VerdictPolicy | None = None,
) -> Path:
    """Writes out/index.html (and nothing that the page needs from elsewhere); returns its path.

    Args:
        results: the session's cases, in any order; cases without rows (errors) are shown as such.
        out: the folder to write ``index.html`` in (created when missing).
        provenance: the session's tags (``git_commit``, ``device``, ``weights_mode``, ...), shown as given.
        title: the page title; by default one made from the session id or the start time.
        policy: what *fooled* means for the verdicts (:class:`~iqa_robustness.scores.verdict.VerdictPolicy`).

    Returns:
        The path of ``index.html``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    view = SessionView(list(results), dict(provenance), title, policy)
    path = out / "index.html"
    path.write_text(render(view), encoding="utf-8")
    log.info("report of %d cases written to %s", len(view.results), path)
    return path


def render(view: SessionView) -> str:
    """The whole page: the header with its navigation, then every section that applies to the session."""
    shown = [s for s in sections() if s.applies(view)]
    nav = " · ".join(f'<a href="#{esc(s.anchor)}">{esc(s.nav)}</a>' for s in shown)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(view.title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{esc(view.title)}</h1>{_banner(view)}",
        f'<p class="summary">{_status_text(view)} · generated {esc(view.generated)}</p>',
        f"<nav>{nav}</nav></header>",
        "<main>",
        *(s.render(view) for s in shown),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _banner(view: SessionView) -> str:
    if not view.random_weights:
        return ""
    return (
        '<div class="banner" role="alert"><strong>Random weights: these are not benchmark numbers.</strong> '
        "At least one metric of this session ran with randomly initialised weights; the scores only show "
        "that the pipeline works.</div>"
    )


def _status_text(view: SessionView) -> str:
    counts = Counter(r.status for r in view.results)
    text = ", ".join(f"{n} {esc(s)}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{len(view.results)} cases" + (f" ({text})" if text else "")
