"""The certify case kind (docs/certify.md): its place in the grid, its results, and certificates no attack breaks.

Median smoothing (Chiang et al., NeurIPS 2020) certifies, per image, an interval for the smoothed
score under every L2 perturbation of norm at most eps. What the end-to-end tests compare, exactly:
the interval comes from n noisy copies of the clean image; each attacked image's smoothed score is
estimated again from n fresh noisy copies (the same n), and that estimate must lie inside the
interval (so the attack's change is at most the certified change). The theorem bounds the
noise-free smoothed score; the fresh estimate adds its Monte-Carlo error, which only an attack that
reaches the theoretical worst case could turn into a breach (docs/certify.md gives the odds). The
linear metric below is that worst case: there the test checks the noise-free smoothed score, which
is known exactly, against the interval.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_plugin import collected, run_suite

from iqa_robustness.attacks import AttackSpecError, Budget, BudgetExceededError, create_attack, parse_attack_specs
from iqa_robustness.attacks.base import project_l2
from iqa_robustness.conventions import CPU_CERTIFY_SAMPLES, DEFAULT_EXPERIMENT
from iqa_robustness.metrics import Metric, MetricSpec
from iqa_robustness.metrics.registry import register_metric
from iqa_robustness.runner.config import SuiteConfig
from iqa_robustness.runner.grid import CERTIFY, build_grid, grid_attacks
from iqa_robustness.runner.suite import Suite
from iqa_robustness.scores.certificate import CERTIFIED_LOWER, CERTIFIED_UPPER, SMOOTHED_PREFIX
from iqa_robustness.scores.msu_csv import read_msu_csv

EPS = 0.05  # the default radius


# ----------------------------------------------------------------------------- selection


def test_only_its_own_name_or_certify_selects_the_certify_kind() -> None:
    assert CERTIFY not in {s.name for s in parse_attack_specs("all")}
    assert CERTIFY not in {s.name for s in parse_attack_specs("*")}
    assert [s.label for s in parse_attack_specs("ifgsm,certify(n=50)")] == ["certify(n=50)", "ifgsm"]
    assert [s.label for s in grid_attacks("ifgsm", certify=True)] == ["ifgsm", "certify"]
    assert [s.label for s in grid_attacks("certify(eps=0.1)", certify=True)] == ["certify(eps=0.1)"]


def test_a_certify_case_carries_the_sessions_image_attacks_and_ignores_budgets() -> None:
    specs = grid_attacks("ifgsm,uap,certify")
    grid = build_grid(["niqe"], [s for s in specs if s.name == CERTIFY], ["msu5"], budgets=[2 / 255], companions=specs)

    (case,) = grid
    assert case.id == "certify-niqe-msu5"
    assert case.budget is None
    assert [s.label for s in case.companions] == ["ifgsm"]  # universal attacks are not measured


def test_the_certify_marker_selects_one_case_per_metric_and_dataset_also_under_budgets(tmp_path, torch_home):
    proc = run_suite(
        tmp_path,
        torch_home,
        *("--collect-only", "-q", "-rs", "--strict-markers", "-m", "certify", "--certify"),
        *("--attack", "ifgsm", "--metric", "niqe,brisque", "--eps", "2/255,4/255"),
    )
    items = collected(proc)

    assert sorted(items) == [("test_certified_bound", f"certify-{m}-sample") for m in ("brisque", "niqe")]
    assert "skipped" not in (proc.stdout + proc.stderr).lower()


def test_a_certify_value_out_of_range_stops_the_session_saying_what_it_should_be(tmp_path, torch_home):
    proc = run_suite(tmp_path, torch_home, "--collect-only", "-q", "--attack", "certify(sigma=0)")
    output = proc.stdout + proc.stderr

    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "sigma is the noise's standard deviation and must be positive" in output
    assert "Traceback" not in output
    with pytest.raises(AttackSpecError, match="eot is a number of noise draws"):
        grid_attacks("certify(eot=0)")


# ----------------------------------------------------------------------------- the L2 ball


def test_projection_scales_each_image_onto_its_l2_ball_and_keeps_the_pixel_range() -> None:
    x = torch.rand(3, 3, 16, 16)
    target = torch.rand(3, 3, 16, 16)
    target[2] = (x[2] + 0.001).clamp(max=1.0)  # already inside the ball (and the pixel range): unchanged

    moved = x + project_l2(target - x, EPS)

    norms = (moved - x).flatten(1).norm(dim=1)
    assert norms[:2].tolist() == pytest.approx([EPS, EPS], rel=1e-5)
    assert torch.allclose(moved[2], target[2])
    assert float(moved.min()) >= 0.0
    assert float(moved.max()) <= 1.0


def test_an_l2_budget_is_checked_per_image() -> None:
    attack = create_attack(CERTIFY, eps=0.01)
    x = torch.zeros(2, 3, 8, 8)
    moved = x.clone()
    moved[1, 0, 0, 0] = 0.02
    with pytest.raises(BudgetExceededError, match=r"\|adv - x\|_2 <= eps: l2 distance 0\.02 > 0\.01"):
        Budget.l2("eps").check(attack, x, moved)


# ----------------------------------------------------------------------------- the worst case, exactly


class Linear(Metric):
    """``f(x) = <w, x>`` with ``||w||_2 = 1``: the L2 attack of norm eps moves it by at most eps, and the noise-free
    smoothed score is ``f`` itself (Gaussian noise is symmetric; the images stay far from the clamp)."""

    spec = MetricSpec(name="linear-for-certify", bounds=(-1.0, 1.0), description="a unit linear functional")

    def __init__(self, side: int) -> None:
        super().__init__()
        w = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(7))
        self.register_buffer("w", w / w.norm())

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(dim=1)


@pytest.fixture
def grey_images(tmp_path: Path) -> Path:
    """Three 32 px images within 0.45..0.55: more than 3.7 sigma from 0 and 1, so the clamp never bites."""
    folder = tmp_path / "grey"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        pixels = 0.5 + 0.05 * rng.uniform(-1, 1, size=(32, 32, 3))
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(folder / f"grey{i}.png")
    return folder


def test_the_certificate_of_a_linear_metric_contains_the_worst_attack_and_the_pgd_nearly_reaches_it(
    tmp_path, grey_images, restored_metric_registry
) -> None:
    register_metric(Linear.spec, lambda spec, device, weights_dir, random: Linear(32))
    suite = Suite(SuiteConfig(results_dir=tmp_path / "results"))
    specs = grid_attacks("ifgsm,certify(iters=5,eot=2)")
    certify = [s for s in specs if s.name == CERTIFY]
    (case,) = build_grid([Linear.spec.name], certify, [str(grey_images)], companions=specs)
    metric = suite.resources.metric(case.metric)
    images = torch.stack([item.load() for item in suite.dataset(case.dataset, case.metric)])

    result = suite.run(case)
    pgd = case.run_spec.create()(metric, images)

    assert result.params["n"] == CPU_CERTIFY_SAMPLES
    assert result.params["attacks_measured"] == "ifgsm (projected),pgd-l2-eot"
    with torch.no_grad():
        clean, moved = metric(images).tolist(), (metric(pgd) - metric(images)).tolist()
    assert min(moved) >= 0.95 * EPS  # the PGD finds the worst direction, w itself
    for row, f in zip(sorted(result.rows, key=lambda r: r["image_name"]), clean, strict=True):
        # every perturbation of norm <= eps leaves the noise-free smoothed score within f -+ eps
        assert row[CERTIFIED_LOWER] <= f - EPS
        assert row[CERTIFIED_UPPER] >= f + EPS
        assert row["certified_change"] <= 3 * EPS  # and the interval is not vacuous
    assert result.scores["achieved_ratio_max"] >= 0.25  # the estimates show the attack near the bound


# ----------------------------------------------------------------------------- the grid, end to end

SHARPNESS = """
from iqa_robustness.metrics import Metric, MetricSpec


