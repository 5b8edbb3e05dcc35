"""Query-based (black-box) attacks: they raise q from scores alone, keep their budgets and query limits,
give every image the same result in any batch, and run on every metric in the suite.

docs/methodology.md, "Black-box attacks": square (Andriushchenko et al., ECCV 2020), parsimonious (Moon et
al., ICML 2019), onepixel (Su et al., 2019), patch-rs (Croce et al., AAAI 2022), nes (Ilyas et al.,
ICML 2018) and the universal square-uap.
"""

from __future__ import annotations

import csv
import itertools
import json

import pytest
import torch
from test_plugin import run_suite

from iqa_robustness.attacks import Budget, BudgetExceededError, create_attack, list_attacks
from iqa_robustness.attacks.budget import active_budgets, changed_pixels
from iqa_robustness.attacks.queries import QueryRecord, mean_curve, recording_queries, square_fraction
from iqa_robustness.attacks.query_batch import query_batch
from iqa_robustness.conventions import CPU_MAX_QUERIES, CPU_QUERY_IMAGES
from iqa_robustness.metrics.base import FullReferenceMetric, Metric, MetricSpec
from iqa_robustness.runner.config import SuiteConfig

IMAGE_ATTACKS = ["nes", "onepixel", "parsimonious", "patch-rs", "square"]
QUERIES = 240  # one Parsimonious mini-batch of 64 blocks takes up to about 200


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


def expected_queries(attack) -> int:
    """Queries an attack makes of its budget: all of it, but One-pixel's schedule (generations x population)."""
    if attack.name == "onepixel":
        popsize, maxiter = attack.schedule()
        return popsize * 5 * attack.pixels * (maxiter + 1)
    return attack.queries


@pytest.mark.parametrize("name", IMAGE_ATTACKS)
def test_each_attack_raises_q_of_a_non_differentiable_metric_within_its_budget_and_queries(name: str) -> None:
    metric, x = Brightness(), images(1)
    # Parsimonious starts every block at -eps and raises q above the clean image's after a full pass only
    attack = create_attack(name, queries=700 if name == "parsimonious" else QUERIES)
    with recording_queries() as log:
        adv = attack(metric, x)  # the base class also checks the declared budget
    (record,) = log.records

    assert float(metric(adv)[0]) > float(metric(x)[0])
    assert record.used == expected_queries(attack)
    if name in ("square", "patch-rs"):  # candidates scored ahead and dropped are no queries (Lookahead)
        assert metric.scored - 2 >= record.used
    else:
        assert metric.scored - 2 == record.used  # every scored image is a query
    if name != "nes":  # NES's curve is its probes' mean, q near the iterate before the last step
        assert record.curve[-1][1] == pytest.approx(float(metric.quality(adv)[0]), abs=1e-6)
    if name in ("square", "patch-rs", "onepixel"):  # they keep only improvements
        assert all(a[1] <= b[1] for a, b in zip(record.curve, record.curve[1:], strict=False)), "best q dropped"
    for budget in active_budgets(attack):
        assert budget.measure(x, adv) <= budget.limit(attack) + 1e-6


class Greyness(Metric):
    """Best at mid-grey: on a mid-grey image every change lowers q."""

    spec = MetricSpec(name="greyness", differentiable=False, bounds=(-1.0, 0.0))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return -(x - 0.5).abs().mean(dim=(1, 2, 3))


def test_square_returns_the_clean_image_when_it_finds_nothing_better() -> None:
    x = torch.full((2, 3, 24, 24), 0.5)
    with recording_queries() as log:
        adv = create_attack("square", queries=40)(Greyness(), x)
    assert torch.equal(adv, x)
    assert all(r.curve[-1][1] == 0.0 for r in log.records)


