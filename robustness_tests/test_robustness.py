"""The benchmark as tests: every grid case runs its attack, checks the invariants, logs the scores.

A case fails when an invariant breaks (budget, pixel range, finite scores, one row per image) or,
with ``--baseline``, when the metric is less robust than its threshold. A certify case
(docs/certify.md) fails when a smoothed score measured after an attack in the L2 ball leaves the
certified interval. Without a baseline a case
records its numbers and passes: a fooled metric is a finding, not a broken suite. An image the
metric cannot take is a skipped row with its reason (``--on-bad-image skip``, the default); a
case with no image left raises, naming them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from iqa_robustness.attacks import NotDifferentiableError
from iqa_robustness.attacks.budget import TOLERANCE, active_budgets
from iqa_robustness.metrics import MissingWeightsError, get_spec
from iqa_robustness.runner.certify import uncertifiable_reason
from iqa_robustness.scores.certificate import CERTIFIED_CHANGE, CERTIFIED_LOWER, CERTIFIED_UPPER, certificate_breaches
from iqa_robustness.scores.results import BEST_Q_CURVE, interrupted_message, unfinished_result

FINITE_SCORES = ("abs_gain", "norm_abs_gain", "wasserstein_score", "energy_distance_score")


def _run(suite, case, case_results_dir, baseline):
    if get_spec(case.metric).needs_gpu and suite.device.type != "cuda":
        pytest.skip(f"{case.metric} is impractically slow without a GPU; run with a CUDA device")
    try:
        result = suite.run(case)
    except KeyboardInterrupt as exc:  # SIGTERM or Ctrl-C while the case ran: recorded, then the session stops
        _record_error(case, case_results_dir, exc, status="interrupted")
        raise
    except MissingWeightsError as exc:
        pytest.skip(f"weights not available: {exc}")
    except NotDifferentiableError as exc:
        pytest.skip(str(exc))
    except Exception as exc:
        if isinstance(exc, RuntimeError) and "CUDA" in str(exc) and suite.device.type != "cuda":
            pytest.skip(f"needs a GPU: {exc}")
        _record_error(case, case_results_dir, exc)
        raise
    violations = baseline.check(result) if baseline is not None else []
    violations += certificate_breaches(result.rows)  # a certify case's: none, unless something is wrong
    result.status = "failed" if violations else "passed"
    result.message = "; ".join(violations)
    result.save_json(case_results_dir / f"{case.id}.json")
    return result, violations


def _record_error(case, case_results_dir, exc, status="error"):
    """A case that raised still gets its row (status ``error``, the message) in the summary and MLflow.

    A case the session was stopped in is recorded as ``interrupted`` (in the summary, not as an
    MLflow case run); ``--resume`` runs it again.
    """
    message = f"{type(exc).__name__}: {exc}".strip()
    if status == "interrupted":
        message = interrupted_message(str(exc))
    params = {**case.run_spec.kwargs, "metric": case.metric, "attack": case.attack, "dataset": case.dataset}
    fields = {"metric": case.metric, "attack": case.attack, "dataset": case.dataset, "params": params}
    if case.budget is not None:
        params.update(budget=case.budget)
        fields.update(budget=case.budget)
    if case.amplitude is not None:
        params.update(amplitude=case.amplitude, train_dataset=case.train_dataset)
        fields.update(amplitude=case.amplitude, train_dataset=case.train_dataset)
    unfinished_result(case.id, fields, status, message).save_json(case_results_dir / f"{case.id}.json")


def _check_rows(result, dataset):
    """One row per input of the dataset as opened (its unreadable files included, as skipped rows)."""
    left_out = set(getattr(dataset, "skipped", ()))
    assert len(result.rows) == len(dataset) + len(left_out), "one result row per test image"
    skipped = {row["image_name"]: row["skip_reason"] for row in result.skipped_rows}
    assert left_out <= set(skipped), f"unreadable images without a skipped row: {sorted(left_out - set(skipped))}"
    assert result.scored_rows, "no scored row"


def _check_common(result, dataset):
    """:func:`_check_rows`, finite group scores, finite clean and attacked scores."""
    _check_rows(result, dataset)
    for key in FINITE_SCORES:
        assert math.isfinite(result.scores[key]), f"{key} is not finite: {result.scores[key]}"
    for row in result.scored_rows:
        assert math.isfinite(row["clear"]), row
        assert math.isfinite(row["attacked"]), row
        assert row["mse"] >= 0


def _check_budget(result, case):
    """The bounds the attack class declares (``budget``), and the case's ``--eps`` budget, on the distances measured.

    L-inf: ``max_linf`` over every image (frame). RMSE: the largest per-row RMSE, from the rows'
    MSE (per image; per clip on a video set, where the per-frame bound is enforced by the attack).
    L0: ``max_l0``, the most pixel positions changed in one image.
    A case at an L-inf budget ``b`` keeps ``max_linf <= b`` (``b * amplitude`` for a universal
    perturbation, whose bound is at amplitude 1), whatever values the attack ran with.
    """
    attack, amplitude = case.run_spec.create(), case.amplitude
    for budget in active_budgets(attack):
        limit = budget.limit(attack, amplitude)
        found = result.scores["max_linf"]
        if budget.norm == "rmse":
            found = math.sqrt(max(row["mse"] for row in result.scored_rows))
        elif budget.norm == "l0":
            found = result.scores["max_l0"]
        assert found <= limit + TOLERANCE, f"{budget.norm} {found:.6g} > {budget.describe()} = {limit:.6g}"
    if case.budget is not None:
        limit = case.budget * (abs(amplitude) if amplitude is not None else 1.0)
        found = result.scores["max_linf"]
        assert found <= limit + TOLERANCE, f"linf {found:.6g} > the case's budget {case.attack} = {limit:.6g}"


def _check_queries(result, attack):
    """A query-based attack made at most its query budget per image, and recorded how many and its curve."""
    if attack.iterations_attr != "queries":
        return
    assert 1 <= result.scores["queries_used_max"] <= attack.iterations, (
        f"queries used {result.scores['queries_used_max']:g} outside 1..{attack.iterations}"
    )
    assert result.curves.get(BEST_Q_CURVE), "a query-based case records its best score against queries"


def _check_certificates(result, case):
    """Each image's interval is finite and holds its smoothed score; the attacks kept the L2 ball."""
    for row in result.scored_rows:
        lower, clear, upper = (float(row[k]) for k in (CERTIFIED_LOWER, "clear", CERTIFIED_UPPER))
        assert math.isfinite(lower), row
        assert math.isfinite(upper), row
        assert lower <= clear <= upper, row
        assert float(row[CERTIFIED_CHANGE]) >= 0, row
    eps = case.run_spec.create().eps
    assert result.scores["max_l2"] <= eps + TOLERANCE, f"l2 {result.scores['max_l2']:.6g} > eps = {eps:.6g}"


