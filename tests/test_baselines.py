"""Baselines with teeth: the committed thresholds, ``iqa-robustness baseline --from``, and a grid that fails them.

``baselines/ci-msu5-160.csv`` holds the thresholds of the grid ``.ci/run`` runs (niqe, brisque,
cnniqa-live x the six image attacks on the 5 MSU test images at 160 px); ``ci-msu5-128.csv`` its
second session at 128 px and ``ci-cpu-chain.csv`` the GitLab CPU chain. The test runs part of
that grid for real, with a copy of the committed file in which one threshold is tightened: that
case must fail with its numbers, the other must pass on the committed threshold.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iqa_robustness.cli.main import main as cli
from iqa_robustness.report.baseline import Baseline, Threshold, thresholds_from_cases, write_baseline
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.summary import load_cases

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED = REPO_ROOT / "baselines" / "ci-msu5-160.csv"


def test_every_committed_baseline_loads_and_bounds_both_key_scores() -> None:
    for path in sorted((REPO_ROOT / "baselines").glob("ci-*.csv")):
        baseline = Baseline.load(path)
        assert baseline.thresholds, path
        cases = {(t.metric, t.attack, t.dataset, t.amplitude) for t in baseline.thresholds}
        for case in cases:
            scores = {t.score for t in baseline.thresholds if (t.metric, t.attack, t.dataset, t.amplitude) == case}
            assert scores == {"robustness_score", "norm_abs_gain"}, (path, case)
        for t in baseline.thresholds:
            assert t.low is not None
            assert t.high is not None
            assert t.low < t.high


def test_thresholds_are_the_value_within_a_margin_of_the_interval() -> None:
    case = {
        "metric": "m", "attack": "uap", "dataset": "msu5", "amplitude": "0.2",
        "robustness_score": 1.0, "robustness_score_ci_low": 0.6, "robustness_score_ci_high": 1.4,
        "norm_abs_gain": 0.5, "norm_abs_gain_ci_low": 0.5, "norm_abs_gain_ci_high": 0.5,
    }  # fmt: skip
    r, gain = thresholds_from_cases([case], margin=0.5, min_margin=0.01)
    assert (r.low, r.high) == pytest.approx((0.8, 1.2))  # half-width 0.4, half of it on each side
    assert (gain.low, gain.high) == pytest.approx((0.49, 0.51))  # a zero-width interval: the least margin
    assert r.amplitude == "0.2"
    with pytest.raises(ValueError, match="nothing to write"):
        thresholds_from_cases([{"metric": "m", "attack": "a", "dataset": "d", "amplitude": ""}])


def test_a_written_baseline_reads_back(tmp_path: Path) -> None:
    thresholds = [Threshold("niqe", "fgsm", "robustness_score", -0.25, 0.5, "msu5", "*")]
    baseline = Baseline.load(write_baseline(thresholds, tmp_path / "b.csv"))
    assert baseline.thresholds == tuple(thresholds)
    inside = CaseResult("fgsm-niqe-msu5", "niqe", "fgsm", "msu5", scores={"robustness_score": 0.0})
    outside = CaseResult("fgsm-niqe-msu5", "niqe", "fgsm", "msu5", scores={"robustness_score": 0.75})
    assert baseline.check(inside) == []
    assert baseline.check(outside) == [f"niqe x fgsm: robustness_score = 0.75 > maximum 0.5 ({tmp_path / 'b.csv'})"]


@pytest.fixture(scope="module")
def tightened_run(
    tmp_path_factory: pytest.TempPathFactory, msu_test_images: Path, pyiqa_weights: Path, torch_home: Path
) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """niqe x fgsm, ifgsm as ``.ci/run`` runs them, against the committed baseline with niqe x fgsm tightened."""
    work = tmp_path_factory.mktemp("baseline")
    rows = list(csv.DictReader(COMMITTED.open()))
    tightened = 0
    for row in rows:
        if (row["metric"], row["attack"], row["score"]) == ("niqe", "fgsm", "robustness_score"):
            row["min"] = str(float(row["max"]) + 0.1)  # above what the grid gives
            tightened += 1
    assert tightened == 1
    copy = work / "tightened.csv"
    with copy.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(HF_HUB_OFFLINE="1", TORCH_HOME=str(torch_home), MPLBACKEND="Agg")
    command = [
        sys.executable, "-m", "pytest", str(REPO_ROOT / "robustness_tests"), "-p", "no:cacheprovider", "-q",
        "--metric", "niqe", "--attack", "fgsm,ifgsm", "--dataset", "msu5", "--image-size", "160",
        "--baseline", str(copy), "--results-dir", str(work / "results"), "--mlflow-uri", f"sqlite:///{work / 'm.db'}",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, copy, work / "results"


def test_a_tightened_threshold_fails_the_grid_with_the_numbers(tightened_run) -> None:
    proc, copy, _ = tightened_run
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "1 failed, 1 passed" in out, out[-3000:]
    assert "FAILED" in out
    assert "fgsm-niqe-msu5" in out
    assert "niqe x fgsm: robustness_score = " in out
    assert "< minimum " in out
    assert str(copy) in out


def test_the_untouched_case_passes_on_the_committed_baseline_and_baseline_from_reproduces_it(
    tightened_run, tmp_path: Path
) -> None:
    _, _, results = tightened_run
    written = tmp_path / "from-session.csv"
    assert cli(["baseline", "--from", str(results), "--out", str(written)]) == 0
    committed = {(t.metric, t.attack, t.score): t for t in Baseline.load(COMMITTED).thresholds}
    for t in Baseline.load(written).thresholds:
        c = committed[(t.metric, t.attack, t.score)]
        assert (t.low, t.high) == pytest.approx((c.low, c.high), abs=1e-4), t
    ifgsm = next(r for r in load_cases(next((results / "cases").iterdir())) if r.attack == "ifgsm")
    assert ifgsm.status == "passed"
    assert Baseline.load(COMMITTED).check(ifgsm) == []