@pytest.mark.parametrize("name", ["nes", "onepixel", "parsimonious", "patch-rs"])
def test_the_others_return_what_their_search_holds_even_below_the_clean_image(name: str) -> None:
    x = torch.full((2, 3, 24, 24), 0.5)
    with recording_queries() as log:
        adv = create_attack(name, queries=QUERIES)(Greyness(), x)
    assert (Greyness()(adv) < 0).all(), "as the source, the result is not replaced by the clean image"
    if name != "nes":
        assert [r.curve[-1][1] for r in log.records] == pytest.approx(Greyness()(adv).tolist(), abs=1e-6)


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
    attack = create_attack(name, queries=QUERIES, seed=7)
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
            adv = create_attack(name, queries=100)(metric, x)
            assert (metric(adv) > metric(x)).all(), name


def test_onepixel_shrinks_its_population_to_the_query_budget() -> None:
    assert create_attack("onepixel").schedule() == (20, 10)  # 20 x 15 = 300 individuals, 10 generations
    popsize, maxiter = create_attack("onepixel", queries=CPU_MAX_QUERIES).schedule()
    assert popsize * 15 * (maxiter + 1) <= CPU_MAX_QUERIES
    with pytest.raises(ValueError, match="queries >= 15"):
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


def test_square_uap_searches_a_universal_perturbation_with_training_set_mean_queries(tmp_path) -> None:
    metric = Brightness()
    attack = create_attack("square-uap", queries=25)
    train = [img for img in images(3, (256, 256))]  # the windows lie in a 256 x 256 grid, tiled over the images
    perturbation = attack.fit(metric, train, cache_dir=tmp_path)

    assert metric.scored == 25 * 3  # one query per iteration, each scoring the whole training set
    assert perturbation.meta["queries_used"] == 25
    assert perturbation.meta["query_images"] == 3
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


def test_a_square_uap_query_is_the_mean_over_the_whole_training_set_as_given_not_over_eight_images() -> None:
    train = [*images(8, (64, 64)), *images(4, (40, 48))]
    metric = Brightness()
    perturbation = create_attack("square-uap", queries=4).fit(metric, train)
    assert metric.scored == 4 * 12
    # the first query scores the zero perturbation: the mean q of all twelve training images at their own sizes
    expected = sum(float(img.mean()) for img in train) / 12
    assert perturbation.meta["query_curve"][0][1] == pytest.approx(expected, abs=1e-6)
    assert create_attack("square-uap", queries=4, batch_size=8).fit(Brightness(), train).meta["query_images"] == 8


def test_square_uap_on_a_full_reference_metric_distorts_each_perturbed_image_as_the_source() -> None:
    train, seen = images(2, (256, 256)), []

    def halve(x: torch.Tensor) -> torch.Tensor:  # stands in for the suite's JPEG copy
        seen.append(x.clone())
        return x * 0.5

    metric = Closeness()
    perturbation = create_attack("square-uap", queries=6).fit(metric, train, distortions=[("half", halve)])
    assert len(seen) == 6  # every query distorts the perturbed images: metric(y, jpeg(clamp(y + noise)))
    assert torch.equal(seen[0], train)
    assert not torch.equal(seen[1], train)
    assert perturbation.meta["query_curve"][0][1] == pytest.approx(float((0.5 * train - train).mean()), abs=1e-6)


def test_the_query_budget_is_capped_on_the_cpu_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert SuiteConfig().query_limit(10_000, cpu)[0] == CPU_MAX_QUERIES
    assert "capped" in SuiteConfig().query_limit(10_000, cpu)[1]
    assert SuiteConfig().query_limit(10_000, cuda)[0] == 10_000
    assert SuiteConfig().query_limit(100, cpu)[0] == 100
    assert SuiteConfig(queries=50).query_limit(10_000, cuda) == (50, "--queries 50")


