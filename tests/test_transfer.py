"""Transferability: adversarial images scored by other metrics.

METHODOLOGY "Transferability": per source x target the normalised absolute gain and R on the
target, min-max scaled on the target's own clean scores; published perturbations are sources
without a model. Zhang et al. (NeurIPS 2022) and Ran et al. (2024) report that IQA perturbations
transfer poorly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from iqa_robustness.scores.transfer import score_transfer, target_scores, transfer_matrix

# -- the scores of one target --------------------------------------------------------------------


def test_target_scores_are_the_gain_and_r_on_the_targets_own_min_max_scaling() -> None:
    clear, attacked = [2.0, 3.0, 4.0], [3.0, 3.0, 6.0]
    # s(x) = (x - 2) / 2: s(c) = 0, 0.5, 1; s(a) = 0.5, 0.5, 2
    gains = np.array([0.5, 0.0, 1.0])
    r = np.log10(np.array([1.0, 0.5, 1.0]) / (np.abs([-0.5, 0.0, -1.0]) + 1e-6))
    scores = target_scores(clear, attacked, lower_better=False)
    assert scores["n"] == 3
    assert scores["norm_abs_gain"] == pytest.approx(gains.mean())
    assert scores["robustness_score"] == pytest.approx(r.mean())
    half = 4.302652729911275 * gains.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 dof)
    assert (scores["norm_abs_gain_ci_low"], scores["norm_abs_gain_ci_high"]) == pytest.approx(
        (gains.mean() - half, gains.mean() + half)
    )
    # a lower-is-better target: raising the raw score makes quality worse
    assert target_scores(clear, attacked, lower_better=True)["norm_abs_gain"] == pytest.approx(-gains.mean())


def test_score_transfer_leaves_out_skipped_rows_and_images_the_target_could_not_score() -> None:
    rows = [
        {"image_name": "a", "clear@t": 1.0, "attacked@t": 2.0},
        {"image_name": "b", "clear@t": 2.0, "attacked@t": 2.0},
        {"image_name": "c", "clear@t": 3.0, "attacked@t": 5.0},
        {"image_name": "d", "clear@t": 9.0, "attacked@t": math.nan},  # the target raised on it
        {"image_name": "e", "clear@t": -50.0, "attacked@t": 0.0, "skip_reason": "too small for src"},
    ]
    assert score_transfer(rows, "t", False) == target_scores([1.0, 2.0, 3.0], [2.0, 2.0, 5.0], False)
    with pytest.raises(ValueError, match="no image has both"):
        score_transfer(rows[3:], "t", False)


def test_the_matrix_marks_only_the_sources_own_metric_as_its_diagonal() -> None:
    rows = [
        {"source": "ifgsm · a", "metric": "a", "dataset": "s", "train_dataset": "", "amplitude": "", "target": t,
         "own": t == "a", "norm_abs_gain": g}
        for t, g in (("a", 1.0), ("b", 0.1))
    ] + [
        {"source": "uap · f.npy", "metric": "a", "dataset": "s", "train_dataset": "/x/f.npy", "amplitude": "mean",
         "target": "a", "own": True, "norm_abs_gain": 0.2}
    ]  # fmt: skip
    matrix = transfer_matrix(rows)
    assert matrix["sources"] == ["ifgsm · a", "uap · f.npy"]
    assert matrix["targets"] == ["a", "b"]
    assert matrix["own"] == [[True, False], [False, False]]
    assert matrix["values"][1][0] == 0.2
    assert math.isnan(matrix["values"][1][1])
