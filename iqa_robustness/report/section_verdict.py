"""The report's verdict: per metric the worst case over the attacks, the flags of the checks, the mean beside.

docs/verdict.md: per metric x dataset x budget the lowest R and the largest normalised gain, each with the
attack that reached it (linked to its case), and the benchmark's mean over attacks beside them; a defended
metric's non-adaptive numbers in grey as "non-adaptive (optimistic)"; every flag with its evidence and
the state of each check. When certificates exist (a ``certified`` entry of the verdict: a session with
certify cases, docs/certify.md), a column puts the certified bound of the smoothed metric beside what the
attacks achieved within the same L2 radius, and a line under the table names each certificate's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iqa_robustness.report.markup import esc, fmt, slug
from iqa_robustness.report.view import Section, SessionView
from iqa_robustness.scores.certificate import certificate_text
from iqa_robustness.scores.checks import CHECKS
from iqa_robustness.scores.verdict import MetricVerdict, WorstCase


def render(view: SessionView) -> str:
    verdicts = view.verdicts
    anchors = {c.result.case_id: c.slug for c in view.cases}
    if not verdicts:
        body = '<p class="note">No case has scores: no verdict.</p>'
    else:
        body = f'<div class="verdicts">{"".join(_metric(v, anchors) for v in verdicts)}</div>'
    policy = view.policy
    return (
        '<section id="verdict"><h2>Verdict</h2>'
        '<p class="legend">Per metric, the worst any attack of this session achieved: the lowest robustness score '
        "R and the largest normalised absolute gain, each with its attack, per data set and L∞ budget; the "
        "benchmark's mean over attacks is beside them. <strong>fooled</strong>: some attack's normalised gain "
        f"reached {policy.fooled_gain:g}; <strong>robust</strong>: none did, under the attacks tried; "
        "<strong>unreliable</strong>: none did, but an evaluation check says the numbers may overstate the "
        "robustness. A defended metric's worst case counts adaptive attacks only; its non-adaptive numbers "
        "(grey) are optimistic by construction.</p>"
        f"{body}</section>"
    )


def _metric(v: MetricVerdict, anchors: Mapping[str, str]) -> str:
    state = v.verdict.replace(" ", "-")
    certified = v.certified is not None or any(c.certified is not None for c in v.worst_case)
    head = ["data set", "budget", "verdict", "worst R", "by", "max norm gain", "by", "mean R", "mean gain", "attacks"]
    if certified:
        head.append("certified vs achieved")
    rows = [_row(c, anchors, certified) for c in v.worst_case]
    rows += [_row(c, anchors, certified, optimistic=True) for c in v.non_adaptive]
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    table = (
        f'<div class="scroll"><table class="board worst"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        if rows
        else ""
    )
    defence = f" ({esc(v.defence)} in front of {esc(v.base_metric)})" if v.defence else ""
    mean = (
        f'<p class="legend">Mean over {v.n_attacks} attack(s) (MSU benchmark): R {fmt(v.mean_robustness_score)}, '
        f"normalised gain {fmt(v.mean_norm_abs_gain)}.</p>"
    )
    return (
        f'<div class="verdict {esc(state)}" id="verdict-{esc(slug(v.metric))}">'
        f'<h3>{esc(v.metric)}{defence} <span class="badge {esc(state)}">{esc(v.verdict)}</span></h3>'
        f'<p class="line">{esc(v.text)}</p>{table}{mean}{_certificates(v)}{_flags(v)}{_checks(v)}</div>'
    )


def _row(case: WorstCase, anchors: Mapping[str, str], certified: bool, optimistic: bool = False) -> str:
    budget = "attacks' own" if case.budget is None else f"{case.budget_units:g}/255"
    verdict = "non-adaptive (optimistic)" if optimistic else case.verdict
    cells = [
        f"<th>{esc(case.dataset)}</th>",
        f"<td>{esc(budget)}</td>",
        f'<td class="{esc("" if optimistic else case.verdict)}">{esc(verdict)}</td>',
        f"<td>{fmt(case.worst_robustness_score)}</td>",
        f"<td>{_case_link(case.worst_robustness_attack, case.worst_robustness_case, anchors)}</td>",
        f"<td>{fmt(case.max_norm_abs_gain)}</td>",
        f"<td>{_case_link(case.max_gain_attack, case.max_gain_case, anchors)}</td>",
        f"<td>{fmt(case.mean_robustness_score)}</td>",
        f"<td>{fmt(case.mean_norm_abs_gain)}</td>",
        f"<td>{case.n_attacks}</td>",
    ]
    if certified:
        cells.append(f"<td>{_certified(case.certified, case.max_norm_abs_gain)}</td>")
    return f'<tr class="{"optimistic" if optimistic else ""}">{"".join(cells)}</tr>'


def _case_link(label: str, case_id: str, anchors: Mapping[str, str]) -> str:
    anchor = anchors.get(case_id)
    return f'<a href="#case-{esc(anchor)}">{esc(label)}</a>' if anchor else esc(label)


def _certified(certificate: Mapping[str, Any] | None, achieved: float) -> str:
    """``certified ≤ 0.12 · achieved 0.05``: the certificate's bound beside what the attacks reached.

    With the certificate's radius (``L2 ≤ 0.05``) under it, and its breaches in red where there are any.
    """
    if not certificate:
        return "–"
    reached = certificate.get("achieved", achieved)
    unit = f" {esc(certificate['unit'])}" if certificate.get("unit") else ""
    text = f"certified ≤ {fmt(certificate.get('bound'))}{unit} · achieved {fmt(reached)}"
    if certificate.get("eps") is not None:
        text += f'<br><span class="legend">{esc(certificate.get("norm", "L2"))} ≤ {fmt(certificate["eps"])}</span>'
    breaches = int(certificate.get("breaches") or 0)
    if breaches:
        text += f' <strong class="breach">{breaches} breach(es)</strong>'
    return text


def _certificates(v: MetricVerdict) -> str:
    """One line per certificate of the metric: its dataset, bound, achieved change and parameters."""
    if not v.certified:
        return ""
    items = "".join(
        f"<li>{esc(c.get('dataset', ''))}: {esc(certificate_text(c))} <code>{esc(c.get('case', ''))}</code></li>"
        for c in v.certified.get("certificates", ())
    )
    return (
        '<p class="legend">Certified (median smoothing, docs/certify.md): no perturbation within the L2 radius '
        "moves the smoothed metric by more than the bound (mean over the images); achieved: the mean of each "
        f'image\'s largest change by the attacks within it.</p><ul class="flags">{items}</ul>'
    )


def _flags(v: MetricVerdict) -> str:
    if not v.flags:
        return ""
    items = "".join(f"<li>{esc(f.reason)} <code>{esc(_evidence_text(f.evidence))}</code></li>" for f in v.flags)
    return f'<h4>Flags ({len(v.flags)})</h4><ul class="flags">{items}</ul>'


def _evidence_text(evidence: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(val, 4) if isinstance(val, float) else val}" for k, val in evidence.items())


def _checks(v: MetricVerdict) -> str:
    cells = "".join(
        f'<tr><th>{esc(name)}</th><td class="{esc(v.checks.get(name, "").replace(" ", "-"))}">'
        f"{esc(v.checks.get(name, 'not run'))}</td></tr>"
        for name in CHECKS
    )
    return f'<details><summary>evaluation checks</summary><table class="checks">{cells}</table></details>'


SECTION = Section(anchor="verdict", nav="verdict", order=10, render=render)
