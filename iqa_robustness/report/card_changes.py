"""What changed between two robustness cards of a metric (docs/card.md, "Comparing cards").

``iqa-robustness compare`` puts two sets of cards side by side (two card files or folders, or the cards
of two sessions) and lists, per metric, every change a reader of the cards would care about: the
verdict's line, the worst case per data set and budget (R, the normalised gain, their attacks), the mean
over attacks, the flags that appeared or went away, the certified bound and what the attacks achieved
within its radius, and the checksum of the metric's parameters. Numbers that are the same are not listed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: a change of a number is one past this (floats read back from JSON are exact: this only absorbs rounding)
_TOLERANCE = 1e-9
#: the worst-case numbers compared per data set x budget: (field, what the change is called, its attack's field)
_GROUP_NUMBERS = (
    ("worst_robustness_score", "worst R", "worst_robustness_attack"),
    ("max_norm_abs_gain", "max norm. gain", "max_gain_attack"),
    ("mean_robustness_score", "mean R", None),
    ("mean_norm_abs_gain", "mean norm. gain", None),
)
#: the certificate's numbers compared per data set
_CERTIFIED_NUMBERS = (("bound", "certified bound"), ("achieved", "certified: achieved"), ("breaches", "breaches"))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _moved(a: Any, b: Any) -> bool:
    x, y = _number(a), _number(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) != math.isnan(y)
    return not math.isclose(x, y, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE)


def _change(metric: str, what: str, where: str, a: Any, b: Any, detail: str = "") -> dict[str, Any]:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return {
        "metric": metric,
        "change": what,
        "where": where,
        "a": "" if a is None else a,
        "b": "" if b is None else b,
        "delta": _number(b) - _number(a) if numeric else math.nan,
        "detail": detail,
    }


def _where(group: Mapping[str, Any]) -> str:
    budget = group.get("budget_255")
    return f"{group['dataset']} at {budget:g}/255" if budget is not None else f"{group['dataset']}"


def _flag_key(flag: Mapping[str, Any]) -> tuple[str, ...]:
    """A flag's identity across sessions: its check, where, and what it names (an attack or a case)."""
    evidence = flag.get("evidence") or {}
    subject = evidence.get("attack") or evidence.get("blackbox_attack") or evidence.get("case") or ""
    return (str(flag["check"]), str(flag.get("dataset") or ""), str(flag.get("budget")), str(subject))


def _groups(verdict: Mapping[str, Any]) -> dict[tuple[str, Any], Mapping[str, Any]]:
    return {(g["dataset"], g.get("budget_255")): g for g in verdict.get("worst_case") or ()}


def _certificates(verdict: Mapping[str, Any]) -> dict[tuple[str, Any], Mapping[str, Any]]:
    certified = verdict.get("certified") or {}
    return {(c["dataset"], c.get("eps")): c for c in certified.get("certificates") or ()}