def test_square_uaps_training_images_per_query_are_capped_on_the_cpu_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert SuiteConfig().query_images(0, cuda) == (0, "auto: the attack's own")
    images_on_cpu, rule = SuiteConfig().query_images(0, cpu)
    assert images_on_cpu == CPU_QUERY_IMAGES
    assert "capped" in rule
    assert "whole training set" in rule
    assert SuiteConfig().query_images(4, cpu)[0] == 4


#: enough for one Parsimonious mini-batch on every metric (its result needs one)
MARKER_QUERIES = 200


def test_the_blackbox_marker_runs_every_black_box_attack_on_every_metric_within_its_limits(
    tmp_path, torch_home, shared_dir, pyiqa_weights
) -> None:
    weights = shared_dir / "weights"
    proc = run_suite(
        tmp_path,
        torch_home,
        *("-m", "blackbox", "--metric", "piqe,entropy,cnniqa-live", "--dataset", "msu5", "--image-size", "64"),
        *("--max-images", "2", "--queries", str(MARKER_QUERIES), "--amplitude", "0.8", "--train-dataset", "msu5"),
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
        assert 1 <= float(row["queries_used"]) <= float(row["queries_used_max"]) <= MARKER_QUERIES, row
    cases = [json.loads(p.read_text()) for p in (tmp_path / "r" / "cases").glob("*/*.json")]
    for case in cases:
        assert case["params"]["queries"] == MARKER_QUERIES
        assert case["params"]["query_limit"] == f"--queries {MARKER_QUERIES}"
        assert case["curves"]["best_q"], case["case_id"]
        assert case["params"]["allocator"], "a CPU run records its memory allocator"
        if case["attack"] != "square-uap":  # how many candidates one metric call scored, measured
            assert case["params"]["query_batch"].startswith("3x"), case["params"]
        if case["attack"] == "square-uap":  # the five msu5 images, under the CPU cap of 8 per query
            assert case["params"]["batch_size"] == CPU_QUERY_IMAGES
            assert "capped at 8 training images" in case["params"]["query_images"]
        if case["attack"] == "onepixel":
            assert case["scores"]["max_l0"] <= 3
        elif case["attack"] != "patch-rs":
            assert case["scores"]["max_linf"] <= 0.1 * (case["amplitude"] or 1.0) + 1e-5
    report = (tmp_path / "r" / "report" / "index.html").read_text()
    assert report.count('class="plot query-curve"') == len(cases)


# --- the source's code: what each attack does as the follow-up benchmark runs it ---------------


class Recorder(Metric):
    """Keeps every candidate it scores. Its score is a constant (no candidate is ever kept) or, with
    ``rising``, grows with every image scored (every candidate is kept), so a search's proposals show."""

    spec = MetricSpec(name="recorder", differentiable=False, bounds=(0.0, 1e9))

    def __init__(self, rising: bool = False, value: float = 0.0) -> None:
        super().__init__()
        self.rising, self.value = rising, value
        self.seen: list[torch.Tensor] = []

    def score(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.extend(x.detach().clone())
        if self.rising:
            return torch.arange(len(self.seen) - x.shape[0], len(self.seen), dtype=torch.float32)
        return torch.full((x.shape[0],), self.value)


def changed_box(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the pixels where two images (3, H, W) differ."""
    rows, cols = torch.nonzero((a - b).abs().amax(dim=0) > 0, as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1


GREY_512x384 = torch.full((1, 3, 384, 512), 0.5)


def test_squares_windows_on_a_512x384_image_follow_the_256_grid_inside_its_top_left_region() -> None:
    metric, n = Recorder(), 30
    create_attack("square", queries=n)(metric, GREY_512x384)  # nothing is ever kept: each candidate is one window
    for it, candidate in enumerate(metric.seen[1:], start=1):
        top, left, height, width = changed_box(candidate, GREY_512x384[0])
        side = max(1, min(round((square_fraction(0.05, it - 1, n) * 256 * 256) ** 0.5), 255))
        assert (height, width) == (side, side), it
        assert top + side < 256, it
        assert left + side < 256, it
    assert changed_box(metric.seen[1], GREY_512x384[0])[2] == 57  # round(sqrt(0.05) * 256); 99 on the whole image

    whole = Recorder()
    create_attack("square", queries=2, grid=0)(whole, GREY_512x384)
    assert changed_box(whole.seen[1], GREY_512x384[0])[2:] == (99, 99)  # round(sqrt(0.05 * 384 * 512))


@pytest.mark.parametrize(("grid", "block"), [(256, (48, 64)), (0, (32, 32))])
def test_a_512x384_image_gets_parsimonious_blocks_of_64x48_at_the_first_pass(grid: int, block: tuple) -> None:
    metric = Recorder()
    create_attack("parsimonious", queries=65, grid=grid)(metric, GREY_512x384)  # the rescoring and 64 flips
    start, *flips = metric.seen
    assert len(flips) == 64
    for candidate in flips:
        changed = (candidate - start).abs() > 0
        assert int(changed.flatten(1).any(dim=1).sum()) == 1  # one block of one channel
        assert changed_box(candidate, start)[2:] == block


@pytest.mark.parametrize(("grid", "size", "shape"), [(256, 32, (384, 512)), (256, 8, (200, 300)), (0, 4, (37, 53))])
def test_parsimonious_builds_each_flip_as_the_flipped_sign_grid_maps_to_pixels(grid: int, size: int, shape) -> None:
    from iqa_robustness.attacks.parsimonious import _Blocks

    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, *shape, generator=gen)
    up, down = (x0 + 0.05).clamp(0, 1), (x0 - 0.05).clamp(0, 1)
    blocks = _Blocks.on(grid, x0, size)
    signs = torch.where(torch.rand(3, *blocks.shape, generator=gen) > 0.5, 1.0, -1.0)
    flips = torch.randperm(signs.numel(), generator=gen)[:20].tolist()
    stack = signs.unsqueeze(0).repeat(len(flips), 1, 1, 1)
    for k, b in enumerate(flips):
        stack[k].view(-1)[b] *= -1
    pixels = torch.where(blocks.to_pixels(signs.unsqueeze(0)) > 0, up, down)[0]
    want = torch.where(blocks.to_pixels(stack) > 0, up, down)
    assert torch.equal(blocks.flipped(pixels, signs, flips, up, down), want)


def test_parsimonious_gives_each_image_the_result_it_gets_alone_when_searched_side_by_side() -> None:
    x, metric = images(3, (32, 32)), Brightness()
    attack = create_attack("parsimonious", queries=300, eps=0.05, block_size=8)
    together = attack(metric, x)
    for i in range(3):
        assert torch.equal(attack(metric, x[i : i + 1])[0], together[i])


class Weighted(Metric):
    """A fixed random weighting of the pixels: a block's flip raises or lowers it."""

    spec = MetricSpec(name="weighted", differentiable=False)

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weights = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() * self.weights).sum(dim=(1, 2, 3))


def test_parsimonious_returns_the_image_whose_score_its_search_measured_last() -> None:
    """The search reuses the image of the sign grid it scored last (one block changed: a box copy); the image
    it returns must be its grid's, which the metric scores at the last curve point's q."""
    x = images(2, (40, 48))
    metric = Weighted(x.shape[1:])
    with recording_queries() as log:
        result = create_attack("parsimonious", queries=500, eps=0.05, block_size=8, batch_blocks=16)(metric, x)
    held = [r.curve[-1][1] for r in log.records]
    assert metric.quality(result).tolist() == pytest.approx(held, rel=1e-6)  # the oracle keeps float32 scores
    assert all(len({q for _, q in r.curve}) > 3 for r in log.records)  # the search moved


def patch_places(metric: Recorder, clean: torch.Tensor) -> list[tuple[int, int]]:
    return [changed_box(candidate, clean)[:2] for candidate in metric.seen]


def test_patch_rs_draws_from_the_seed_what_the_source_draws_in_its_order() -> None:
    """The source seeds torch's generator with its seed for every image and draws the place (two
    ``randint``), 1000 sub-squares (a side in [1, 3], a corner as one ``randint`` of two, a colour as
    ``sign(2u - 1)`` clamped), then per iteration a corner before anything else; here one flip of the
    channel ``int(3u)``. Each image's own generator draws the same, so each gets the source's patch."""
    x, metric = torch.full((2, 3, 64, 64), 0.5), Recorder()
    create_attack("patch-rs", queries=2, seed=3)(metric, x)  # iteration 1 of 2 already flips single channels
    rng = torch.Generator().manual_seed(3)
    top, left = (int(torch.randint(64 - 13, (1,), generator=rng)) for _ in range(2))
    patch = torch.zeros(3, 13, 13)
    for _ in range(1000):
        s = int(torch.randint(1, 4, (1,), generator=rng))
        row, col = torch.randint(13 - s + 1, (2,), generator=rng).tolist()
        patch[:, row : row + s, col : col + s] = torch.sign(2 * torch.rand((3, 1, 1), generator=rng) - 1).clamp(0, 1)
    first = x[0].clone()
    first[:, top : top + 13, left : left + 13] = patch
    row, col = torch.randint(13, (2,), generator=rng).tolist()
    channel = int((3 * torch.rand(1, generator=rng)).long())
    second = first.clone()
    second[channel, top + row, left + col] = 1 - second[channel, top + row, left + col]
    assert len(metric.seen) == 4
    assert all(torch.equal(seen, want) for seen, want in zip(metric.seen, [first, first, second, second], strict=True))


def test_patch_rs_moves_its_patch_by_more_than_its_side_in_the_first_tenth_of_a_256_pixel_search() -> None:
    x, metric, n = torch.full((1, 3, 256, 256), 0.5), Recorder(rising=True), 100
    create_attack("patch-rs", queries=n)(metric, x)  # every candidate is kept: the patch's path is every proposal
    places = patch_places(metric, x[0])
    jumps = [max(abs(a - c), abs(b - d)) for (a, b), (c, d) in itertools.pairwise(places[: n // 10 + 1])]
    assert max(jumps) > 13  # the move range is 0.75 (1 - it / n) of the image height, not of the 13-pixel side


def test_patch_rs_stops_moving_once_its_move_range_is_zero() -> None:
    x, metric, n = torch.full((1, 3, 16, 16), 0.5), Recorder(rising=True), 120
    create_attack("patch-rs", queries=n, eps=16)(metric, x)
    places = patch_places(metric, x[0])
    assert len(set(places[: n // 2])) > 1
    assert len(set(places[111:])) == 1  # int(0.75 * (1 - it / 120) * 16) is 0 from iteration 111 on


def test_patch_rs_flips_single_channels_after_it_start_cu_and_always_recolours_a_pixel_before() -> None:
    x, metric, n = torch.full((1, 3, 256, 256), 0.5), Recorder(rising=True), 100
    attack = create_attack("patch-rs", queries=n)
    attack(metric, x)
    start = attack.single_channel_start(13)
    assert start == 60  # one-pixel sub-squares from iteration 21 (p = 0.8 / 64): 21 + (100 - 21) // 2
    for it in range(21, n):
        if it % 4 == 0:
            continue  # the patch moves
        changed = (metric.seen[it] - metric.seen[it - 1]).abs() > 0
        if it >= start:
            assert int(changed.sum()) == 1, it  # one channel of one pixel
        else:
            assert int(changed.any(dim=0).sum()) == 1, it  # one pixel, in a colour different from its old one


class CornerBrightness(Metric):
    """The mean of the top-left 12 x 12 pixels: a Patch-RS candidate raises it only while its patch lies
    there, so a search keeps few of its candidates. Records the size of every call; with ``draws`` it
    declares its scores random draws."""

    spec = MetricSpec(name="corner", differentiable=False)

    def __init__(self, draws: bool = False) -> None:
        super().__init__()
        self.draws, self.calls = draws, []

    @property
    def random_scores(self) -> bool:
        return self.draws

    def score(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x[:, :, :12, :12].mean(dim=(1, 2, 3))


@pytest.mark.parametrize(("name", "params"), [("patch-rs", {"eps": 25}), ("square", {})])
@pytest.mark.parametrize("n", [1, 3])
def test_scored_ahead_the_search_makes_the_sequential_search_s_queries_and_result(name: str, params, n: int) -> None:
    x, budget = images(n, (48, 48)), 400
    ahead, one_by_one = CornerBrightness(), CornerBrightness(draws=True)
    query_batch(ahead, x.shape[1:]).limit, query_batch(ahead, x.shape[1:]).probe = 16, None  # no climb: fixed calls
    runs = []
    for metric in (ahead, one_by_one):
        with recording_queries() as log:
            runs.append((create_attack(name, queries=budget, **params)(metric, x), log.records))
    (a, records), (b, sequential) = runs
    assert torch.equal(a, b)
    assert [r.curve for r in records] == [r.curve for r in sequential]
    assert [r.used for r in records] == [budget] * n
    kept = sum(len({q for _, q in r.curve}) - 1 for r in records)
    assert kept > 0  # the search kept some candidates, so some scored ahead were dropped and drawn again
    assert set(one_by_one.calls) == {n}  # a metric whose scores are draws: one candidate per image and call
    assert sum(one_by_one.calls) == n * budget
    assert max(ahead.calls) > n  # scored ahead
    assert sum(ahead.calls) > n * budget  # the dropped candidates cost time, not queries


def test_candidate_rows_build_each_candidate_as_its_held_image_with_its_region_written() -> None:
    from iqa_robustness.attacks.queries import CandidateRows

    gen = torch.Generator().manual_seed(0)
    held = torch.rand(4, 3, 16, 16, generator=gen)
    rows = CandidateRows(held)

    def region() -> tuple[slice, ...]:
        top, left = torch.randint(0, 12, (2,), generator=gen).tolist()
        return slice(None), slice(top, top + 4), slice(left, left + 4)

    for call in range(60):
        owners = torch.randint(0, 4, (int(torch.randint(1, 9, (1,), generator=gen)),), generator=gen).tolist()
        edits = [(region(), torch.rand(3, 4, 4, generator=gen)) for _ in owners]
        want = held[owners].clone()
        for row, (where, values) in zip(want, edits, strict=True):
            row[where] = values
        assert torch.equal(rows.build(owners, edits), want), call
        for _ in range(int(torch.randint(0, 3, (1,), generator=gen))):  # the search keeps a candidate
            i, where = int(torch.randint(0, 4, (1,), generator=gen)), region()
            held[i][where] = torch.rand(3, 4, 4, generator=gen)
            rows.held_changed(i, where)


def test_nes_always_steps_and_makes_exactly_10000_queries() -> None:
    metric = Brightness()
    with recording_queries() as log:
        create_attack("nes")(metric, images(1, (8, 8)))
    assert log.records[0].used == metric.scored == 10_000  # 250 iterations x 20 antithetic pairs


def test_onepixel_sets_integer_colours() -> None:
    x = images(1)
    adv = create_attack("onepixel", queries=200)(Brightness(), x)
    values = adv[adv != x] * 255
    assert values.numel() > 0
    assert torch.allclose(values, values.round(), atol=1e-4)


def test_onepixel_stops_when_the_population_agrees_to_one_percent_as_the_source() -> None:
    with recording_queries() as log:
        create_attack("onepixel")(Recorder(value=1000.0), images(1))  # std 0 <= -1 + 0.01 * 1000
    assert log.records[0].used == 2 * 300  # the initial population and one generation, not 11 x 300