def test_image_specific_attack(image_case, suite, case_results_dir, baseline):
    result, violations = _run(suite, image_case, case_results_dir, baseline)
    _check_common(result, suite.dataset(image_case.dataset, image_case.metric))
    _check_budget(result, image_case)
    _check_queries(result, suite.attack(image_case))
    assert not violations, "less robust than the baseline: " + "; ".join(violations)


def test_universal_attack(universal_case, suite, case_results_dir, baseline, pytestconfig):
    if pytestconfig.getoption("--iqa-train-only"):
        perturbation = suite.train(universal_case)
        assert perturbation.path is not None, "the trained perturbation is saved"
        assert Path(perturbation.path).is_file(), perturbation.path
        return
    result, violations = _run(suite, universal_case, case_results_dir, baseline)
    _check_common(result, suite.dataset(universal_case.dataset, universal_case.metric))
    _check_budget(result, universal_case)
    _check_queries(result, suite.attack(universal_case))
    assert not violations, "less robust than the baseline: " + "; ".join(violations)


def test_certified_bound(certify_case, suite, case_results_dir, baseline):
    reason = uncertifiable_reason(certify_case.metric)
    if reason is not None:
        pytest.skip(reason)
    result, violations = _run(suite, certify_case, case_results_dir, baseline)
    _check_rows(result, suite.dataset(certify_case.dataset, certify_case.metric))
    _check_certificates(result, certify_case)
    assert not violations, "the certificate does not hold: " + "; ".join(violations)