def metric_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every change from card ``a`` to card ``b`` of one metric (see the module docstring), in reading order."""
    metric = b["metric"]["name"]
    va, vb = a["verdict"], b["verdict"]
    out: list[dict[str, Any]] = []
    if va["text"] != vb["text"]:
        out.append(_change(metric, "verdict", "", va["text"], vb["text"], f"{va['verdict']} -> {vb['verdict']}"))
    groups_a, groups_b = _groups(va), _groups(vb)
    for key in sorted(set(groups_a) | set(groups_b), key=lambda k: (k[0], math.inf if k[1] is None else k[1])):
        ga, gb = groups_a.get(key), groups_b.get(key)
        if ga is None or gb is None:
            present = ga or gb
            out.append(_change(metric, "worst case only in " + ("A" if gb is None else "B"), _where(present),
                               ga and ga["verdict"], gb and gb["verdict"]))  # fmt: skip
            continue
        if ga["verdict"] != gb["verdict"]:
            out.append(_change(metric, "budget verdict", _where(gb), ga["verdict"], gb["verdict"]))
        for field, what, attack in _GROUP_NUMBERS:
            by = f"by {ga[attack]} -> {gb[attack]}" if attack and ga[attack] != gb[attack] else ""
            if _moved(ga[field], gb[field]) or by:
                out.append(_change(metric, what, _where(gb), ga[field], gb[field], by))
    flags_a = {_flag_key(f): f for f in va.get("flags") or ()}
    flags_b = {_flag_key(f): f for f in vb.get("flags") or ()}
    out += [_change(metric, "flag added", flags_b[k].get("dataset") or "", "", k[0], flags_b[k]["reason"])
            for k in flags_b if k not in flags_a]  # fmt: skip
    out += [_change(metric, "flag removed", flags_a[k].get("dataset") or "", k[0], "", flags_a[k]["reason"])
            for k in flags_a if k not in flags_b]  # fmt: skip
    out += _certified_changes(metric, va, vb)
    checksum_a, checksum_b = (c["metric"].get("weights_checksum") or {} for c in (a, b))
    if checksum_a.get("value") != checksum_b.get("value"):
        out.append(_change(metric, "parameters checksum", "", checksum_a.get("value"), checksum_b.get("value"),
                           "the metric's parameter values differ: another weights file or version"))  # fmt: skip
    return out


def _certified_changes(metric: str, va: Mapping[str, Any], vb: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    certs_a, certs_b = _certificates(va), _certificates(vb)
    for key in sorted(set(certs_a) | set(certs_b), key=lambda k: (k[0], _number(k[1]))):
        ca, cb = certs_a.get(key), certs_b.get(key)
        where = f"{key[0]} (L2 {_number(key[1]):g})"
        if ca is None or cb is None:
            out.append(_change(metric, "certificate only in " + ("A" if cb is None else "B"), where,
                               ca and ca["bound"], cb and cb["bound"]))  # fmt: skip
            continue
        for field, what in _CERTIFIED_NUMBERS:
            if _moved(ca.get(field), cb.get(field)):
                out.append(_change(metric, what, where, ca.get(field), cb.get(field)))
    return out


def card_changes(a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The changes from the cards ``a`` to the cards ``b``, matched by metric name (a card on one side only is one).

    Returns:
        One row per change: ``metric``, ``change`` (``verdict``, ``worst R``, ``max norm. gain``, ``mean R``,
        ``flag added``, ``flag removed``, ``certified bound``, ``card only in A``, ...), ``where`` (data set and
        budget), ``a``, ``b``, ``delta`` (B - A for numbers, NaN otherwise) and ``detail``.
    """
    by_a = {c["metric"]["name"]: c for c in a}
    by_b = {c["metric"]["name"]: c for c in b}
    out: list[dict[str, Any]] = []
    for metric in sorted(set(by_a) | set(by_b)):
        if metric not in by_a or metric not in by_b:
            card = by_a.get(metric) or by_b[metric]
            side = "A" if metric in by_a else "B"
            out.append(_change(metric, f"card only in {side}", "", card["verdict"]["text"] if side == "A" else "",
                               card["verdict"]["text"] if side == "B" else ""))  # fmt: skip
            continue
        out += metric_changes(by_a[metric], by_b[metric])
    return out


def changes_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The changes as console lines: ``metric: change [where]: A -> B (delta) detail``."""
    lines = []
    for r in rows:
        where = f" [{r['where']}]" if r["where"] else ""
        delta = f" ({_number(r['delta']):+.4g})" if math.isfinite(_number(r["delta"])) else ""
        a = f"{_number(r['a']):.4g}" if isinstance(r["a"], float) else (r["a"] or "-")
        b = f"{_number(r['b']):.4g}" if isinstance(r["b"], float) else (r["b"] or "-")
        detail = f"  {r['detail']}" if r["detail"] else ""
        lines.append(f"{r['metric']}: {r['change']}{where}: {a} -> {b}{delta}{detail}")
    return lines