class Sharpness(Metric):
    spec = MetricSpec(name="sharpness-for-certify", bounds=(0.0, 1.0), description="mean absolute gradient")

    def score(self, x):
        gray = x.mean(dim=1)
        return (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean(dim=(1, 2))
"""


def certify_case_result(results: Path) -> dict:
    (path,) = results.glob("cases/*/certify*.json")
    return json.loads(path.read_text())


def assert_no_attack_leaves_the_certificate(case: dict) -> None:
    assert case["status"] == "passed", case["message"]
    assert case["scores"]["certificate_breaches"] == 0
    assert case["scores"]["max_l2"] <= EPS + 1e-5
    measured = 0
    for row in case["rows"]:
        smoothed = [v for k, v in row.items() if k.startswith(SMOOTHED_PREFIX)] + [row["resampled"]]
        assert all(row[CERTIFIED_LOWER] <= v <= row[CERTIFIED_UPPER] for v in smoothed), row
        assert row["achieved_change"] <= row["certified_change"], row
        measured += len(smoothed)
    assert measured >= 3 * len(case["rows"]), "every image: two attacks and a fresh estimate"


def test_a_metric_of_our_own_is_certified_end_to_end_with_its_results_in_every_output(tmp_path, torch_home):
    module = tmp_path / "own_sharpness.py"
    module.write_text(textwrap.dedent(SHARPNESS))
    results, store = tmp_path / "results", tmp_path / "mlflow.db"
    proc = run_suite(
        tmp_path,
        torch_home,
        *("--metric", "own_sharpness:Sharpness", "--attack", "ifgsm,certify(n=60,iters=3,eot=2)", "-m", "certify"),
        *(
            "--image-size",
            "64",
            "--max-images",
            "2",
            "--results-dir",
            str(results),
            "--mlflow-uri",
            f"sqlite:///{store}",
        ),
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "1 passed" in proc.stdout
    assert "certified (median smoothing" in proc.stdout

    case = certify_case_result(results)
    assert_no_attack_leaves_the_certificate(case)
    assert case["params"]["n"] == 60
    assert case["params"]["n_rule"] == "given"
    assert (case["params"]["rank_lower"], case["params"]["rank_upper"]) == (10, 51)

    with (results / "summary.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["case_id"] == "certify(n=60,iters=3,eot=2)-sharpness-for-certify-sample"
    assert float(row["certified_change_scaled"]) == pytest.approx(case["scores"]["certified_change_scaled"])
    assert float(row["achieved_change_scaled"]) < float(row["certified_change_scaled"])
    assert "robustness_score" not in row, "a certify case has no MSU score: it must not enter means over attacks"

    per_image = read_msu_csv(next((results / "per_image").glob("certify*_test.csv")))
    assert [r["image_name"] for r in per_image.rows] == [r["image_name"] for r in case["rows"]]
    assert {r["achieved_by"] for r in per_image.rows} <= {"ifgsm", "pgd-l2-eot"}
    assert all(math.isfinite(r["certified_change_scaled"]) for r in per_image.rows)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], "tags.run_kind = 'case'")
    assert run.data.metrics["certified_change_scaled"] == pytest.approx(case["scores"]["certified_change_scaled"])
    assert "achieved_change_scaled/ifgsm" in run.data.metrics
    assert run.data.params["sigma"] == "0.12"
    (session,) = client.search_runs([experiment.experiment_id], "tags.run_kind = 'session'")
    key = "certified_change_scaled/sharpness-for-certify/sample"
    assert session.data.metrics[key] == pytest.approx(case["scores"]["certified_change_scaled"])


def test_no_attack_leaves_cnniqa_lives_certificate_on_msu5(tmp_path, torch_home, original_weights, msu_test_images):
    results = tmp_path / "results"
    proc = run_suite(
        tmp_path,
        torch_home,
        *("--metric", "cnniqa-live", "--weights-dir", str(original_weights), "--dataset", "msu5", "-m", "certify"),
        *("--attack", "ifgsm,certify(iters=5,eot=4)", "--image-size", "96", "--max-images", "3", "--no-mlflow"),
        *("--results-dir", str(results)),
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]

    case = certify_case_result(results)
    assert_no_attack_leaves_the_certificate(case)
    assert len(case["rows"]) == 3
    assert case["params"]["n"] == CPU_CERTIFY_SAMPLES
    assert "capped at" in case["params"]["n_rule"]
    assert case["scores"]["achieved_ratio_max"] < 1


# ----------------------------------------------------------------------------- shards and --resume


def test_image_shards_of_a_certify_case_merge_to_the_scores_of_the_whole_case() -> None:
    from iqa_robustness.runner.merge import join_image_shards
    from iqa_robustness.scores.certificate import Certificate, certificate_row, certified_case_scores
    from iqa_robustness.scores.results import CaseResult

    def image(name: str, clear: float) -> dict:
        row = certificate_row(Certificate(clear, clear - 2.0, clear + 3.0), {"ifgsm": clear + 1.0}, clear + 0.5)
        return {"image_name": name, "test_dataset": "s", "psnr": 60.0, "ssim": 1.0, "mse": 0.0, **row}

    rows = [image("a", 10.0), image("b", 20.0), image("c", 30.0)]
    parts = [
        CaseResult("certify-m-s", "m", "certify", "s", {"image_shard": f"{k}/2"}, shard, scores={"max_l2": l2})
        for k, shard, l2 in ((1, [rows[0], rows[2]], 0.05), (2, [rows[1]], 0.04))
    ]

    joined = join_image_shards(parts)
    _, whole = certified_case_scores(rows, lower_better=False)

    assert joined.scores["certified_change_scaled"] == pytest.approx(whole["certified_change_scaled"])
    assert joined.scores["scale_span"] == 20.0  # fitted on the union, not on either shard
    assert joined.scores["max_l2"] == 0.05
    assert [r["certified_change_scaled"] for r in joined.rows] == pytest.approx([3 / 20] * 3)


def test_resume_tells_certify_cases_apart_by_the_attacks_they_measure(
    tmp_path, grey_images, restored_metric_registry
) -> None:
    register_metric(Linear.spec, lambda spec, device, weights_dir, random: Linear(32))
    suite = Suite(SuiteConfig(results_dir=tmp_path / "results"))

    def fingerprint(attacks: str) -> str:
        specs = grid_attacks(attacks)
        certify = [s for s in specs if s.name == CERTIFY]
        (case,) = build_grid([Linear.spec.name], certify, [str(grey_images)], companions=specs)
        return suite.fingerprint(case, suite.attack(case))

    assert fingerprint("ifgsm,certify") == fingerprint("certify,ifgsm")
    assert fingerprint("ifgsm,certify") != fingerprint("mifgsm,certify")
    assert fingerprint("ifgsm,certify") != fingerprint("ifgsm,certify(n=200)")


def test_a_defended_metric_is_certified_as_it_is_and_stays_out_of_the_defence_table(
    tmp_path, grey_images, restored_metric_registry
) -> None:
    from iqa_robustness.defences import parse_defences, register_defended
    from iqa_robustness.scores.defences import defence_table
    from iqa_robustness.scores.summary import case_summary

    register_metric(Linear.spec, lambda spec, device, weights_dir, random: Linear(32))
    defended = register_defended(parse_defences("median")[0], Linear.spec.name)
    suite = Suite(SuiteConfig(results_dir=tmp_path / "results"))
    specs = grid_attacks("fgsm,certify(n=40,iters=2,eot=2)")
    (case,) = build_grid([defended], [s for s in specs if s.name == CERTIFY], [str(grey_images)], companions=specs)

    result = suite.run(case)

    assert case.id == f"certify(n=40,iters=2,eot=2)-{defended}-grey"
    assert result.params["defence_label"] == "median3"
    assert result.scores["certificate_breaches"] == 0
    assert "robust_abs_gain" not in result.scores
    assert defence_table([case_summary(result)]) == []
