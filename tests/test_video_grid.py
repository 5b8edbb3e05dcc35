"""Video datasets in the grid: clips for video metrics (per-clip gains, flicker), frames for image metrics.

Runs the robustness suite in a fresh pytest process, as a user would
(``pytest robustness_tests -m video --metric vsfa --dataset sample-clips``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_plugin import collected, run_suite
from video_files import write_video

SMALL = ("--random-weights", "--max-images", "1", "--max-frames", "16", "--image-size", "64", "--no-mlflow")


def _summary(results: Path) -> dict[str, dict[str, str]]:
    with (results / "summary.csv").open() as fh:
        return {row["case_id"]: row for row in csv.DictReader(fh)}


def _case(results: Path, case_id: str) -> dict:
    (path,) = (results / "cases").glob(f"*/{case_id}.json")
    return json.loads(path.read_text())


@pytest.mark.pyiqa
def test_a_video_set_marks_its_cases_video_for_video_and_image_metrics(tmp_path, torch_home):
    args = ("--collect-only", "-q", "-m", "video", "--attack", "ifgsm", "--metric", "vsfa,niqe")
    on_clips = collected(run_suite(tmp_path, torch_home, *args, "--dataset", "sample-clips"))
    assert {case for _, case in on_clips} == {"ifgsm-vsfa-sample-clips", "ifgsm-niqe-sample-clips"}
    on_images = collected(run_suite(tmp_path, torch_home, *args, "--dataset", "sample", "--dataset", "sample-clips"))
    # on an image set only the video metric's case is a video case
    assert "ifgsm-niqe-sample" not in {case for _, case in on_images}
    assert "ifgsm-vsfa-sample" in {case for _, case in on_images}


def test_ifgsm_and_a_trained_uap_run_through_a_16_frame_clip_with_per_clip_gains_and_flicker(tmp_path, torch_home):
    results = tmp_path / "results"
    proc = run_suite(
        tmp_path,
        torch_home,
        *SMALL,
        "--metric",
        "vsfa",
        "--attack",
        "ifgsm,uap",
        "--dataset",
        "sample-clips",
        "--train-dataset",
        "sample-clips",
        "--uap-steps",
        "2",
        "--amplitude",
        "0.8",
        "--results-dir",
        str(results),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 passed" in proc.stdout
    assert "flicker" in proc.stdout  # the console table gains the column for video cases

    summary = _summary(results)
    ifgsm, uap = summary["ifgsm-vsfa-sample-clips"], summary["uap-vsfa-sample-clips-on-sample-clips-amp0.8"]
    for row in (ifgsm, uap):
        assert row["n"] == "1"  # one row per clip, not per frame
    # I-FGSM moves each frame along its slice of the clip gradient: the score rises, frames change differently
    assert float(ifgsm["abs_gain"]) > 0
    assert 0 < float(ifgsm["flicker"]) <= 2 * 10 / 255
    assert float(ifgsm["max_linf"]) <= 10 / 255 + 1e-5
    # a universal perturbation is the same on every frame: no flicker beyond float32 rounding of (x + d) - x
    assert float(uap["flicker"]) < 1e-7

    case = _case(results, "uap-vsfa-sample-clips-on-sample-clips-amp0.8")
    assert case["params"]["frames"] == 16
    assert case["params"]["train_steps"] == 2
    (row,) = case["rows"]
    assert row["image_name"] == "astronaut"
    assert row["n_frames"] == 16
    with (results / "per_image" / "ifgsm_vsfa_test.csv").open() as fh:
        assert [r["image_name"] for r in csv.DictReader(fh)] == ["astronaut"]


def _write_y4m(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    write_video(path, [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)])


def test_an_image_metric_on_a_video_file_is_attacked_frame_by_frame(tmp_path, torch_home):
    clip = tmp_path / "blue_sky.y4m"
    _write_y4m(clip, 3)
    results = tmp_path / "results"
    args = ("--random-weights", "--no-mlflow", "--metric", "cnniqa-live", "--attack", "fgsm")
    proc = run_suite(tmp_path, torch_home, *args, "--dataset", str(clip), "--results-dir", str(results))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with (results / "per_image" / "fgsm_cnniqa-live_test.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image_name"] for r in rows] == ["blue_sky.y4m/0000", "blue_sky.y4m/0001", "blue_sky.y4m/0002"]
    assert {r["test_dataset"] for r in rows} == {"blue_sky.y4m"}
    assert not _summary(results)["fgsm-cnniqa-live-blue_sky.y4m"].get("flicker")  # frames as images: no clip
