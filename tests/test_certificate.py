"""The median-smoothing certificate's arithmetic (docs/certify.md): order-statistic ranks, bounds, case scores.

Chiang et al., "Detection as regression: certified object detection by median smoothing" (NeurIPS
2020). The ranks are checked against binomial sums computed here with exact integer arithmetic
(``math.comb``), independently of scipy, which the module uses.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from iqa_robustness.scores.certificate import (
    ACHIEVED_BY,
    ACHIEVED_CHANGE,
    CERTIFIED_CHANGE,
    RESAMPLED_CHANGE,
    Certificate,
    CertificateError,
    certificate_breaches,
    certificate_ranks,
    certificate_row,
    certified_case_scores,
    certify_samples,
    smallest_samples,
    smoothed_median,
)


def binomial_cdf(n: int, p: float) -> list[float]:
    """``P(Bin(n, p) <= k)`` for k = 0..n, summed term by term."""
    total, out = 0.0, []
    for i in range(n + 1):
        total += math.comb(n, i) * p**i * (1 - p) ** (n - i)
        out.append(total)
    return out


def ranks_by_hand(n: int, p_upper: float, alpha: float) -> tuple[int, int]:
    """The theorem's ranks straight from their definitions, 1-based."""
    up, down = binomial_cdf(n, p_upper), binomial_cdf(n, 1 - p_upper)
    upper = min(q for q in range(1, n + 1) if up[q - 1] >= 1 - alpha)
    lower = max(q for q in range(1, n + 1) if down[q - 1] <= alpha)
    return lower, upper


def test_at_radius_zero_five_samples_at_alpha_five_percent_are_bounded_by_their_extremes() -> None:
    # Bin(5, 1/2): P(<= 0) = 1/32 <= 0.05 < P(<= 1) = 6/32, and P(<= 3) = 26/32 < 0.95 <= P(<= 4) = 31/32
    ranks = certificate_ranks(5, sigma=1.0, eps=0.0, alpha=0.05)
    assert (ranks.lower, ranks.upper, ranks.median) == (1, 5, 3)

    certificate = certify_samples([3.0, 1.0, 4.0, 1.0, 5.0], ranks)
    assert (certificate.median, certificate.lower, certificate.upper) == (3.0, 1.0, 5.0)
    assert certificate.change == 2.0


def test_twenty_samples_at_radius_zero_take_the_sixth_and_fifteenth() -> None:
    # Bin(20, 1/2): P(<= 5) = 0.0207 <= 0.05 < P(<= 6) = 0.0577; P(<= 13) = 0.942 < 0.95 <= P(<= 14) = 0.979
    ranks = certificate_ranks(20, sigma=0.12, eps=0.0, alpha=0.05)
    assert (ranks.lower, ranks.upper) == (6, 15) == ranks_by_hand(20, 0.5, 0.05)

    certificate = certify_samples(np.arange(20.0)[::-1], ranks)  # the order of the samples does not matter
    assert (certificate.lower, certificate.median, certificate.upper) == (5.0, 9.0, 14.0)


def test_ten_samples_at_the_80th_percentile_take_the_extremes_at_alpha_20_percent() -> None:
    eps = float(stats.norm.ppf(0.8))  # pu = Phi(eps / sigma) = 0.8 with sigma 1
    # Bin(10, 0.8): P(<= 8) = 0.624 < 0.8 <= P(<= 9) = 0.893; Bin(10, 0.2): P(<= 0) = 0.107 <= 0.2 < P(<= 1)
    ranks = certificate_ranks(10, sigma=1.0, eps=eps, alpha=0.2)
    assert (ranks.lower, ranks.upper) == (1, 10) == ranks_by_hand(10, 0.8, 0.2)
    assert ranks.p_upper == pytest.approx(0.8)


def test_the_sources_defaults_give_the_ranks_293_and_708_of_1000() -> None:
    ranks = certificate_ranks(1000, sigma=0.12, eps=0.05, alpha=0.001)
    assert (ranks.lower, ranks.upper) == ranks_by_hand(1000, float(stats.norm.cdf(0.05 / 0.12)), 0.001)
    assert (ranks.lower, ranks.upper) == (293, 708)
    assert ranks.p_upper == pytest.approx(0.66154, abs=1e-5)


@pytest.mark.parametrize("n", [17, 50, 100, 333, 1000])
def test_the_two_ranks_are_symmetric_about_the_middle(n: int) -> None:
    ranks = certificate_ranks(n, sigma=0.12, eps=0.05, alpha=0.001)
    assert ranks.lower == n + 1 - ranks.upper
    assert ranks.lower <= ranks.median <= ranks.upper


def test_too_few_samples_are_refused_with_the_smallest_number_that_certifies() -> None:
    least = smallest_samples(0.12, 0.05, 0.001)
    assert least == 17  # 0.6615^17 = 0.00089 <= 0.001 < 0.6615^16
    certificate_ranks(least, sigma=0.12, eps=0.05, alpha=0.001)
    with pytest.raises(CertificateError, match=r"16 samples cannot bound .* give at least n=17"):
        certificate_ranks(least - 1, sigma=0.12, eps=0.05, alpha=0.001)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n is a number of noise samples"),
        ({"sigma": 0.0}, "sigma is the noise's standard deviation"),
        ({"eps": -0.1}, "eps is an L2 radius"),
        ({"alpha": 0.5}, "alpha is the probability a bound may fail"),
    ],
)
def test_a_parameter_out_of_range_says_what_it_should_be(kwargs: dict, message: str) -> None:
    values = {"n": 100, "sigma": 0.12, "eps": 0.05, "alpha": 0.001, **kwargs}
    with pytest.raises(CertificateError, match=message):
        certificate_ranks(values["n"], values["sigma"], values["eps"], values["alpha"])


