"""The report's provenance: the session's tags (commit, device, weights, versions) and its case counts."""

from __future__ import annotations

from collections import Counter

from iqa_robustness.report.markup import esc
from iqa_robustness.report.view import Section, SessionView

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


#: a stored session's verdict tags (docs/verdict.md): the verdict section shows them, computed afresh
VERDICT_TAG_PREFIXES = ("verdict/", "flags/", "checks/")


def render(view: SessionView) -> str:
    keys = [k for k in PROVENANCE_ORDER if k in view.provenance]
    keys += sorted(k for k in view.provenance if k not in PROVENANCE_ORDER and not k.startswith(VERDICT_TAG_PREFIXES))
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(view.provenance[k])}</td></tr>" for k in keys)
    counts = Counter(r.status for r in view.results)
    rows += "".join(f"<tr><th>cases {esc(s)}</th><td>{n}</td></tr>" for s, n in sorted(counts.items()))
    rows += f"<tr><th>cases in all</th><td>{len(view.results)}</td></tr>"
    rows += f"<tr><th>report generated</th><td>{esc(view.generated)}</td></tr>"
    return f'<section id="provenance"><h2>Provenance</h2><table class="provenance">{rows}</table></section>'


SECTION = Section(anchor="provenance", nav="provenance", order=1000, render=render)
