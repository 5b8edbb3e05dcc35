"""Verdicts: the worst case over a session's attacks, the evaluation checks, and what fooled and robust mean.

The rules are checked on case rows written out here, each chosen so that a wrong rule gives a different
answer (the worst attack is never the first or the last row; the non-adaptive row of a defence is the
worst of all). Then real sessions, in a fresh pytest process as a user runs them: metrics of our own
with a rounding step in front (no gradient) and with random crops (a random metric) are flagged, and
the real metrics (CNNIQA-LIVE with its released weights, NIQE, BRISQUE, PIQE) are not flagged without
cause; the verdicts reach ``verdict.json``, the summary, MLflow and the report.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import textwrap
from pathlib import Path

import pytest
import torch
from test_plugin import run_suite

from iqa_robustness.attacks.base import loss_grad
from iqa_robustness.metrics import Metric, MetricSpec
from iqa_robustness.metrics.draws import MeanOfDraws
from iqa_robustness.scores.checks import (
    BLACKBOX_BEATS_WHITEBOX,
    CERTIFICATE_BREACH,
    CHECK_DEAD_GRADIENT,
    CHECK_DIFFERENTIABLE,
    CHECK_IMAGES,
    CHECK_RESCORE_DIFFERENCE,
    FLAGGED,
    NO_GRADIENT,
    NO_PROGRESS,
    NOT_APPLICABLE,
    PASSED,
    RANDOM_METRIC,
    WEAKER_AT_LARGER_BUDGET,
    combine_evidence,
)
from iqa_robustness.scores.verdict import (
    FOOLED,
    ROBUST,
    UNRELIABLE,
    MetricVerdict,
    VerdictPolicy,
    metric_verdict,
    parse_fooled_gain,
    session_verdicts,
    verdict_leaderboard,
    verdict_table,
    write_verdicts,
)


def row(attack: str, r: float, gain: float, **more: object) -> dict[str, object]:
    """One case row of metric ``m`` on ``msu5`` as a session summary has it."""
    out: dict[str, object] = {
        "case_id": f"{attack}-m-msu5",
        "metric": "m",
        "attack": attack,
        "dataset": "msu5",
        "amplitude": "",
        "train_dataset": "",
        "budget": "",
        "status": "passed",
        "weights_mode": "pretrained",
        "robustness_score": r,
        "norm_abs_gain": gain,
        "improved_fraction": 1.0,
        "n": 5,
    }
    out.update(more)
    return out


# --------------------------------------------------------------------------- worst case


def test_the_worst_case_names_the_attack_with_the_lowest_r_and_the_one_with_the_largest_gain():
    rows = [row("fgsm", 1.2, 0.05), row("ifgsm", -0.3, 0.9), row("korhonen", 0.1, 1.4), row("madc", 0.8, 0.2)]

    (case,) = metric_verdict("m", rows).worst_case

    assert (case.worst_robustness_score, case.worst_robustness_attack) == (-0.3, "ifgsm")
    assert (case.max_norm_abs_gain, case.max_gain_attack) == (1.4, "korhonen")
    assert case.worst_robustness_case == "ifgsm-m-msu5"
    assert case.mean_robustness_score == pytest.approx((1.2 - 0.3 + 0.1 + 0.8) / 4)
    assert case.n_attacks == 4


def test_the_mean_beside_the_worst_case_averages_each_attacks_cases_first_as_the_benchmark():
    amplitudes = [row("uap", r, g, amplitude=a) for a, r, g in ((0.2, 2.0, 0.1), (0.4, 1.0, 0.3), (0.8, 0.0, 0.5))]
    rows = [*amplitudes, row("ifgsm", 0.5, 0.4), row("uap", 9.9, 9.9, amplitude="mean")]  # the mean row is ignored

    verdict = metric_verdict("m", rows)

    assert verdict.mean_robustness_score == pytest.approx((1.0 + 0.5) / 2)
    assert verdict.worst_case[0].worst_robustness_attack == "uap @0.8"
    assert verdict.worst_case[0].max_norm_abs_gain == 0.5


def test_the_worst_case_is_taken_per_dataset_and_budget_and_skips_cases_without_scores():
    rows = [
        row("ifgsm-eps2", 1.0, 0.1, budget=2 / 255),
        row("ifgsm-eps8", -0.5, 2.0, budget=8 / 255),
        row("square-eps2", 0.7, 0.2, budget=2 / 255),
        row("ifgsm-eps2", 0.2, 0.5, budget=2 / 255, dataset="koniq"),
        row("square-eps2", math.nan, math.nan, budget=2 / 255, status="error"),
    ]

    cases = metric_verdict("m", rows).worst_case

    assert [(c.dataset, c.budget_units) for c in cases] == [("koniq", 2), ("msu5", 2), ("msu5", 8)]
    assert [c.worst_robustness_attack for c in cases] == ["ifgsm-eps2", "square-eps2", "ifgsm-eps8"]
    assert [c.n_cases for c in cases] == [1, 2, 1]


def test_a_defended_metrics_worst_case_counts_adaptive_attacks_only_and_shows_the_rest_as_optimistic():
    defended = {"defence": "median3", "base_metric": "m"}
    rows = [
        row("ifgsm", 0.4, 0.3, defence_mode="adaptive", **defended),
        row("mifgsm", 0.6, 0.25, defence_mode="adaptive", **defended),
        row("ifgsm-nonadaptive", 2.0, 0.01, defence_mode="non-adaptive", **defended),
        row("mifgsm-nonadaptive", -1.0, 3.0, defence_mode="non-adaptive", **defended),  # worst of all: not counted
    ]

    verdict = metric_verdict("median3+m", rows)

    (case,) = verdict.worst_case
    assert (case.worst_robustness_score, case.worst_robustness_attack) == (0.4, "ifgsm")
    assert (case.max_norm_abs_gain, case.max_gain_attack) == (0.3, "ifgsm")
    assert verdict.mean_robustness_score == pytest.approx(0.5)
    (optimistic,) = verdict.non_adaptive
    assert optimistic.worst_robustness_attack == "mifgsm-nonadaptive"
    table = verdict_table([verdict])
    assert [r["evaluation"] for r in table] == ["adaptive", "non-adaptive (optimistic)"]
    assert verdict.defence == "median3"


# --------------------------------------------------------------------------- what fooled means


def test_fooled_robust_and_unreliable_follow_the_threshold_and_the_flags():
    rows = [row("ifgsm", 0.9, 0.15), row("square", 1.1, 0.05)]

    assert metric_verdict("m", rows).verdict == ROBUST
    assert metric_verdict("m", rows).text.startswith("robust: largest norm. gain 0.15 < 0.2 over 2 attack(s)")
    fooled = metric_verdict("m", rows, VerdictPolicy(fooled_gain=0.1))
    assert fooled.verdict == FOOLED
    assert fooled.text == "fooled: norm. gain 0.15 by ifgsm on msu5"
    stuck = [row("ifgsm", 0.9, 0.15, improved_fraction=0.2), row("square", 1.1, 0.05)]
    unreliable = metric_verdict("m", stuck)
    assert unreliable.verdict == UNRELIABLE
    assert unreliable.text == "evaluation unreliable: no progress (ifgsm)"


def test_a_metric_is_fooled_at_the_smallest_budget_that_fools_it_and_robust_up_to_the_largest_that_does_not():
    rows = [row(f"ifgsm-eps{b}", 1.0, g, budget=b / 255) for b, g in ((2, 0.05), (4, 0.3), (8, 0.9))]

    assert metric_verdict("m", rows).text == "fooled at 4/255: norm. gain 0.3 by ifgsm-eps4 on msu5"
    assert metric_verdict("m", rows[:1]).text.startswith("robust at 2/255")


def test_the_fooled_gain_option_takes_a_number_at_least_zero():
    assert parse_fooled_gain("0.5") == 0.5
    for bad in ("-1", "nan", "a lot"):
        with pytest.raises(ValueError, match="--fooled-gain takes the normalised absolute gain"):
            parse_fooled_gain(bad)
    with pytest.raises(ValueError, match="fooled_gain must be a finite number"):
        VerdictPolicy(fooled_gain=-0.1)


# --------------------------------------------------------------------------- the checks on rows


def evidence(dead: float = 0.5, rescored: float = 0.0, differentiable: float = 1.0) -> dict[str, float]:
    return {CHECK_IMAGES: 5, CHECK_DIFFERENTIABLE: differentiable, CHECK_DEAD_GRADIENT: dead,
            CHECK_RESCORE_DIFFERENCE: rescored}  # fmt: skip


def test_no_gradient_fires_at_the_threshold_share_of_dead_gradient_elements_and_not_for_a_declared_one():
    flagged = metric_verdict("m", [row("ifgsm", 2.0, 0.0, **evidence(dead=1.0))])
    assert flagged.checks[NO_GRADIENT] == FLAGGED
    assert flagged.flags[0].evidence["dead_gradient_share"] == 1.0
    assert "100% of the loss gradient is zero or not finite on msu5" in flagged.flags[0].reason
    assert metric_verdict("m", [row("ifgsm", 2.0, 0.0, **evidence(dead=0.64))]).checks[NO_GRADIENT] == PASSED
    declared = metric_verdict("m", [row("square", 2.0, 0.0, **evidence(dead=math.nan, differentiable=0.0))])
    assert declared.checks[NO_GRADIENT] == NOT_APPLICABLE


def test_a_random_metric_is_flagged_when_two_scorings_differ_by_more_than_the_tolerance():
    assert metric_verdict("m", [row("fgsm", 1, 0, **evidence(rescored=3e-5))]).checks[RANDOM_METRIC] == PASSED
    verdict = metric_verdict("m", [row("fgsm", 1, 0, **evidence(rescored=0.02))])
    assert verdict.checks[RANDOM_METRIC] == FLAGGED
    assert "attack it with --eot N" in verdict.flags[0].reason


def test_black_box_beats_white_box_only_against_gradient_attacks_at_the_same_or_a_larger_budget():
    rows = [
        row("ifgsm", 1.0, 0.3, linf_bound=4 / 255),
        row("square", 0.5, 0.9, linf_bound=8 / 255),  # a larger budget than every gradient attack: not compared
    ]
    assert metric_verdict("m", rows).checks[BLACKBOX_BEATS_WHITEBOX] == NOT_APPLICABLE
    rows.append(row("mifgsm", 1.0, 0.4, linf_bound=8 / 255))
    verdict = metric_verdict("m", rows)
    assert verdict.checks[BLACKBOX_BEATS_WHITEBOX] == FLAGGED
    (flag,) = verdict.flags
    assert flag.evidence["blackbox_attack"] == "square"
    assert flag.evidence["best_gradient_attack"] == "mifgsm"
    assert flag.evidence["best_gradient_gain"] == 0.4
    rows[-1] = row("mifgsm", 1.0, 0.88, linf_bound=8 / 255)  # within the margin
    assert metric_verdict("m", rows).checks[BLACKBOX_BEATS_WHITEBOX] == PASSED


def test_no_progress_is_read_for_iterative_attacks_only():
    rows = [row("fgsm", 1.0, -0.5, improved_fraction=0.0), row("ifgsm", 1.0, 0.1, improved_fraction=0.6)]
    assert metric_verdict("m", rows).checks[NO_PROGRESS] == PASSED  # one step overshooting is no stuck loop
    rows.append(row("korhonen", 1.0, 0.0, improved_fraction=0.4))
    verdict = metric_verdict("m", rows)
    assert verdict.checks[NO_PROGRESS] == FLAGGED
    assert verdict.flags[0].reason.startswith("no progress: korhonen raised the score on 40% of 5 images")


def test_an_attack_weaker_at_a_larger_budget_is_flagged_and_a_small_wobble_is_not():
    gains = {2: 0.4, 4: 0.8, 8: 0.78, 16: 0.3}
    rows = [row(f"ifgsm-eps{b}", 1.0, g, budget=b / 255) for b, g in gains.items()]

    verdict = metric_verdict("m", rows)

    assert verdict.checks[WEAKER_AT_LARGER_BUDGET] == FLAGGED
    (flag,) = verdict.flags
    assert (flag.evidence["smaller_budget"] * 255, flag.evidence["larger_budget"] * 255) == pytest.approx((4, 16))
    assert flag.evidence["attack"] == "ifgsm"
    del rows[-1]
    assert metric_verdict("m", rows).checks[WEAKER_AT_LARGER_BUDGET] == PASSED


def test_a_flag_at_one_budget_leaves_the_other_budgets_robust():
    rows = [
        row("ifgsm-eps2", 1.0, 0.05, budget=2 / 255, improved_fraction=0.0),
        row("ifgsm-eps4", 1.0, 0.1, budget=4 / 255),
    ]

    cases = metric_verdict("m", rows).worst_case

    assert [c.verdict for c in cases] == [UNRELIABLE, ROBUST]


def test_image_shards_keep_the_worst_evidence_and_add_up_counts():
    joined = combine_evidence([evidence(dead=0.2, rescored=0.0), evidence(dead=0.995, rescored=1e-3), {}])
    assert joined[CHECK_DEAD_GRADIENT] == 0.995
    assert joined[CHECK_RESCORE_DIFFERENCE] == 1e-3
    assert joined[CHECK_IMAGES] == 10


# --------------------------------------------------------------------------- files


def test_the_verdicts_are_plain_json_with_a_slot_for_a_certified_bound(tmp_path):
    rows = [row("ifgsm", -0.2, 1.5), row("fgsm", math.nan, math.nan, status="error")]
    rows += [{**r, "metric": "n"} for r in (row("ifgsm", 1.5, 0.01), row("square", math.inf, 0.0))]
    verdicts = session_verdicts(rows)

    data = json.loads(write_verdicts(verdicts, tmp_path / "verdict.json").read_text())

    assert [m["metric"] for m in data["metrics"]] == ["m", "n"]
    assert data["policy"]["fooled_gain"] == 0.2
    first = data["metrics"][0]
    assert first["schema_version"] == 1
    assert first["certified"] is None
    assert first["worst_case"][0]["certified"] is None
    assert first["worst_case"][0]["budget_255"] is None
    assert first["verdict"] == FOOLED
    assert data["metrics"][1]["worst_case"][0]["worst_robustness_score"] == 1.5
    ranked = verdict_leaderboard(verdicts)
    assert [r["metric"] for r in ranked] == ["n", "m"]


def test_the_reports_verdict_adds_certified_vs_achieved_once_a_certificate_is_in_the_verdict():
    from iqa_robustness.report import section_verdict
    from iqa_robustness.report.view import SessionView

    view = SessionView([], {})
    view.verdicts = session_verdicts([row("ifgsm", -0.2, 1.5)])
    assert "certified vs achieved" not in section_verdict.render(view)
    view.verdicts[0].worst_case[0].certified = {"bound": 0.12, "unit": "range"}

    html = section_verdict.render(view)

    assert "certified vs achieved" in html
    assert "certified ≤ 0.12 range · achieved 1.5" in html


def certify_row(bound: float, achieved: float, breaches: float = 0.0, **more: object) -> dict[str, object]:
    """A certify case's row as a session summary has it: no R, no gain; its certificate's scores and parameters."""
    out: dict[str, object] = {
        "case_id": "certify-m-msu5", "metric": "m", "attack": "certify", "dataset": "msu5", "amplitude": "",
        "train_dataset": "", "budget": "", "status": "failed" if breaches else "passed", "n": 5,
        "certified_change": bound * 10, "certified_change_scaled": bound, "achieved_change_scaled": achieved,
        "achieved_change_scaled_max": achieved * 1.5, "achieved_ratio_max": 1.2 if breaches else 0.4,
        "achieved_change_scaled/ifgsm": achieved * 0.5, "achieved_change_scaled/pgd-l2-eot": achieved,
        "certificate_breaches": breaches, "certify_sigma": 0.12, "certify_eps": 0.05, "certify_n": 100,
        "certify_alpha": 0.001,
    }  # fmt: skip
    out.update(more)
    return out


def test_a_certify_case_fills_the_certified_slot_of_its_dataset_beside_what_the_attacks_achieved():
    rows = [row("ifgsm-eps4", 1.0, 0.1, budget=4 / 255), row("ifgsm-eps8", 0.8, 0.15, budget=8 / 255)]
    rows += [certify_row(0.6, 0.17), {**certify_row(0.9, 0.2), "dataset": "koniq"}]

    verdict = metric_verdict("m", rows)

    assert verdict.verdict == ROBUST  # a certify case has no MSU score: it is not an attack of the worst case
    assert [c.n_cases for c in verdict.worst_case] == [1, 1]
    for case in verdict.worst_case:  # the L2 certificate of msu5 stands beside every L-inf budget of msu5
        assert (case.certified["bound"], case.certified["achieved"]) == (0.6, 0.17)
        assert case.certified["achieved_by"] == "pgd-l2-eot"
        assert (case.certified["eps"], case.certified["sigma"], case.certified["n"]) == (0.05, 0.12, 100)
    assert [c["dataset"] for c in verdict.certified["certificates"]] == ["msu5", "koniq"]
    assert verdict.certified["bound"] == 0.9  # the loosest bound of the metric
    table = verdict_table([verdict])
    assert [r["certified_bound"] for r in table] == [0.6, 0.6]
    assert table[0]["certified"].startswith("certified ≤ 0.6 · achieved 0.17 (min-max units; L2 0.05")
    assert metric_verdict("m", rows[:2]).certified is None


def test_a_certificate_breach_is_a_flag_that_makes_the_evaluation_unreliable():
    rows = [row("ifgsm", 1.0, 0.1), certify_row(0.6, 0.17)]
    assert metric_verdict("m", rows).checks[CERTIFICATE_BREACH] == PASSED
    assert metric_verdict("m", rows[:1]).checks[CERTIFICATE_BREACH] == NOT_APPLICABLE

    rows[1] = certify_row(0.6, 0.17, breaches=2.0)
    verdict = metric_verdict("m", rows)

    assert verdict.checks[CERTIFICATE_BREACH] == FLAGGED
    assert verdict.verdict == UNRELIABLE
    assert verdict.text == "evaluation unreliable: certificate breach on msu5"
    (flag,) = verdict.flags
    assert flag.evidence["breaches"] == 2.0
    assert flag.evidence["case"] == "certify-m-msu5"
    assert "the certificate's implementation or statistics failed" in flag.reason
    assert verdict.worst_case[0].certified["breaches"] == 2


def test_a_verdict_read_back_from_its_json_is_the_same_and_can_be_judged_at_another_threshold():
    rows = [row("ifgsm-eps4", 1.0, 0.3, budget=4 / 255, improved_fraction=0.3), certify_row(0.6, 0.17)]
    verdict = metric_verdict("m", rows)

    back = MetricVerdict.from_dict(json.loads(json.dumps(verdict.to_dict())))

    assert back == verdict
    assert back.to_dict() == verdict.to_dict()
    lenient = back.judged(VerdictPolicy(fooled_gain=0.5))
    assert (verdict.verdict, lenient.verdict) == (FOOLED, UNRELIABLE)
    assert lenient.text == "evaluation unreliable: no progress (ifgsm-eps4)"
    assert back.verdict == FOOLED  # judging makes a new verdict
    with pytest.raises(ValueError, match="schema_version 2"):
        MetricVerdict.from_dict({**verdict.to_dict(), "schema_version": 2})


# --------------------------------------------------------------------------- EoT for a random metric


class RandomCropSharpness(Metric):
    """Mean absolute horizontal gradient of a random half-size crop: a new draw on every call."""

    spec = MetricSpec(name="test-random-crop-sharpness", bounds=(0.0, 1.0))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        side = min(x.shape[-2:]) // 2
        top, left = (int(torch.randint(0, n - side + 1, ())) for n in x.shape[-2:])
        gray = x[..., top : top + side, left : left + side].mean(dim=1)
        return (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean(dim=(1, 2))


def test_a_random_metric_under_eot_scores_one_draw_and_steps_along_the_mean_of_n_draws():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    metric = RandomCropSharpness().freeze()
    averaged = MeanOfDraws(metric, draws=4)

    torch.manual_seed(1)
    with torch.no_grad():
        scored = averaged(images)
    torch.manual_seed(1)
    with torch.no_grad():
        assert torch.equal(scored, metric(images))
    torch.manual_seed(2)
    gradient = loss_grad(averaged, images)
    torch.manual_seed(2)
    draws = torch.stack([loss_grad(metric, images) for _ in range(4)])
    assert torch.allclose(gradient, draws.mean(dim=0), atol=1e-7)
    assert not torch.allclose(draws[0], draws[1])  # the draws differ: one of them is not the mean
    with pytest.raises(ValueError, match="--eot must be a positive number of draws"):
        MeanOfDraws(metric, draws=0)


# --------------------------------------------------------------------------- real sessions

OWN_METRICS = """
import torch
from iqa_robustness.metrics import Metric, MetricSpec


