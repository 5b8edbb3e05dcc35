"""A session's results as rows: one flat summary row per case, amplitude means, the CSV files.

Shared by the console report, MLflow and the command line; plain data in, plain files out.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from iqa_robustness.attacks import AttackSpec
from iqa_robustness.conventions import budget_in_units, budget_slug
from iqa_robustness.scores.certificate import CERTIFIED_CHANGE, certify_fields
from iqa_robustness.scores.formulas import budget_auc
from iqa_robustness.scores.msu_csv import write_msu_csv
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.rows import skipped_text


def load_cases(cases_dir: Path) -> list[CaseResult]:
    return [CaseResult.load_json(p) for p in sorted(Path(cases_dir).glob("*.json"))]


def case_summary(r: CaseResult) -> dict[str, object]:
    """One flat row: identity, scores, mean image similarity, timing.

    ``attack_name`` is the registered attack, ``linf_bound`` the L-inf bound the case kept (its
    ``--eps`` budget, else the attack's own bound; empty for an attack without one).

    ``n`` counts the scored images, ``n_skipped`` the skipped ones, and ``skipped`` lists them as
    ``name: reason; ...`` (cut to a few hundred characters; the per-image CSV has them all).
    """
    row: dict[str, object] = {
        "case_id": r.case_id,
        "metric": r.metric,
        "attack": r.attack,
        "attack_spec": attack_spec_text(r),
        "attack_name": str(r.params.get("attack", "")),
        "dataset": r.dataset,
        "train_dataset": r.train_dataset or "",
        "amplitude": "" if r.amplitude is None else r.amplitude,
        "budget": "" if r.budget is None else r.budget,
        "linf_bound": r.params.get("linf_bound", "" if r.budget is None else r.budget),
        "n": r.n_images,
        "n_skipped": r.n_skipped,
        "skipped": skipped_text(r.rows),
        "weights_mode": r.weights_mode,
        "status": r.status,
        "message": r.message,
    }
    if "defence_label" in r.params:  # a defended metric: which defence, in front of what, attacked how
        row.update(
            defence=r.params["defence_label"],
            base_metric=r.params.get("base_metric", ""),
            defence_mode=r.params.get("defence_mode", ""),
        )
    row.update(r.scores)
    for key in ("psnr", "ssim", "mse"):
        values = [float(x[key]) for x in r.scored_rows if math.isfinite(float(x[key]))]
        row[key] = float(np.mean(values)) if values else math.nan
    row["seconds_per_image"] = r.seconds_per_image
    row["peak_memory_mb"] = r.peak_memory_mb
    return row


def verdict_rows(results: Iterable[CaseResult]) -> list[dict[str, object]]:
    """What a session's verdicts are computed from: each case's summary row with its probes' evidence
    (the ``check_*`` values, :mod:`iqa_robustness.scores.checks`), and a certify case's parameters
    (``certify_sigma``, ``certify_eps``, ...: :func:`~iqa_robustness.scores.certificate.certify_fields`)."""
    return [{**case_summary(r), **r.probes, **_certify_fields(r)} for r in results]


def _certify_fields(r: CaseResult) -> dict[str, object]:
    return certify_fields(r.params) if CERTIFIED_CHANGE in r.scores else {}


def attack_spec_text(r: CaseResult) -> str:
    """The attack exactly as run, in ``--attack`` syntax: ``ifgsm`` or ``ifgsm(eps=0.00784313725490196)``.

    Read from the case's params (the attack's hyperparameters); the case's attack label when they
    do not name a registered attack (results of an attack this installation does not have).
    """
    try:
        return AttackSpec.from_params({"attack": r.attack, **r.params}).text
    except (KeyError, TypeError, ValueError):
        return r.attack


def amplitude_means(rows: Iterable[dict[str, object]]) -> list[dict[str, object]]:
    """Universal attacks averaged over their amplitudes, as the benchmark reports them."""
    groups: dict[tuple, list[dict[str, object]]] = defaultdict(list)
    for row in rows:
        if row["amplitude"] != "":
            groups[(row["metric"], row["attack"], row["dataset"], row["train_dataset"])].append(row)
    out = []
    for members in groups.values():
        mean: dict[str, object] = {
            **members[0],
            "case_id": f"{members[0]['case_id'].rsplit('-amp', 1)[0]}-ampmean",
        }
        mean["amplitude"] = "mean"
        fixed = ("amplitude", "budget")
        keys = dict.fromkeys(k for m in members for k, v in m.items() if isinstance(v, float) and k not in fixed)
        for key in keys:
            # over the amplitudes that have the score (a case that raised has none)
            mean[key] = float(np.mean([float(m[key]) for m in members if isinstance(m.get(key), float)]))
        statuses = {m["status"] for m in members}
        mean["status"] = next((s for s in ("error", "interrupted", "failed") if s in statuses), "passed")
        out.append(mean)
    return out


#: the scores against L-inf budget of a session with ``--eps``, in its results folder
BUDGETS_FILE = "budgets.csv"
#: the scores integrated over budgets, and the names of their areas in ``budgets.csv``
BUDGET_SCORES = {"norm_abs_gain": "gain_auc", "robustness_score": "robustness_auc"}


def budget_attack(attack: str, budget: float) -> str:
    """The attack label without its budget: ``ifgsm-eps4`` at 4/255 -> ``ifgsm``."""
    return attack.removesuffix(f"-{budget_slug(budget)}")


def budget_rows(rows: Iterable[Mapping[str, object]]) -> list[dict[str, object]]:
    """One row per metric x attack x dataset (x train set) of a session with ``--eps``: scores against budget.

    Each row holds the budgets (in units of 1/255), the normalised absolute gain and R at each
    (``norm_abs_gain_eps4``, ``robustness_score_eps4``) and their areas over the budgets,
    ``gain_auc`` and ``robustness_auc`` (:func:`~iqa_robustness.scores.formulas.budget_auc`). A
    universal attack enters with its mean over the amplitudes, as the benchmark reports it.

    Args:
        rows: summary rows (:func:`case_summary`, with :func:`amplitude_means`); rows without a
            budget, and a universal attack's single amplitudes, are left out.

    Returns:
        The rows, sorted by metric, attack, dataset and train set; empty without budgeted rows.
    """
    groups: dict[tuple[str, str, str, str], dict[float, Mapping[str, object]]] = defaultdict(dict)
    for row in rows:
        budget = row.get("budget")
        if not isinstance(budget, (int, float)) or row.get("amplitude") not in ("", "mean"):
            continue
        attack = budget_attack(str(row["attack"]), float(budget))
        key = (str(row["metric"]), attack, str(row["dataset"]), str(row.get("train_dataset") or ""))
        groups[key][float(budget)] = row
    out: list[dict[str, object]] = []
    for (metric, attack, dataset, train), by_budget in sorted(groups.items()):
        budgets = sorted(by_budget)
        units = [budget_in_units(b) for b in budgets]
        row: dict[str, object] = {
            "metric": metric,
            "attack": attack,
            "dataset": dataset,
            "train_dataset": train,
            "budgets": ",".join(f"{u:g}" for u in units),
            "n_budgets": len(budgets),
        }
        for score, area in BUDGET_SCORES.items():
            values = [_number(by_budget[b].get(score)) for b in budgets]
            row[area] = budget_auc(units, values)
            row.update({f"{score}_{budget_slug(b)}": v for b, v in zip(budgets, values, strict=True)})
        out.append(row)
    return out


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def write_summary(rows: Sequence[dict[str, object]], path: Path) -> Path:
    """Rows as CSV, columns in order of first appearance; a row without a column leaves it empty."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_per_image(results: list[CaseResult], out_dir: Path) -> list[Path]:
    """One MSU-layout CSV per metric x attack: ``<attack>_<metric>_test.csv``."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        grouped[(r.attack, r.metric)].extend(r.rows)
    paths = []
    for (attack, metric), rows in sorted(grouped.items()):
        paths.append(write_msu_csv(out_dir / f"{attack}_{metric}_test.csv", rows))
    return paths
