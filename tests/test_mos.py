"""Agreement with subjective scores before and after the attack: ``mos.csv``, ``--mos``, SROCC/PLCC/KROCC.

The scores are checked against scipy on known numbers; a real case runs in-process on images
generated here, with a synthetic ``mos.csv`` beside them that leaves one image without a MOS.
"""

from __future__ import annotations

import csv
import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from iqa_robustness.cli.main import main as cli
from iqa_robustness.data.mos import dataset_mos, read_mos
from iqa_robustness.scores.formulas import MOS_KEYS, mos_scores
from iqa_robustness.scores.msu_csv import read_msu_csv, write_msu_csv

CLEAR = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
ATTACKED = [2.0, 1.0, 4.0, 3.0, 6.0, 5.5]
MOS = [1.1, 2.5, 2.9, 4.2, 5.0, float("nan")]


def test_mos_scores_are_scipys_correlations_before_and_after_the_attack():
    out = mos_scores(CLEAR, ATTACKED, MOS)
    assert tuple(out) == MOS_KEYS
    assert out["n_mos"] == 5  # the image without a MOS is left out
    c, a, m = CLEAR[:5], ATTACKED[:5], MOS[:5]
    assert out["srocc_clean"] == pytest.approx(stats.spearmanr(c, m).statistic)
    assert out["plcc_clean"] == pytest.approx(stats.pearsonr(c, m).statistic)
    assert out["krocc_clean"] == pytest.approx(stats.kendalltau(c, m).statistic)
    assert out["srocc_attacked"] == pytest.approx(stats.spearmanr(a, m).statistic)
    assert out["plcc_attacked"] == pytest.approx(stats.pearsonr(a, m).statistic)
    assert out["krocc_attacked"] == pytest.approx(stats.kendalltau(a, m).statistic)
    assert out["srocc_clean"] == 1.0  # by hand: the clean scores rank the five images as MOS does
    assert out["srocc_attacked"] == pytest.approx(0.8)  # ranks [2, 1, 4, 3, 5]: sum d^2 = 4, 1 - 24/120
    assert out["srocc_drop"] == pytest.approx(0.2)
    assert out["plcc_clean_ci_low"] < out["plcc_clean"] < out["plcc_clean_ci_high"]


def test_a_lower_is_better_metric_losing_agreement_has_a_positive_drop():
    flipped = mos_scores([-x for x in CLEAR], [-x for x in ATTACKED], MOS)
    assert flipped["srocc_clean"] == -1.0
    assert flipped["srocc_drop"] == pytest.approx(0.2)


def test_mos_files_are_read_with_clear_errors(tmp_path: Path):
    good = tmp_path / "mos.csv"
    good.write_text("image_name,mos\na.png,3.5\nb.png,4\n")
    assert read_mos(good) == {"a.png": 3.5, "b.png": 4.0}
    assert dataset_mos(tmp_path) == ({"a.png": 3.5, "b.png": 4.0}, good)
    assert dataset_mos(tmp_path / "elsewhere") is None
    for text, message in [
        ("name,mos\na.png,3\n", "no column"),
        ("image_name,mos\na.png,high\n", "line 2: mos 'high' is not a number"),
        ("image_name,mos\na.png,3\na.png,4\n", "line 3: a.png has a MOS already"),
        ("image_name,mos\n", "no MOS rows"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_mos(bad)
    with pytest.raises(ValueError, match="not found"):
        read_mos(tmp_path / "missing.csv")


@pytest.fixture(scope="module")
def images_with_mos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """Five generated 64x64 photographs-to-be (smooth to noisy) and a mos.csv for four of them."""
    folder = tmp_path_factory.mktemp("mos-set")
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:64, 0:64] / 64
    mos = {}
    for i in range(5):
        base = np.stack([x, y, (x + y) / 2], axis=-1)
        noisy = np.clip(base + rng.normal(0, 0.05 * i, base.shape), 0, 1)
        Image.fromarray((noisy * 255).astype(np.uint8)).save(folder / f"img{i}.png")
        if i < 4:
            mos[f"img{i}.png"] = 5.0 - i + 0.1 * i * i
    with (folder / "mos.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_name", "mos"])
        writer.writerows(mos.items())
    return folder, mos


def test_a_case_on_a_set_with_a_mos_file_reports_agreement_before_and_after(images_with_mos, tmp_path):
    from iqa_robustness.runner.config import SuiteConfig
    from iqa_robustness.runner.grid import CaseSpec
    from iqa_robustness.runner.suite import Suite

    folder, mos = images_with_mos
    suite = Suite(SuiteConfig(device="cpu", random_weights=True, results_dir=tmp_path / "results", pairs_to_save=0))
    result = suite.run(CaseSpec("cnniqa-live", "ifgsm", str(folder)))
    by_name = {r["image_name"]: r for r in result.rows}
    assert by_name["img0.png"]["mos"] == mos["img0.png"]
    assert math.isnan(by_name["img4.png"]["mos"])  # no MOS for it
    names = sorted(mos)
    clear = [by_name[n]["clear"] for n in names]
    attacked = [by_name[n]["attacked"] for n in names]
    m = [mos[n] for n in names]
    assert result.scores["n_mos"] == 4
    assert result.scores["srocc_clean"] == pytest.approx(stats.spearmanr(clear, m).statistic)
    assert result.scores["plcc_attacked"] == pytest.approx(stats.pearsonr(attacked, m).statistic)
    assert result.scores["spearman"] == pytest.approx(
        stats.spearmanr([r["clear"] for r in result.rows], [r["attacked"] for r in result.rows]).statistic
    )

    # the per-image CSV keeps the MOS column, and `score` reads it back (or takes --mos)
    table = write_msu_csv(tmp_path / "ifgsm_cnniqa-live_test.csv", result.rows)
    assert "mos" in read_msu_csv(table).rows[0]
    for extra in ([], ["--mos", str(folder / "mos.csv")]):
        out = io.StringIO()
        with redirect_stdout(out):
            assert cli(["score", str(table), "--format", "json", *extra]) == 0
        group = json.loads(out.getvalue())["groups"][0]
        assert group["srocc_clean"] == pytest.approx(result.scores["srocc_clean"])
        assert group["krocc_attacked"] == pytest.approx(result.scores["krocc_attacked"])


def test_without_subjective_scores_there_are_no_mos_scores(tmp_path):
    rows = [{"image_name": f"{i}.png", "test_dataset": "t", "clear": c, "attacked": a} for i, (c, a) in enumerate(
        zip(CLEAR, ATTACKED, strict=True))]  # fmt: skip
    from iqa_robustness.scores.rows import score_rows

    assert "srocc_clean" not in score_rows(rows, lower_better=False)
    with_mos = [{**r, "mos": m} for r, m in zip(rows, MOS, strict=True)]
    assert score_rows(with_mos, lower_better=False)["srocc_drop"] == pytest.approx(0.2)