def sharpness(x):
    gray = x.mean(dim=1)
    return (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean(dim=(1, 2))


class Rounded(Metric):
    spec = MetricSpec(name="rounded-sharpness", bounds=(0.0, 1.0), description="sharpness of the 8-bit image")

    def score(self, x):
        return sharpness(torch.round(x * 255) / 255)


class RandomCrops(Metric):
    spec = MetricSpec(name="random-crop-sharpness", bounds=(0.0, 1.0), description="sharpness of a random crop")

    def score(self, x):
        side = min(x.shape[-2:]) // 2
        top, left = (int(torch.randint(0, n - side + 1, ())) for n in x.shape[-2:])
        return sharpness(x[..., top : top + side, left : left + side])
"""


def _verdicts(folder: Path) -> dict[str, dict]:
    return {m["metric"]: m for m in json.loads((folder / "verdict.json").read_text())["metrics"]}


def test_own_metrics_with_a_rounding_step_or_random_crops_are_flagged_everywhere_the_verdict_goes(
    tmp_path, torch_home, msu_test_images
):
    (tmp_path / "own_verdict_metrics.py").write_text(textwrap.dedent(OWN_METRICS))
    results = tmp_path / "results"
    proc = run_suite(
        tmp_path,
        torch_home,
        *("--metric", "own_verdict_metrics:Rounded,own_verdict_metrics:RandomCrops", "--attack", "ifgsm", "--eot", "4"),
        *("--dataset", str(msu_test_images), "--max-images", "3", "--image-size", "64"),
        *("--results-dir", str(results), "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "-q"),
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    verdicts = _verdicts(results)
    rounded, random = verdicts["rounded-sharpness"], verdicts["random-crop-sharpness"]
    assert rounded["checks"][NO_GRADIENT] == FLAGGED
    assert rounded["checks"][RANDOM_METRIC] == PASSED
    assert rounded["checks"][NO_PROGRESS] == FLAGGED  # a zero gradient moves nothing
    assert rounded["verdict"] == UNRELIABLE
    assert rounded["text"].startswith("evaluation unreliable: no gradient on ")
    (dead,) = (f for f in rounded["flags"] if f["check"] == NO_GRADIENT)
    assert dead["evidence"]["dead_gradient_share"] == 1.0
    assert random["checks"][RANDOM_METRIC] == FLAGGED
    assert random["checks"][NO_GRADIENT] == PASSED
    (drawn,) = (f for f in random["flags"] if f["check"] == RANDOM_METRIC)
    assert drawn["evidence"]["rescore_difference"] > 1e-4
    # --eot: the random metric (and only it) was attacked on the mean of 4 draws
    cases = {p.stem.split("-", 1)[1]: json.loads(p.read_text()) for p in results.glob("cases/*/*.json")}
    assert cases["random-crop-sharpness-test_images"]["params"]["eot"] == 4
    assert "eot" not in cases["rounded-sharpness-test_images"]["params"]
    # the console, the case results, the verdict table, MLflow's session run and the report say so too
    assert "rounded-sharpness: evaluation unreliable: no gradient" in proc.stdout
    assert cases["rounded-sharpness-test_images"]["probes"][CHECK_DEAD_GRADIENT] == 1.0
    assert cases["rounded-sharpness-test_images"]["probes"]["check_gradient_seconds"] > 0
    with (results / "verdict.csv").open() as fh:
        table = {r["metric"]: r for r in csv.DictReader(fh)}
    assert table["rounded-sharpness"]["verdict"] == UNRELIABLE
    assert "random-metric" in table["random-crop-sharpness"]["flags"]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        tags = dict(db.execute("select key, value from tags where key like 'verdict/%' or key like 'flags/%'"))
    assert tags["verdict/rounded-sharpness"].startswith("evaluation unreliable")
    assert "random metric: two scorings" in tags["flags/random-crop-sharpness"]
    page = (results / "report" / "index.html").read_text(encoding="utf-8")
    assert page.index('id="verdict"') < page.index('id="cases"')
    assert "no gradient: 100% of the loss gradient is zero or not finite" in page


@pytest.mark.weights
def test_the_real_metrics_are_not_flagged_without_cause_on_a_small_real_run(
    tmp_path, torch_home, pyiqa_weights, original_weights, msu_test_images
):
    if not (original_weights / "CNNIQA-LIVE.pth").is_file():
        pytest.skip(f"CNNIQA-LIVE.pth not in {original_weights}: the released weights are needed")
    results = tmp_path / "results"
    proc = run_suite(
        tmp_path,
        torch_home,
        *("--metric", "cnniqa-live,niqe,brisque,piqe", "--attack", "ifgsm,square", "--eps", "8/255"),
        *("--dataset", str(msu_test_images), "--max-images", "3", "--image-size", "96", "--queries", "20"),
        *("--weights-dir", str(original_weights), "--results-dir", str(results), "--no-mlflow", "-q"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    verdicts = _verdicts(results)
    assert set(verdicts) == {"cnniqa-live", "niqe", "brisque", "piqe"}
    with (results / "summary.csv").open() as fh:
        cases = list(csv.DictReader(fh))
    gains = {(c["metric"], c["attack"]): float(c["norm_abs_gain"]) for c in cases}
    for name, verdict in verdicts.items():
        checks = verdict["checks"]
        # deterministic metrics with a working gradient (PIQE declares none): nothing on the metric itself
        assert checks[NO_GRADIENT] == (NOT_APPLICABLE if name == "piqe" else PASSED), (name, verdict["flags"])
        assert checks[RANDOM_METRIC] == PASSED, (name, verdict["flags"])
        for flag in verdict["flags"]:  # what is flagged must be backed by the case's own rows
            found = flag["evidence"]
            if flag["check"] == NO_PROGRESS:
                (case,) = (c for c in cases if c["case_id"] == found["case"])
                assert float(case["improved_fraction"]) < 0.5
                assert float(case["norm_abs_gain"]) <= 0.0, "an attack that made no progress gained nothing"
            else:
                assert flag["check"] == BLACKBOX_BEATS_WHITEBOX, (name, flag)
                assert gains[name, found["blackbox_attack"]] > gains[name, found["best_gradient_attack"]]
    # where the gradient attack works, the evaluation raises nothing (square and ifgsm compared at 8/255)
    for name in ("cnniqa-live", "brisque"):
        assert verdicts[name]["flags"] == [], verdicts[name]["flags"]
        assert verdicts[name]["checks"][BLACKBOX_BEATS_WHITEBOX] == PASSED
        assert verdicts[name]["verdict"] == FOOLED
