"""``iqa-robustness score``: groups, formats, orientation and errors, on small result files."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import types
from pathlib import Path

import pytest

from iqa_robustness.cli.main import main
from iqa_robustness.scores.formulas import RANK_KEYS, RANK_SCORES, SCORE_KEYS, rank_scores, score_group
from iqa_robustness.scores.msu_csv import write_msu_csv

LOWER_BETTER_METRIC = "toy-lower"

IFGSM = [  # image, dataset, clear, attacked
    ("a.png", "NIPS", 0.20, 0.90),
    ("b.png", "NIPS", 0.60, 0.80),
    ("c.png", "DERF", 0.40, 0.50),
    ("d.png", "DERF", 0.30, 0.35),
]


def image_rows(rows):
    return [
        {
            "image_name": n,
            "test_dataset": d,
            "clear": c,
            "attacked": a,
            "psnr": 30.0,
            "ssim": 0.9,
            "mse": 1e-3,
        }
        for n, d, c, a in rows
    ]


def universal_rows():
    return [
        {**row, "train_dataset": train, "amplitude": amp, "attacked": row["clear"] - amp / 10}
        for train in ("COCO", "VOC2012")
        for amp in (0.2, 0.8)
        for row in image_rows(IFGSM[:2])
    ]


@pytest.fixture(autouse=True)
def lower_better_metric(restored_metric_registry):
    """A lower-is-better metric in the real registry for the length of a test; every other name is unknown."""
    from iqa_robustness.metrics import MetricSpec, register_metric

    spec = MetricSpec(LOWER_BETTER_METRIC, lower_better=True)
    register_metric(spec, lambda *args: None)
    return spec


@pytest.fixture
def files(tmp_path) -> list[Path]:
    return [
        write_msu_csv(tmp_path / "ifgsm_toy_test.csv", image_rows(IFGSM)),
        write_msu_csv(tmp_path / "uap_toy_test.csv", universal_rows()),
    ]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["score", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def score_json(capsys, *args) -> dict:
    code, out, err = run_cli(capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_json_output_has_one_row_per_group_with_every_score(capsys, files):
    result = score_json(capsys, *files)
    names = [g["group"] for g in result["groups"]]
    assert names == [
        "ifgsm",
        "default-uap_COCO_amp0.2",
        "default-uap_COCO_amp0.8",
        "default-uap_VOC2012_amp0.2",
        "default-uap_VOC2012_amp0.8",
        "default-uap",
        "all",
        "iterative",
        "uap",
    ]
    ifgsm = result["groups"][0]
    expected = score_group([r[2] for r in IFGSM], [r[3] for r in IFGSM])
    assert {k: ifgsm[k] for k in SCORE_KEYS} == pytest.approx(expected)
    ranks = rank_scores([r[2] for r in IFGSM], [r[3] for r in IFGSM])
    assert {k: ifgsm[k] for k in ("spearman", "kendall", "pearson")} == pytest.approx(
        {k: ranks[k] for k in ("spearman", "kendall", "pearson")}
    )
    assert (result["metric"], result["lower_better"]) == ("toy", False)


def test_json_output_writes_undefined_intervals_as_null(capsys, tmp_path):
    one = write_msu_csv(tmp_path / "ifgsm_toy_test.csv", image_rows(IFGSM[:1]))
    row = score_json(capsys, one)["groups"][0]
    assert row["n"] == 1
    assert row["abs_gain_ci_low"] is None


def test_csv_output_has_the_documented_columns(capsys, files):
    code, out, _ = run_cli(capsys, *files, "--format", "csv")
    assert code == 0
    reader = csv.DictReader(io.StringIO(out))
    assert reader.fieldnames[:9] == [
        "group",
        "n",
        "abs_gain",
        "rel_gain",
        "norm_abs_gain",
        "norm_rel_gain",
        "robustness_score",
        "wasserstein_score",
        "energy_distance_score",
    ]
    assert reader.fieldnames[9:11] == ["abs_gain_ci_low", "abs_gain_ci_high"]
    assert reader.fieldnames[1 : 1 + len(SCORE_KEYS)] == list(SCORE_KEYS)
    assert reader.fieldnames[1 + len(SCORE_KEYS) :] == list(RANK_KEYS)  # rank stability, after the benchmark's
    rows = list(reader)
    assert len(rows) == 9
    assert float(rows[0]["abs_gain"]) == pytest.approx((0.7 + 0.2 + 0.1 + 0.05) / 4)


def test_table_output_is_aligned_and_shows_intervals(capsys, files):
    code, out, _ = run_cli(capsys, *files)
    assert code == 0
    caption, header, rule, *body = out.splitlines()
    assert "higher raw scores are better" in caption
    assert header.split() == ["group", "n", *SCORE_KEYS[1:8], *RANK_SCORES]
    assert set(rule.replace(" ", "")) == {"-"}
    assert [line.split()[0] for line in body][:2] == ["ifgsm", "default-uap_COCO_amp0.2"]
    assert "±" in body[0]
    assert len({len(line) for line in (header, rule, *body)}) == 1  # numbers right-aligned to one edge


def test_by_dataset_splits_every_group(capsys, files):
    rows = score_json(capsys, *files, "--by", "dataset")["groups"]
    assert [(r["group"], r["dataset"], r["n"]) for r in rows[:2]] == [
        ("ifgsm", "NIPS", 2),
        ("ifgsm", "DERF", 2),
    ]
    assert {r["dataset"] for r in rows} == {"NIPS", "DERF"}
    assert sum(r["n"] for r in rows if r["group"] == "all") == 4 + 8


def test_by_dataset_adds_a_dataset_column_to_csv(capsys, files):
    _, out, _ = run_cli(capsys, *files, "--by", "dataset", "--format", "csv")
    assert out.splitlines()[0].startswith("group,dataset,n,abs_gain,")


def test_lower_better_flag_reverses_the_gains(capsys, files):
    higher = score_json(capsys, files[0])["groups"][0]
    lower = score_json(capsys, files[0], "--lower-better")["groups"][0]
    assert lower["abs_gain"] == pytest.approx(-higher["abs_gain"])
    assert lower["robustness_score"] == pytest.approx(higher["robustness_score"])


def test_orientation_comes_from_the_registry_for_a_metric_named_in_the_file(capsys, tmp_path):
    path = write_msu_csv(tmp_path / f"ifgsm_{LOWER_BETTER_METRIC}_test.csv", image_rows(IFGSM))
    result = score_json(capsys, path)
    assert (result["metric"], result["lower_better"]) == (LOWER_BETTER_METRIC, True)
    assert result["groups"][0]["abs_gain"] < 0


def test_metric_option_names_the_metric_for_orientation(capsys, files):
    result = score_json(capsys, files[0], "--metric", LOWER_BETTER_METRIC)
    assert result["lower_better"] is True


def test_explicit_flag_overrides_the_registry(capsys, files):
    result = score_json(capsys, files[0], "--metric", LOWER_BETTER_METRIC, "--no-lower-better")
    assert result["lower_better"] is False


def test_unknown_metric_is_scored_higher_better_with_a_warning(capsys, files, caplog):
    with caplog.at_level(logging.WARNING):
        result = score_json(capsys, files[0])
    assert result["lower_better"] is False
    assert "'toy' is not registered" in caplog.text


def test_missing_registry_falls_back_to_higher_better(capsys, files, monkeypatch):
    monkeypatch.setitem(sys.modules, "metrics", types.ModuleType("metrics"))  # no get_spec: import fails
    assert score_json(capsys, files[0])["lower_better"] is False


def test_bad_file_exits_2_naming_file_and_line(capsys, tmp_path, files):
    bad = tmp_path / "mifgsm_toy_test.csv"
    text = files[0].read_text().splitlines()
    text[2] = text[2].replace("0.6", "six-tenths", 1)
    bad.write_text("\n".join(text) + "\n")
    code, out, err = run_cli(capsys, files[0], bad)
    assert code == 2
    assert out == ""
    assert str(bad) in err
    assert "line 3" in err


def test_missing_file_exits_2(capsys, tmp_path):
    code, _, err = run_cli(capsys, tmp_path / "absent_toy_test.csv")
    assert code == 2
    assert "absent_toy_test.csv" in err


def test_files_of_several_metrics_are_scored_per_metric(capsys, tmp_path, files):
    other = write_msu_csv(tmp_path / "ifgsm_toy-lower_test.csv", image_rows(IFGSM))
    results = score_json(capsys, files[0], other, files[1])
    assert [(r["metric"], r["lower_better"]) for r in results] == [("toy", False), (LOWER_BETTER_METRIC, True)]
    assert [g["group"] for g in results[1]["groups"]] == ["ifgsm"]
    assert len(results[0]["groups"]) == 9
    # the lower-is-better metric's gains are oriented: the attack raised raw values, so it lost quality
    assert results[1]["groups"][0]["abs_gain"] == pytest.approx(-results[0]["groups"][0]["abs_gain"])

    code, out, _ = run_cli(capsys, files[0], other, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["metric"], r["group"]) for r in rows] == [("toy", "ifgsm"), (LOWER_BETTER_METRIC, "ifgsm")]

    code, out, _ = run_cli(capsys, files[0], other)
    assert code == 0
    assert out.count("raw scores are better") == 2


def test_a_file_of_unknown_metric_among_named_ones_is_refused(capsys, tmp_path, files):
    unnamed = write_msu_csv(tmp_path / "results.csv", image_rows(IFGSM))
    code, _, err = run_cli(capsys, files[0], unnamed)
    assert code == 2
    assert "results.csv" in err
    assert "--metric" in err


def test_shared_maniqa_results_score_as_the_benchmark_reports(capsys, shared_dir):
    path = shared_dir / "data" / "msu" / "results" / "ifgsm_maniqa_test.csv"
    row = score_json(capsys, path, "--no-lower-better")["groups"][0]
    assert (row["group"], row["n"]) == ("ifgsm", 3218)
    assert row["robustness_score"] == pytest.approx(-0.3074893, rel=1e-6)
    assert row["wasserstein_score"] == pytest.approx(1.3442994, rel=1e-6)
