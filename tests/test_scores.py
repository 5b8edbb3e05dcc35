"""Robustness scores on groups small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iqa_robustness.scores import formulas as scores
from iqa_robustness.scores.formulas import (
    SCORE_KEYS,
    MinMaxScale,
    classic_relative_gain,
    image_distortion,
    orient,
    score_group,
    t_interval,
)

# clear c = [0, 1, 2], attacked a = [1, 1, 4]; min-max on c: s(c) = [0, .5, 1], s(a) = [.5, .5, 2]
CLEAR = [0.0, 1.0, 2.0]
ATTACKED = [1.0, 1.0, 4.0]
T_975_DF2 = 4.302652729749462  # Student t quantile, 97.5%, 2 degrees of freedom


@pytest.fixture
def hand() -> dict[str, float]:
    return score_group(CLEAR, ATTACKED)


def test_score_group_returns_every_key_in_reporting_order(hand):
    assert tuple(hand) == SCORE_KEYS
    assert hand["n"] == 3


def test_raw_gains_match_hand_computation(hand):
    assert hand["abs_gain"] == pytest.approx(1.0)  # mean of [1, 0, 2]
    assert hand["rel_gain"] == pytest.approx(5 / 9)  # mean of [1/1, 0/2, 2/3]


def test_normalised_gains_use_min_max_fitted_on_clear_scores(hand):
    assert hand["norm_abs_gain"] == pytest.approx(0.5)  # mean of [.5, 0, 1]
    assert hand["norm_rel_gain"] == pytest.approx(1 / 3)  # mean of [.5/1, 0/1.5, 1/2]


def test_robustness_score_is_the_benchmark_code_version(hand):
    # numerators max(1 - s(c), s(c)) = [1, .5, 1]; denominators |s(c) - s(a)| + 1e-6
    expected = (math.log10(1 / 0.500001) + math.log10(0.5 / 1e-6) + math.log10(1 / 1.000001)) / 3
    assert hand["robustness_score"] == pytest.approx(expected, rel=1e-12)


def test_distribution_scores_match_hand_computation(hand):
    assert hand["wasserstein_score"] == pytest.approx(0.5)  # mean |sorted s(c) - sorted s(a)|
    # energy distance sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) = sqrt(2 * 6.5/9 - 4/9 - 6/9)
    assert hand["energy_distance_score"] == pytest.approx(math.sqrt(1 / 3))


def test_distribution_scores_are_negative_when_the_attack_lowered_quality():
    out = score_group(ATTACKED, CLEAR)  # roles swapped: the "attack" made every image worse or equal
    assert out["wasserstein_score"] < 0
    assert out["energy_distance_score"] < 0


def test_student_t_interval_of_the_absolute_gain(hand):
    half = T_975_DF2 * 1.0 / math.sqrt(3)  # sd of [1, 0, 2] is 1 (ddof=1)
    assert hand["abs_gain_ci_low"] == pytest.approx(1.0 - half)
    assert hand["abs_gain_ci_high"] == pytest.approx(1.0 + half)


def test_every_per_image_mean_lies_inside_its_interval(hand):
    for key in scores.PER_IMAGE_SCORES:
        assert hand[f"{key}_ci_low"] < hand[key] < hand[f"{key}_ci_high"]


def test_t_interval_of_one_value_is_undefined():
    low, high = t_interval([0.7])
    assert math.isnan(low)
    assert math.isnan(high)


def test_t_interval_of_identical_values_is_the_value_itself():
    assert t_interval([0.25, 0.25, 0.25]) == (0.25, 0.25)


def test_single_image_group_has_scores_but_no_intervals():
    out = score_group([0.5], [0.7])
    assert out["abs_gain"] == pytest.approx(0.2)
    assert math.isnan(out["abs_gain_ci_low"])
    assert math.isnan(out["robustness_score_ci_high"])


def test_orient_negates_lower_better_values_only():
    np.testing.assert_array_equal(orient([1.0, -2.0], lower_better=True), [-1.0, 2.0])
    np.testing.assert_array_equal(orient([1.0, -2.0], lower_better=False), [1.0, -2.0])


def test_lower_better_metric_is_scored_on_negated_values():
    raw_clear, raw_attacked = [30.0, 40.0, 55.0], [20.0, 38.0, 41.0]  # e.g. BRISQUE: the attack lowered it
    lower = score_group(raw_clear, raw_attacked, lower_better=True)
    negated = score_group(-np.array(raw_clear), -np.array(raw_attacked))
    assert lower == pytest.approx(negated)


def test_lower_better_metric_pushed_down_counts_as_fooled():
    out = score_group([30.0, 40.0, 55.0], [20.0, 38.0, 41.0], lower_better=True)
    assert out["abs_gain"] == pytest.approx(26 / 3)
    assert out["norm_abs_gain"] > 0
    assert out["wasserstein_score"] > 0


def test_orientation_flips_the_sign_of_gains_for_the_same_numbers():
    clear, attacked = [0.2, 0.4, 0.6], [0.5, 0.4, 0.9]
    higher = score_group(clear, attacked, lower_better=False)
    lower = score_group(clear, attacked, lower_better=True)
    assert lower["abs_gain"] == pytest.approx(-higher["abs_gain"])
    assert lower["norm_abs_gain"] == pytest.approx(-higher["norm_abs_gain"])


def test_constant_clear_group_scales_by_one_instead_of_dividing_by_zero():
    with np.errstate(all="raise"):
        out = score_group([3.0, 3.0, 3.0], [3.5, 3.0, 2.0])
    # sklearn's MinMaxScaler behaviour: span 1, so s(c) = 0 and s(a) = a - 3
    assert out["norm_abs_gain"] == pytest.approx(-1 / 6)
    assert out["norm_rel_gain"] == pytest.approx(-1 / 6)
    assert all(math.isfinite(out[k]) for k in SCORE_KEYS)


def test_min_max_scale_maps_the_clear_range_onto_zero_one():
    scale = MinMaxScale.fit([2.0, 4.0, 3.0])
    np.testing.assert_allclose(scale([2.0, 3.0, 4.0, 5.0]), [0.0, 0.5, 1.0, 1.5])


def test_min_max_scale_of_a_constant_group_has_unit_span():
    assert MinMaxScale.fit([7.0, 7.0]) == MinMaxScale(low=7.0, span=1.0)


def test_min_max_scale_ignores_nan_when_fitting_like_sklearn():
    assert MinMaxScale.fit([1.0, float("nan"), 3.0]) == MinMaxScale(low=1.0, span=2.0)


def test_groups_of_unequal_length_are_rejected():
    with pytest.raises(ValueError, match="pair up"):
        score_group([0.1, 0.2], [0.3])


def test_empty_group_is_rejected():
    with pytest.raises(ValueError, match="empty group"):
        score_group([], [])


def test_classic_relative_gain_divides_by_the_clear_score():
    np.testing.assert_allclose(classic_relative_gain([0.5, 2.0], [1.0, 1.0], eps=0.0), [1.0, -0.5])


def test_image_distortion_of_a_uniform_shift():
    clean = torch.full((2, 3, 16, 16), 0.5)
    adv = clean + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)
    out = image_distortion(clean, adv)
    np.testing.assert_allclose(out["mse"], [0.01, 0.0001], rtol=1e-5)
    np.testing.assert_allclose(out["psnr"], [20.0, 40.0], rtol=1e-5)
    assert out["ssim"].shape == (2,)


def test_image_distortion_of_an_unchanged_image_is_perfect():
    rng = np.random.default_rng(0)
    img = rng.random((1, 3, 16, 16))
    out = image_distortion(img, img.copy())
    assert out["mse"][0] == 0.0
    assert out["psnr"][0] == math.inf
    assert out["ssim"][0] == pytest.approx(1.0)


def test_image_distortion_is_the_same_for_tensors_and_arrays():
    rng = np.random.default_rng(1)
    clean = rng.random((2, 3, 20, 24)).astype(np.float32)
    adv = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    from_numpy = image_distortion(clean, adv)
    from_torch = image_distortion(torch.from_numpy(clean), torch.from_numpy(adv))
    for key in ("psnr", "ssim", "mse"):
        np.testing.assert_allclose(from_numpy[key], from_torch[key])


def test_image_distortion_ssim_drops_with_noise():
    rng = np.random.default_rng(2)
    clean = rng.random((1, 3, 32, 32))
    mild = image_distortion(clean, clean + rng.normal(0, 0.01, clean.shape))["ssim"][0]
    strong = image_distortion(clean, clean + rng.normal(0, 0.2, clean.shape))["ssim"][0]
    assert 1.0 > mild > strong


def test_image_distortion_rejects_channels_last_batches():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        image_distortion(np.zeros((1, 16, 16, 3)), np.zeros((1, 16, 16, 3)))


# -- rank stability --------------------------------------------------------------------------------

RANKED_CLEAR = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
RANKED_ATTACKED = [2.0, 1.0, 4.0, 3.0, 6.0, 5.5]


def test_rank_scores_are_scipys_correlations_of_clean_and_attacked_scores():
    from scipy import stats

    out = scores.rank_scores(RANKED_CLEAR, RANKED_ATTACKED)
    assert tuple(out) == scores.RANK_KEYS
    assert out["spearman"] == pytest.approx(stats.spearmanr(RANKED_CLEAR, RANKED_ATTACKED).statistic)
    assert out["kendall"] == pytest.approx(stats.kendalltau(RANKED_CLEAR, RANKED_ATTACKED).statistic)
    assert out["pearson"] == pytest.approx(stats.pearsonr(RANKED_CLEAR, RANKED_ATTACKED).statistic)
    # by hand: three swapped neighbour pairs out of 15 pairs; every rank moved by one (sum d^2 = 6)
    assert out["kendall"] == pytest.approx((12 - 3) / 15)
    assert out["spearman"] == pytest.approx(1 - 6 * 6 / (6 * 35))


def test_correlation_intervals_are_fisher_z_with_the_kinds_standard_error():
    out = scores.rank_scores(RANKED_CLEAR, RANKED_ATTACKED)
    z = 1.959963984540054
    for kind, factor, lost in (("pearson", 1.0, 3), ("spearman", 1.06, 3), ("kendall", 0.437, 4)):
        r, half = out[kind], z * math.sqrt(factor / (6 - lost))
        assert out[f"{kind}_ci_low"] == pytest.approx(math.tanh(math.atanh(r) - half))
        assert out[f"{kind}_ci_high"] == pytest.approx(math.tanh(math.atanh(r) + half))
        assert out[f"{kind}_ci_low"] < r < out[f"{kind}_ci_high"]


def test_a_kept_ranking_is_one_and_too_few_or_constant_scores_are_undefined():
    kept = scores.rank_scores([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 4.0, 5.0, 6.0, 9.0])
    assert kept["spearman"] == kept["kendall"] == 1.0
    assert (kept["spearman_ci_low"], kept["spearman_ci_high"]) == (1.0, 1.0)
    few = scores.rank_scores([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert math.isnan(few["pearson_ci_low"])  # n - 3 = 0: no interval
    assert math.isfinite(few["spearman"])
    constant = scores.rank_scores([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0])
    assert all(math.isnan(constant[k]) for k in scores.RANK_SCORES)
