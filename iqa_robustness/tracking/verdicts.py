"""A session's verdicts in MLflow: worst case and mean as parent-run metrics, verdicts and flags as tags.

docs/verdict.md: per metric x dataset x budget the worst R and the largest normalised gain
(``worst_robustness_score/<metric>/<dataset>[/eps<b>]``, ``max_norm_abs_gain/...``), the MSU mean over
attacks (``mean_robustness_score/<metric>``, ``mean_norm_abs_gain/<metric>``) and how many flags;
the tags ``verdict/<metric>`` (the verdict's line), ``flags/<metric>`` (each flag's reason),
``checks/<metric>`` (every check's state) and, for a certified metric, ``certified/<metric>`` (per dataset
the certified bound beside what the attacks achieved in the same L2 ball, docs/certify.md). Also: a
logged case back as the flat row the verdict reads.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from iqa_robustness.conventions import budget_slug
from iqa_robustness.scores.certificate import CERTIFIED_CHANGE, certificate_text, certify_fields
from iqa_robustness.scores.verdict import VERDICT_FILE, MetricVerdict, VerdictPolicy
from iqa_robustness.tracking.query import LoggedCase
from iqa_robustness.tracking.store import TAG_VALUE_LIMIT, cut_text, mlflow_key

log = logging.getLogger(__name__)

#: the params of a logged case the verdict reads, besides its identity and metrics
_VERDICT_PARAMS = ("budget", "linf_bound", "attack_name", "defence_mode", "base_metric")


def verdict_metrics(verdicts: Iterable[MetricVerdict]) -> dict[str, float]:
    """The worst case per metric x dataset x budget and the mean per metric, as parent-run metrics (finite only)."""
    out: dict[str, float] = {}
    for v in verdicts:
        for case in v.worst_case:
            where = f"{v.metric}/{case.dataset}" + (f"/{budget_slug(case.budget)}" if case.budget is not None else "")
            out[f"worst_robustness_score/{where}"] = case.worst_robustness_score
            out[f"max_norm_abs_gain/{where}"] = case.max_norm_abs_gain
        out[f"mean_robustness_score/{v.metric}"] = v.mean_robustness_score
        out[f"mean_norm_abs_gain/{v.metric}"] = v.mean_norm_abs_gain
        out[f"n_flags/{v.metric}"] = float(len(v.flags))
    return {mlflow_key(k): float(x) for k, x in out.items() if math.isfinite(x)}


def verdict_tags(verdicts: Iterable[MetricVerdict]) -> dict[str, str]:
    """``verdict/<metric>``, ``flags/<metric>`` (when a check fired), ``checks/<metric>`` and ``certified/<metric>``
    (when the metric has certificates), cut to MLflow's limit."""
    tags: dict[str, str] = {}
    for v in verdicts:
        tags[f"verdict/{v.metric}"] = v.text
        if v.flags:
            tags[f"flags/{v.metric}"] = " | ".join(f.reason for f in v.flags)
        tags[f"checks/{v.metric}"] = ", ".join(f"{name}={state}" for name, state in v.checks.items())
        if v.certified:
            tags[f"certified/{v.metric}"] = " | ".join(
                f"{c['dataset']}: {certificate_text(c)}" for c in v.certified["certificates"]
            )
    return {mlflow_key(k): cut_text(text, TAG_VALUE_LIMIT) for k, text in tags.items()}


def saved_policy(results_dir: Path | None) -> VerdictPolicy | None:
    """The policy a session's ``verdict.json`` was written with (``--fooled-gain``), or None without one."""
    path = Path(results_dir) / VERDICT_FILE if results_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        return VerdictPolicy(**json.loads(path.read_text())["policy"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s); the default verdict policy is used", path, exc)
        return None


def logged_rows(cases: Sequence[LoggedCase]) -> list[dict[str, Any]]:
    """Logged cases as the flat rows :func:`~iqa_robustness.scores.verdict.session_verdicts` reads."""
    return [logged_row(c) for c in cases]


def logged_row(case: LoggedCase) -> dict[str, Any]:
    """One logged case: identity, status, weights, its metrics and the params a verdict needs."""
    params: Mapping[str, str] = case.params
    row: dict[str, Any] = {
        **case.identity,
        "status": case.status,
        "weights_mode": case.weights_mode,
        "defence": params.get("defence_label", ""),
        **{key: params.get(key, "") for key in _VERDICT_PARAMS},
    }
    row.update(case.metrics)
    if CERTIFIED_CHANGE in case.metrics:  # a certify case: what its certificate is about
        row.update(certify_fields(params))
    return row
