"""One bad image does not sink a case: it becomes a skipped row with its reason, the rest is scored.

The black-box tests run the real grid (``pytest robustness_tests``) in a subprocess on a folder of
the benchmark's test images (Antsiferova et al., AAAI 2024) with an 8x8 PNG and a file of garbage
bytes among them, and read what the session wrote: per-image CSVs, ``summary.csv`` and a real
MLflow store. The unit tests cover the row scoring, the CSV round trip and the summary counts.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from filelock import FileLock
from PIL import Image
from test_plugin import run_suite

from iqa_robustness.cli.main import main
from iqa_robustness.conventions import DEFAULT_EXPERIMENT
from iqa_robustness.scores.formulas import rank_scores, score_group
from iqa_robustness.scores.msu_csv import IMAGE_COLUMNS, collect_groups, read_msu_csv, write_msu_csv
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.scores.rows import NothingToScoreError, score_rows, skipped_row
from iqa_robustness.scores.summary import case_summary

GOOD = 4  # of the benchmark's five 299x299 test images: 96x96 under --image-size 96
TINY, BROKEN = "tiny.png", "broken.png"
TOO_SMALL = {"cnniqa-live": "too small for cnniqa-live: 8x8 px, needs at least 33 px",
             "niqe": "too small for niqe: 8x8 px, needs at least 96 px"}  # fmt: skip
UNREADABLE = "unreadable: UnidentifiedImageError: cannot identify image file"
CASES = ("fgsm-cnniqa-live-photos", "fgsm-niqe-photos")
UNIVERSAL_CASE = "uap-cnniqa-live-photos-on-photos-amp0.2"


def good_images(folder: Path, source: Path, count: int = GOOD) -> Path:
    folder.mkdir(parents=True)
    for path in sorted(source.glob("*.png"))[:count]:
        shutil.copy2(path, folder / path.name)
    return folder


def tiny_png(folder: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / TINY)


def broken_png(folder: Path) -> None:
    (folder / BROKEN).write_bytes(b"these bytes are not an image " * 8)


def session(tmp_path: Path, torch_home: Path, shared_dir: Path, *args: str):
    results, store = tmp_path / "results", tmp_path / "mlflow.db"
    proc = run_suite(
        tmp_path,
        torch_home,
        *("--image-size", "96", "--weights-dir", str(shared_dir / "weights"), *args),
        *("--results-dir", str(results), "--mlflow-uri", f"sqlite:///{store}"),
        timeout=600,
    )
    return proc, results, store


def summary_rows(results: Path) -> dict[str, dict[str, str]]:
    with (results / "summary.csv").open(newline="") as fh:
        return {row["case_id"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def bad_folder_run(tmp_path_factory, worker_id, torch_home, pyiqa_weights, shared_dir, msu_test_images):
    """One session: fgsm on cnniqa-live and NIQE, and a universal case trained on the same folder.

    Run once per test session: under pytest-xdist the module's tests may land in several workers
    (the module has no xdist_group); the first runs the session and the others wait for its files,
    in the session's base folder, which every worker shares.
    """
    if worker_id == "master":
        return _bad_folder_session(tmp_path_factory.mktemp("bad-images"), torch_home, shared_dir, msu_test_images)
    tmp = tmp_path_factory.getbasetemp().parent / "bad-images"
    with FileLock(str(tmp) + ".lock"):
        done = tmp / "session.json"
        if not done.is_file():
            proc, results, store = _bad_folder_session(tmp, torch_home, shared_dir, msu_test_images)
            done.write_text(json.dumps({"stdout": proc.stdout, "results": str(results), "store": str(store)}))
        saved = json.loads(done.read_text())
    return SimpleNamespace(stdout=saved["stdout"]), Path(saved["results"]), Path(saved["store"])


def _bad_folder_session(tmp: Path, torch_home: Path, shared_dir: Path, msu_test_images: Path):
    folder = good_images(tmp / "photos", msu_test_images)
    tiny_png(folder)
    broken_png(folder)
    proc, results, store = session(
        tmp,
        torch_home,
        shared_dir,
        *("--metric", "cnniqa-live,niqe", "--attack", "fgsm,uap", "--dataset", str(folder)),
        *("--train-dataset", str(folder), "--uap-steps", "2", "--amplitude", "0.2", "-k", "fgsm or uap-cnniqa"),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc, results, store


def test_every_case_passes_and_scores_the_good_images(bad_folder_run):
    proc, results, _ = bad_folder_run
    assert "3 passed" in proc.stdout
    rows = summary_rows(results)
    for case in (*CASES, UNIVERSAL_CASE):
        assert rows[case]["status"] == "passed", rows[case]
        assert rows[case]["n"] == str(GOOD)
        assert rows[case]["n_skipped"] == "2"
        assert math.isfinite(float(rows[case]["abs_gain"]))
    assert "(2 skipped)" in proc.stdout  # the console table says so


def test_the_summary_names_each_skipped_image_with_its_reason(bad_folder_run):
    _, results, _ = bad_folder_run
    rows = summary_rows(results)
    for case, metric in zip(CASES, ("cnniqa-live", "niqe"), strict=True):
        skipped = rows[case]["skipped"]
        assert f"{TINY}: {TOO_SMALL[metric]}" in skipped
        assert f"{BROKEN}: {UNREADABLE}" in skipped


def test_the_per_image_csvs_keep_the_skipped_rows_with_their_reasons(bad_folder_run):
    _, results, _ = bad_folder_run
    for metric in ("cnniqa-live", "niqe"):
        path = results / "per_image" / f"fgsm_{metric}_test.csv"
        assert path.read_text().splitlines()[0] == ",".join((*IMAGE_COLUMNS, "skip_reason"))
        rows = {row["image_name"]: row for row in read_msu_csv(path).rows}
        assert len(rows) == GOOD + 2
        assert rows[TINY]["skip_reason"] == TOO_SMALL[metric]
        assert rows[BROKEN]["skip_reason"].startswith(UNREADABLE)
        assert math.isnan(rows[TINY]["clear"])
        scored = [row for row in rows.values() if not row["skip_reason"]]
        assert len(scored) == GOOD
        assert all(math.isfinite(row["attacked"]) for row in scored)


def test_the_universal_case_trains_on_the_folder_and_skips_the_same_images(bad_folder_run):
    _, results, _ = bad_folder_run
    result = read_msu_csv(results / "per_image" / "uap_cnniqa-live_test.csv")
    assert result.universal
    skipped = {row["image_name"]: row for row in result.rows if row["skip_reason"]}
    assert set(skipped) == {TINY, BROKEN}
    assert skipped[TINY]["amplitude"] == 0.2
    assert skipped[TINY]["train_dataset"] == "photos"


def test_mlflow_records_the_skipped_count_and_names(bad_folder_run):
    from mlflow.tracking import MlflowClient

    _, _, store = bad_folder_run
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    runs = {r.data.tags["case_id"]: r for r in client.search_runs([experiment.experiment_id], "tags.run_kind = 'case'")}
    assert set(runs) == {*CASES, UNIVERSAL_CASE}
    for case, metric in zip(CASES, ("cnniqa-live", "niqe"), strict=True):
        run = runs[case]
        assert run.data.metrics["n_images"] == GOOD
        assert run.data.metrics["n_skipped"] == 2
        assert f"{TINY}: {TOO_SMALL[metric]}" in run.data.tags["skipped"]
        assert BROKEN in run.data.tags["skipped"]


def test_iqa_robustness_score_leaves_the_skipped_rows_out(bad_folder_run, capsys):
    _, results, _ = bad_folder_run
    path = results / "per_image" / "fgsm_niqe_test.csv"
    assert main(["score", str(path), "--format", "json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    assert group["n"] == GOOD
    assert math.isfinite(group["abs_gain"])


def test_on_bad_image_fail_raises_the_error_in_the_case(tmp_path, torch_home, shared_dir, msu_test_images):
    small = good_images(tmp_path / "small", msu_test_images, 2)
    tiny_png(small)
    unreadable = good_images(tmp_path / "unreadable", msu_test_images, 2)
    broken_png(unreadable)
    proc, results, _ = session(
        tmp_path,
        torch_home,
        shared_dir,
        *("--metric", "cnniqa-live", "--attack", "fgsm", "--on-bad-image", "fail", "--no-mlflow"),
        *("--dataset", str(small), "--dataset", str(unreadable)),
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "2 failed" in proc.stdout
    rows = summary_rows(results)
    too_small, broken = rows["fgsm-cnniqa-live-small"], rows["fgsm-cnniqa-live-unreadable"]
    assert too_small["status"] == broken["status"] == "error"
    assert "images must be at least 33 px" in too_small["message"]
    assert "could not be read as images" in broken["message"]
    assert BROKEN in broken["message"]


def test_a_flat_image_the_metric_cannot_score_is_skipped_with_the_reason(
    tmp_path, torch_home, pyiqa_weights, shared_dir, msu_test_images
):
    folder = good_images(tmp_path / "flat", msu_test_images, 3)
    Image.new("RGB", (96, 96), (128, 128, 128)).save(folder / "grey.png")
    proc, results, _ = session(
        tmp_path,
        torch_home,
        shared_dir,
        *("--metric", "brisque,niqe", "--attack", "fgsm", "--dataset", str(folder), "--no-mlflow"),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = summary_rows(results)
    assert rows["fgsm-brisque-flat"]["n"] == rows["fgsm-niqe-flat"]["n"] == "3"
    assert rows["fgsm-brisque-flat"]["skipped"] == "grey.png: clean score is nan"
    assert rows["fgsm-niqe-flat"]["skipped"].startswith("grey.png: niqe raised ")


def test_a_case_whose_images_are_all_bad_errors_naming_each(tmp_path, torch_home, shared_dir):
    folder = tmp_path / "bad"
    folder.mkdir()
    tiny_png(folder)
    broken_png(folder)
    proc, results, _ = session(
        tmp_path, torch_home, shared_dir, "--metric", "cnniqa-live", "--attack", "fgsm", "--dataset", str(folder),
        "--no-mlflow",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:]
    message = summary_rows(results)["fgsm-cnniqa-live-bad"]["message"]
    assert "no image left to score" in message
    assert f"{TINY}: {TOO_SMALL['cnniqa-live']}" in message
    assert f"{BROKEN}: {UNREADABLE}" in message


# -- rows, CSV, summary -----------------------------------------------------------------------------


def scored(name: str, clear: float, attacked: float, **extra) -> dict:
    return {"image_name": name, "test_dataset": "toy", "clear": clear, "attacked": attacked,
            "rel_gain": attacked / clear, "psnr": 40.0, "ssim": 0.95, "mse": 1e-4, **extra}  # fmt: skip


ROWS = [
    scored("a.png", 0.2, 0.9),
    skipped_row("tiny.png", "toy", "too small for toy: 8x8 px, needs at least 32 px"),
    scored("b.png", 0.6, 0.8),
    scored("c.png", 0.4, 0.5),
    skipped_row("grey.png", "toy", "clean score is nan"),
]


def test_score_rows_scores_only_the_scored_rows():
    scores = score_rows(ROWS, lower_better=False)
    expected = score_group([0.2, 0.6, 0.4], [0.9, 0.8, 0.5], lower_better=False)
    expected.update(rank_scores([0.2, 0.6, 0.4], [0.9, 0.8, 0.5]))
    expected["improved_fraction"] = 1.0  # every scored image rose
    assert scores.keys() == expected.keys()
    assert scores["n"] == 3
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, nan_ok=True), key


def test_score_rows_of_clips_adds_the_mean_flicker_of_the_scored_clips():
    clips = [scored("a", 0.2, 0.9, flicker=0.1), scored("b", 0.6, 0.8, flicker=0.3)]
    clips.append(skipped_row("c", "toy", "unreadable: no frames", clips=True))
    assert score_rows(clips, lower_better=True, clips=True)["flicker"] == pytest.approx(0.2)


def test_score_rows_without_a_scored_row_names_every_skipped_one():
    with pytest.raises(NothingToScoreError, match=r"tiny\.png: too small for toy.*\n.*grey\.png: clean score is nan"):
        score_rows([ROWS[1], ROWS[4]], lower_better=False)


def test_skipped_rows_survive_a_csv_round_trip_in_a_trailing_column(tmp_path):
    path = write_msu_csv(tmp_path / "fgsm_toy_test.csv", ROWS)
    assert path.read_text().splitlines()[0] == ",".join((*IMAGE_COLUMNS, "skip_reason"))
    back = read_msu_csv(path).rows
    assert [r["image_name"] for r in back] == [r["image_name"] for r in ROWS]
    assert [r["skip_reason"] for r in back] == [r.get("skip_reason", "") for r in ROWS]
    assert back[0]["clear"] == 0.2
    assert math.isnan(back[1]["attacked"])
    (group,) = collect_groups([read_msu_csv(path)])
    assert group.n == 3


def test_a_csv_without_skipped_rows_keeps_the_benchmark_layout(tmp_path):
    path = write_msu_csv(tmp_path / "fgsm_toy_test.csv", [ROWS[0], ROWS[2]])
    assert path.read_text().splitlines()[0] == ",".join(IMAGE_COLUMNS)
    assert "skip_reason" not in read_msu_csv(path).rows[0]


def test_the_case_summary_counts_scored_and_skipped_images():
    result = CaseResult("fgsm-toy-toy", "toy", "fgsm", "toy", rows=ROWS, scores=score_rows(ROWS, False))
    assert (result.n_images, result.n_skipped) == (3, 2)
    assert [r["image_name"] for r in result.skipped_rows] == ["tiny.png", "grey.png"]
    row = case_summary(result)
    assert (row["n"], row["n_skipped"]) == (3, 2)
    assert row["skipped"] == "tiny.png: too small for toy: 8x8 px, needs at least 32 px; grey.png: clean score is nan"
    assert row["psnr"] == pytest.approx(40.0)


def test_a_long_skipped_list_is_cut_in_the_summary():
    rows = [ROWS[0], *(skipped_row(f"img{i:03d}.png", "toy", "unreadable: OSError: truncated") for i in range(100))]
    text = case_summary(CaseResult("c", "toy", "fgsm", "toy", rows=rows))["skipped"]
    assert len(text) <= 500
    assert text.startswith("img000.png: unreadable")
    assert text.endswith("...")


# -- clips ------------------------------------------------------------------------------------------


def test_a_clip_too_small_for_a_video_metric_is_a_skipped_row_and_the_other_clip_is_scored(tmp_path):
    from video_files import write_video

    from iqa_robustness.runner.config import SuiteConfig
    from iqa_robustness.runner.grid import CaseSpec
    from iqa_robustness.runner.suite import Suite

    rng = np.random.default_rng(0)
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "large.y4m", rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    write_video(clips / "small.y4m", rng.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8))
    suite = Suite(SuiteConfig(device="cpu", random_weights=True, results_dir=tmp_path / "results", pairs_to_save=0))

    result = suite.run(CaseSpec("vsfa", "fgsm", str(clips)))

    assert [row["image_name"] for row in result.scored_rows] == ["large.y4m"]
    (skipped,) = result.skipped_rows
    assert skipped["image_name"] == "small.y4m"
    assert skipped["skip_reason"] == "too small for vsfa: 48x32 px, needs at least 64 px"
    assert result.scores["n"] == 1
    with pytest.raises(NothingToScoreError, match=r"small\.y4m: too small for vsfa"):
        Suite(SuiteConfig(device="cpu", random_weights=True, image_size=40, results_dir=tmp_path / "r2")).run(
            CaseSpec("vsfa", "fgsm", str(clips))
        )
