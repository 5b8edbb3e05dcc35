"""Query-based (black-box) attacks: they raise q from scores alone, keep their budgets and query limits,
give every image the same result in any batch, and run on every metric in the suite.

docs/methodology.md, "Black-box attacks": square (Andriushchenko et al., ECCV 2020), parsimonious (Moon et
al., ICML 2019), onepixel (Su et al., 2019), patch-rs (Croce et al., AAAI 2022), nes (Ilyas et al.,
ICML 2018) and the universal square-uap.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_plugin import run_suite

from iqa_robustness.attacks import Budget, BudgetExceededError, create_attack, list_attacks
from iqa_robustness.attacks.budget import active_budgets, changed_pixels
from iqa_robustness.attacks.queries import QueryRecord, mean_curve, recording_queries, square_fraction
from iqa_robustness.conventions import CPU_MAX_QUERIES
from iqa_robustness.metrics.base import FullReferenceMetric, Metric, MetricSpec
from iqa_robustness.runner.config import SuiteConfig

IMAGE_ATTACKS = ["nes", "onepixel", "parsimonious", "patch-rs", "square"]
QUERIES = 60


class Brightness(Metric):
    """Mean brightness as a quality score, declared non-differentiable; counts the images it scores."""

    spec = MetricSpec(name="brightness", differentiable=False)

    def __init__(self) -> None:
        super().__init__()
        self.scored = 0

    def score(self, x: torch.Tensor) -> torch.Tensor:
        self.scored += x.shape[0]
        return x.mean(dim=(1, 2, 3))


class Closeness(FullReferenceMetric):
    """A full-reference score that rises as the image brightens past its reference, for binding tests."""

    spec = MetricSpec(name="closeness", kind="fr", differentiable=False, bounds=(-1.0, 1.0))

    def compare(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return (distorted - reference).mean(dim=(1, 2, 3))


def images(n: int = 3, size: tuple[int, int] = (40, 48)) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2


def test_the_black_box_family_is_registered_gradient_free() -> None:
    blackbox = list_attacks(where=lambda cls: cls.family == "blackbox")
    assert blackbox == sorted([*IMAGE_ATTACKS, "square-uap"])
    assert all(not create_attack(name).needs_gradient for name in blackbox)


@pytest.mark.parametrize("name", IMAGE_ATTACKS)
def test_each_attack_raises_q_of_a_non_differentiable_metric_within_its_budget_and_queries(name: str) -> None:
    metric, x = Brightness(), images(1)
    attack = create_attack(name, queries=QUERIES)
    with recording_queries() as log:
        adv = attack(metric, x)  # the base class also checks the declared budget
    (record,) = log.records

    assert float(metric(adv)[0]) > float(metric(x)[0])
    assert metric.scored - 2 == record.used <= QUERIES  # every scored image is a query (2: the checks above)
    if name in ("square", "parsimonious", "patch-rs"):
        assert record.used == QUERIES
    assert record.curve[-1][1] == pytest.approx(float(metric.quality(adv)[0]), abs=1e-6)
    assert all(a[1] <= b[1] for a, b in zip(record.curve, record.curve[1:], strict=False)), "best q never drops"
    for budget in active_budgets(attack):
        assert budget.measure(x, adv) <= budget.limit(attack) + 1e-6


class Greyness(Metric):
    """Best at mid-grey: on a mid-grey image every change lowers q."""

    spec = MetricSpec(name="greyness", differentiable=False, bounds=(-1.0, 0.0))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return -(x - 0.5).abs().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("name", IMAGE_ATTACKS)
def test_an_attack_that_finds_nothing_better_returns_the_clean_image(name: str) -> None:
    x = torch.full((2, 3, 24, 24), 0.5)
    with recording_queries() as log:
        adv = create_attack(name, queries=40)(Greyness(), x)
    assert torch.equal(adv, x)
    assert all(r.curve[-1][1] == 0.0 for r in log.records)


def test_linf_attacks_stay_in_a_smaller_ball_and_l0_attacks_change_few_pixels() -> None:
    x = images(2)
    for name in ("square", "parsimonious", "nes"):
        adv = create_attack(name, queries=30, eps=2 / 255)(Brightness(), x)
        assert float((adv - x).abs().max()) <= 2 / 255 + 1e-6, name
    assert int(changed_pixels(x, create_attack("onepixel", queries=40, pixels=2)(Brightness(), x)).max()) <= 2
    assert int(changed_pixels(x, create_attack("patch-rs", queries=30, eps=25)(Brightness(), x)).max()) <= 25


@pytest.mark.parametrize("name", IMAGE_ATTACKS)
def test_an_image_gets_the_same_result_batched_or_alone(name: str) -> None:
    x = images(3)
    attack = create_attack(name, queries=45, seed=7)
    batched = attack(Brightness(), x)
    alone = attack(Brightness(), x[2:3])
    assert torch.allclose(batched[2], alone[0], atol=1e-6)


def test_the_seed_changes_the_search_and_fixes_it() -> None:
    x = images(1)
    first, again = (create_attack("square", queries=30, seed=1)(Brightness(), x) for _ in range(2))
    other = create_attack("square", queries=30, seed=2)(Brightness(), x)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_full_reference_metric_is_queried_with_each_candidates_own_reference() -> None:
    metric, x = Closeness(), images(2)
    reference = x.flip(0)  # images and references differ, so a wrong row would change the scores
    for name in ("onepixel", "square"):
        with metric.reference(reference):
            adv = create_attack(name, queries=40)(metric, x)
            assert (metric(adv) > metric(x)).all(), name


def test_onepixel_shrinks_its_population_to_the_query_budget() -> None:
    assert create_attack("onepixel").schedule() == (20, 10)  # 20 x 15 = 300 individuals, 10 generations
    popsize, maxiter = create_attack("onepixel", queries=CPU_MAX_QUERIES).schedule()
    assert 1 + popsize * 15 * (maxiter + 1) <= CPU_MAX_QUERIES
    with pytest.raises(ValueError, match="queries >= 16"):
        create_attack("onepixel", queries=10).schedule()


def test_an_l0_budget_refuses_a_result_with_too_many_changed_pixels() -> None:
    attack = create_attack("patch-rs", eps=4)
    x = torch.zeros(1, 3, 8, 8)
    adv = x.clone()
    adv[0, 0, 0, :5] = 1.0  # five positions, one channel each
    with pytest.raises(BudgetExceededError, match=r"\|adv - x\|_0 <= eps \(pixel positions changed\)"):
        Budget.l0("eps").check(attack, x, adv)
    adv[0, :, 0, 4] = 0.0
    assert Budget.l0("eps").check(attack, x, adv) == 4


def test_square_halves_its_window_on_the_rescaled_schedule() -> None:
    assert square_fraction(0.05, 5, 10_000) == 0.05
    assert square_fraction(0.05, 11, 10_000) == 0.025
    assert square_fraction(0.05, 9_999, 10_000) == pytest.approx(0.05 / 512)
    assert square_fraction(0.05, 5, 100) == pytest.approx(0.05 / 8)  # 5 of 100 is 500 of 10 000


def test_the_mean_curve_carries_each_images_best_forward() -> None:
    records = [QueryRecord(3, [(1, 0.0), (3, 1.0)]), QueryRecord(2, [(1, 2.0), (2, 4.0)])]
    curve = dict((int(s), v) for s, v in mean_curve(records, max_points=3))
    assert curve == {1: 1.0, 2: 2.0, 3: 2.5}


def test_square_uap_searches_a_universal_perturbation_with_batch_mean_queries(tmp_path) -> None:
    metric = Brightness()
    attack = create_attack("square-uap", queries=25, batch_size=2)
    train = [img for img in images(3, (64, 64))]
    perturbation = attack.fit(metric, train, cache_dir=tmp_path)

    assert metric.scored == 25 * 2  # one query per iteration, each scoring the training batch
    assert perturbation.meta["queries_used"] == 25
    curve = perturbation.meta["query_curve"]
    assert curve[-1][0] == 25
    assert curve[-1][1] > curve[0][1]
    assert float(perturbation.delta.abs().max()) <= attack.eps + 1e-7
    x = images(2)
    adv = attack.apply(perturbation, x, 0.4)
    assert float((adv - x).abs().max()) <= 0.4 * attack.eps + 1e-6
    assert float(adv.min()) >= 0.0
    assert float(adv.max()) <= 1.0
    assert attack.fit(Brightness(), train, cache_dir=tmp_path).from_cache


def test_the_query_budget_is_capped_on_the_cpu_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert SuiteConfig().query_limit(10_000, cpu)[0] == CPU_MAX_QUERIES
    assert "capped" in SuiteConfig().query_limit(10_000, cpu)[1]
    assert SuiteConfig().query_limit(10_000, cuda)[0] == 10_000
    assert SuiteConfig().query_limit(100, cpu)[0] == 100
    assert SuiteConfig(queries=50).query_limit(10_000, cuda) == (50, "--queries 50")


def test_the_blackbox_marker_runs_every_black_box_attack_on_every_metric_within_its_limits(
    tmp_path, torch_home, shared_dir, pyiqa_weights
) -> None:
    weights = shared_dir / "weights"
    proc = run_suite(
        tmp_path,
        torch_home,
        *("-m", "blackbox", "--metric", "piqe,entropy,cnniqa-live", "--dataset", "msu5", "--image-size", "64"),
        *("--max-images", "2", "--queries", "30", "--amplitude", "0.8", "--train-dataset", "msu5"),
        *("--weights-dir", str(weights / "original"), "--no-mlflow", "--results-dir", str(tmp_path / "r"), "-q"),
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    with (tmp_path / "r" / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    blackbox = list_attacks(where=lambda cls: cls.family == "blackbox")
    assert {(r["metric"], r["attack"]) for r in rows} == {
        (m, a) for m in ("piqe", "entropy", "cnniqa-live") for a in blackbox
    }
    for row in rows:
        assert row["status"] == "passed", row
        assert 1 <= float(row["queries_used"]) <= float(row["queries_used_max"]) <= 30, row
    cases = [json.loads(p.read_text()) for p in (tmp_path / "r" / "cases").glob("*/*.json")]
    for case in cases:
        assert case["params"]["queries"] == 30
        assert case["params"]["query_limit"] == "--queries 30"
        assert case["curves"]["best_q"], case["case_id"]
        if case["attack"] == "onepixel":
            assert case["scores"]["max_l0"] <= 3
        elif case["attack"] != "patch-rs":
            assert case["scores"]["max_linf"] <= 0.1 * (case["amplitude"] or 1.0) + 1e-5
    report = (tmp_path / "r" / "report" / "index.html").read_text()
    assert report.count('class="plot query-curve"') == len(cases)