def test_a_larger_radius_never_certifies_a_smaller_change() -> None:
    samples = np.random.default_rng(0).gamma(2.0, 3.0, size=400)  # skewed, as metric scores often are
    radii = np.linspace(0.0, 0.24, 25)
    ranks = [certificate_ranks(400, sigma=0.12, eps=float(e), alpha=0.001) for e in radii]
    changes = [certify_samples(samples, r).change for r in ranks]

    assert all(b.upper >= a.upper and b.lower <= a.lower for a, b in itertools.pairwise(ranks))
    assert all(b >= a for a, b in itertools.pairwise(changes))
    assert changes[-1] > changes[0]  # and it does grow


def test_the_bounds_cover_the_shifted_median_of_a_linear_metric_as_often_as_promised() -> None:
    # f(x) = <w, x> with ||w|| = 1: at x the samples are f(x) + sigma Z; the worst delta of norm eps moves the
    # median of the smoothed score to f(x) + eps (and to f(x) - eps the other way): the theorem's bounds exactly
    sigma, eps, alpha, n, trials = 0.12, 0.05, 0.1, 60, 4000
    ranks = certificate_ranks(n, sigma=sigma, eps=eps, alpha=alpha)
    samples = sigma * np.random.default_rng(1).standard_normal((trials, n))
    covered_up = np.mean([certify_samples(s, ranks).upper >= eps for s in samples])
    covered_down = np.mean([certify_samples(s, ranks).lower <= -eps for s in samples])

    slack = 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert covered_up >= 1 - alpha - slack
    assert covered_down >= 1 - alpha - slack
    assert covered_up < 1 - alpha / 10  # the tightest ranks: not covered every time


def test_the_smoothed_score_is_the_lower_median() -> None:
    assert smoothed_median([4.0, 1.0, 3.0, 2.0]) == 2.0
    assert smoothed_median([5.0, 1.0, 3.0]) == 3.0
    with pytest.raises(ValueError, match="1 non-finite score"):
        smoothed_median([1.0, float("nan"), 2.0])


def row(name: str, clear: float, lower: float, upper: float, resampled: float, **smoothed: float) -> dict:
    return {"image_name": name, **certificate_row(Certificate(clear, lower, upper), smoothed, resampled)}


def test_an_images_row_names_the_attack_that_moved_its_smoothed_score_most() -> None:
    certified = row("a", 10.0, 6.0, 14.0, 10.5, ifgsm=11.0, certify=8.5)

    assert certified["attacked"] == 8.5
    assert (certified[ACHIEVED_BY], certified[ACHIEVED_CHANGE], certified[CERTIFIED_CHANGE]) == ("certify", 1.5, 4.0)
    assert certified[RESAMPLED_CHANGE] == 0.5
    assert certified["smoothed@ifgsm"] == 11.0
    bare = row("b", 10.0, 6.0, 14.0, 10.5)
    assert bare[ACHIEVED_BY] == ""
    assert math.isnan(bare["attacked"])


def test_case_scores_scale_every_change_by_the_span_of_the_smoothed_clean_scores() -> None:
    rows = [row("a", 10.0, 6.0, 14.0, 10.5, ifgsm=11.0), row("b", 30.0, 27.0, 35.0, 30.5, ifgsm=29.0, certify=32.0)]
    rows.append({"image_name": "c", "clear": math.nan, "attacked": math.nan, "skip_reason": "too small"})

    scaled, scores = certified_case_scores(rows, lower_better=True)

    assert scores["scale_span"] == 20.0  # orientation flips the scores, not their span
    assert scores["n"] == 2
    assert scores[CERTIFIED_CHANGE] == pytest.approx((4.0 + 5.0) / 2)
    assert scores["certified_change_scaled"] == pytest.approx((4.0 + 5.0) / 2 / 20)
    assert scores["certified_change_scaled_max"] == pytest.approx(5.0 / 20)
    assert scores["achieved_change_scaled"] == pytest.approx((1.0 + 2.0) / 2 / 20)
    assert scores["achieved_change_scaled/ifgsm"] == pytest.approx(1.0 / 20)
    assert scores["achieved_change_scaled/certify"] == pytest.approx(2.0 / 20)  # the image it ran on
    assert scores["resampled_change_scaled"] == pytest.approx(0.5 / 20)
    assert scores["achieved_ratio_max"] == pytest.approx(2.0 / 5.0)
    assert scores["certificate_breaches"] == 0
    assert [r.get("certified_change_scaled") for r in scaled] == pytest.approx([0.2, 0.25, None])
    assert "certified_change_scaled" not in rows[0], "the rows given are left as they were"


def test_every_smoothed_score_outside_its_interval_is_a_breach_named_by_image() -> None:
    # the largest change stays inside (upper is far); a smaller one falls below the closer lower bound
    rows = [row("fine", 10.0, 6.0, 14.0, 10.1, ifgsm=12.0), row("broken", 10.0, 9.0, 14.0, 8.0, ifgsm=13.0, pgd=8.5)]

    breaches = certificate_breaches(rows)
    _, scores = certified_case_scores(rows, lower_better=False)

    assert breaches == [
        "broken: the smoothed score after pgd is 8.5, outside the certified [9, 14] around 10",
        "broken: the smoothed score of the clean image estimated again is 8, outside the certified [9, 14] around 10",
    ]
    assert scores["certificate_breaches"] == 2
