"""Transferability (``--transfer-to``, ``iqa-robustness transfer``): adversarial images scored by other metrics.

docs/methodology.md, "Transferability": per source x target the normalised absolute gain and R on the
target, min-max scaled on the target's own clean scores; published perturbations are sources
without a model. Zhang et al. (NeurIPS 2022) and Ran et al. (2024) report that IQA perturbations
transfer poorly.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from iqa_robustness.cli.main import main as cli
from iqa_robustness.runner.config import SuiteConfig
from iqa_robustness.runner.resources import Resources
from iqa_robustness.runner.transfer import TransferScorer
from iqa_robustness.scores.msu_csv import read_msu_csv
from iqa_robustness.scores.transfer import score_transfer, target_scores, transfer_matrix

REPO_ROOT = Path(__file__).resolve().parents[1]
METRICS = ("cnniqa-live", "niqe", "brisque")
UAP_FILE = "uap_maniqa_COCO.npy"


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


def test_image_shards_merge_into_target_scores_on_all_the_images() -> None:
    from iqa_robustness.runner.merge import join_image_shards
    from iqa_robustness.scores.results import CaseResult

    def part(k: int, images: list[tuple[str, float, float, float, float]], error: str = "") -> CaseResult:
        rows = [
            {"image_name": n, "test_dataset": "s", "clear": c, "attacked": a, "rel_gain": 0.0, "psnr": 40.0,
             "ssim": 1.0, "mse": 0.0, "clear@t": tc, "attacked@t": ta}
            for n, c, a, tc, ta in images
        ]  # fmt: skip
        transfer = {"t": {"error": error} if error else {"lower_better": True}}
        return CaseResult("ifgsm-m-s", "m", "ifgsm", "s", {"image_shard": f"{k}/2"}, rows, transfer=transfer)

    one = part(1, [("a", 1.0, 2.0, 5.0, 4.0), ("c", 3.0, 3.5, 9.0, 9.0)])
    two = part(2, [("b", 2.0, 2.5, 7.0, 5.0)])
    joined = join_image_shards([one, two])
    # rescored on the three images: NIQE-like target (lower is better), scaling fitted on 5, 7, 9
    assert joined.transfer["t"]["norm_abs_gain"] == pytest.approx(
        target_scores([5.0, 9.0, 7.0], [4.0, 9.0, 5.0], lower_better=True)["norm_abs_gain"]
    )
    failed = join_image_shards([one, part(2, [("b", 2.0, 2.5, 7.0, 5.0)], error="t did not score: OSError")])
    assert failed.transfer["t"] == {"error": "t did not score: OSError"}


class _Metric:
    lower_better = False
    spec = dataclasses.make_dataclass("Spec", [("is_full_reference", bool, False)])()


class _Resources:
    """Stands in for Resources: target ``good`` scores an image by its mean, ``broken`` has no weights."""

    def metric(self, name: str) -> _Metric:
        if name == "broken":
            raise FileNotFoundError("broken.pth not found in /weights")
        return _Metric()

    def transfer_clean(self, target: str, source: str, dataset: str) -> dict[str, float]:
        return {"a": 0.0, "b": 1.0}

    def image_draws(self, names, attack=False):
        return None

    def run_batched(self, name, fn, batch, reference=None, draws=None):
        return batch.mean(dim=(1, 2, 3))


def test_a_target_that_fails_keeps_its_error_and_leaves_the_other_targets_scored() -> None:
    import torch

    scorer = TransferScorer(_Resources(), "src", "set", ["src", "good", "broken"])  # type: ignore[arg-type]
    assert scorer.targets == ["good", "broken"]  # the source is no target of itself
    assert "broken.pth not found" in scorer.errors["broken"]
    assert "leave broken out of --transfer-to" in scorer.errors["broken"]

    class _Data:
        items = ()

    attacked = scorer.score_batch(_Data(), ["a", "b"], torch.full((2, 3, 4, 4), 0.5))  # type: ignore[arg-type]
    rows = [{"image_name": n} for n in ("a", "b")]
    for i, row in enumerate(rows):
        scorer.annotate(row, row["image_name"], i, attacked)
    assert rows[0]["attacked@good"] == 0.5
    assert rows[1]["clear@good"] == 1.0
    assert math.isnan(rows[0]["attacked@broken"])
    results = scorer.results(rows)
    assert results["good"]["norm_abs_gain"] == pytest.approx(0.0)  # s(a) - s(c) = 0.5 - 0, 0.5 - 1
    assert set(results["broken"]) == {"error"}


def test_a_full_reference_target_of_clean_inputs_is_refused_with_what_to_do(shared_dir: Path) -> None:
    resources = Resources(SuiteConfig(image_size=64, max_images=2, device="cpu"))
    with pytest.raises(ValueError, match=r"--jpeg-quality 80.*leave gmsd out of --transfer-to"):
        resources.transfer_clean("gmsd", "niqe", "msu5")


@pytest.mark.pyiqa
def test_a_full_reference_target_scores_the_unattacked_jpeg_copies_as_its_clean_scores(shared_dir: Path) -> None:
    resources = Resources(SuiteConfig(image_size=64, max_images=2, device="cpu", jpeg_quality=(80,)))
    scorer = TransferScorer(resources, "niqe", "msu5", ["gmsd"])
    assert scorer.errors == {}
    dataset = resources.dataset("msu5", "niqe")
    names, batch = next(iter(resources.batches(dataset)))
    again = scorer.score_batch(dataset, names, batch)["gmsd"]  # reference bound: the JPEG's clean image
    assert again == pytest.approx([scorer.clean["gmsd"][n] for n in names], rel=1e-5)
    assert min(again) > 0  # not the reference against itself (0 for GMSD)


# -- a whole session, then the command ------------------------------------------------------------


@pytest.fixture(scope="module")
def session(
    tmp_path_factory: pytest.TempPathFactory,
    worker_id: str,
    msu_test_images: Path,
    pyiqa_weights: Path,
    original_weights: Path,
    torch_home: Path,
    shared_dir: Path,
) -> tuple[int, str, Path]:
    """ifgsm and the benchmark's MANIQA UAP against cnniqa-live, niqe and brisque, each scored by all three.

    Run once per test session: under pytest-xdist the first worker runs it and the others wait for
    its files, in the session's base folder, which every worker shares.
    """
    if worker_id == "master":
        return _session(tmp_path_factory.mktemp("transfer"), torch_home, original_weights, shared_dir)
    work = tmp_path_factory.getbasetemp().parent / "transfer"
    with FileLock(str(work) + ".lock"):
        done = work / "session.json"
        if not done.is_file():
            work.mkdir(parents=True, exist_ok=True)
            code, out, results = _session(work, torch_home, original_weights, shared_dir)
            done.write_text(json.dumps({"code": code, "out": out, "results": str(results)}))
        saved = json.loads(done.read_text())
    return saved["code"], saved["out"], Path(saved["results"])


def _session(work: Path, torch_home: Path, original_weights: Path, shared_dir: Path) -> tuple[int, str, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(HF_HUB_OFFLINE="1", TORCH_HOME=str(torch_home), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "pytest", str(REPO_ROOT / "robustness_tests"), "-p", "no:cacheprovider", "-q",
        "-n", "2", "--metric", ",".join(METRICS), "--transfer-to", ",".join(METRICS),
        "--attack", "ifgsm,uap", "--uap-file", str(shared_dir / "data" / "msu" / "uaps" / UAP_FILE),
        "--amplitude", "0.8", "--dataset", "msu5", "--image-size", "96", "--weights-dir", str(original_weights),
        "--results-dir", str(work / "results"), "--no-mlflow",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr, work / "results"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_case_passes_and_transfer_csv_has_a_row_per_case_and_target(session) -> None:
    code, out, results = session
    assert code == 0, out[-3000:]
    rows = [r for r in _csv(results / "transfer.csv") if r["amplitude"] != "mean"]
    assert len(rows) == 6 * 3  # (ifgsm + the UAP) x 3 metrics, each scored by the 3 metrics
    assert all(r["error"] == "" and r["n"] == "5.0" for r in rows)
    summary = {r["case_id"]: r for r in _csv(results / "summary.csv")}
    for r in rows:
        if r["own"] == "True":  # the case's own scores, as summary.csv has them
            assert float(r["norm_abs_gain"]) == float(summary[r["case_id"]]["norm_abs_gain"])
    # the per-image MSU CSVs keep the benchmark's layout and read back
    msu = read_msu_csv(results / "per_image" / "ifgsm_niqe_test.csv")
    assert len(msu.rows) == 5
    assert not any("@" in key for key in msu.rows[0])


def test_the_per_image_target_scores_reproduce_the_targets_gains(session) -> None:
    *_, results = session
    images = [r for r in _csv(results / "transfer_per_image.csv") if r["case_id"] == "ifgsm-cnniqa-live-msu5"]
    niqe = [r for r in images if r["target"] == "niqe"]
    assert len(niqe) == 5
    expected = target_scores([float(r["clear"]) for r in niqe], [float(r["attacked"]) for r in niqe], True)
    row = next(
        r for r in _csv(results / "transfer.csv") if r["case_id"] == "ifgsm-cnniqa-live-msu5" and r["target"] == "niqe"
    )
    assert float(row["norm_abs_gain"]) == pytest.approx(expected["norm_abs_gain"])
    assert float(row["robustness_score"]) == pytest.approx(expected["robustness_score"])


def test_the_published_perturbation_gives_one_row_with_the_same_values_from_every_scoring_metric(session) -> None:
    *_, results = session
    rows = [r for r in _csv(results / "transfer.csv") if UAP_FILE in r["source"] and r["amplitude"] != "mean"]
    by_target: dict[str, set[float]] = {}
    for r in rows:
        by_target.setdefault(r["target"], set()).add(float(r["norm_abs_gain"]))
    # the same adversarial images, the same clean scores: one value per target, whoever scored them
    assert set(by_target) == set(METRICS)
    assert all(len(values) == 1 for values in by_target.values()), by_target


def test_the_transfer_command_prints_and_writes_the_matrix_with_the_own_gains_on_the_diagonal(
    session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    *_, results = session
    assert cli(["transfer", str(results), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "source" in printed
    assert "* = the source's own metric" in printed
    matrix = _csv(tmp_path / "transfer_matrix.csv")
    targets = [k for k in matrix[0] if k not in ("source", "source_metric")]
    assert sorted(targets) == sorted(METRICS)
    assert [r["source"] for r in matrix] == [f"ifgsm · {m}" for m in sorted(METRICS)] + [f"uap · {UAP_FILE}"]
    summary = {r["case_id"]: r for r in _csv(results / "summary.csv")}
    for r in matrix[:3]:
        own = summary[f"ifgsm-{r['source_metric']}-msu5"]["norm_abs_gain"]
        assert float(r[r["source_metric"]]) == float(own)
    published = matrix[3]
    assert published["source_metric"] == ""
    for m in METRICS:  # a source without a model: the row is each metric's own score of the UAP
        assert float(published[m]) == pytest.approx(
            float(summary[f"uap-{m}-msu5-on-{UAP_FILE}-ampmean"]["norm_abs_gain"])
        )
    png = tmp_path / "transfer_matrix.png"
    assert png.stat().st_size > 5000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_html_report_shows_the_transfer_matrix(session) -> None:
    *_, results = session
    page = (results / "report" / "index.html").read_text()
    assert '<section id="transfer">' in page
    assert f"uap · {UAP_FILE}" in page.split('<section id="transfer">', 1)[1]


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
