"""The MSU per-image result CSV: reading, writing, grouping, and scores that match the benchmark's."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from iqa_robustness.scores.formulas import classic_relative_gain
from iqa_robustness.scores.msu_csv import (
    IMAGE_COLUMNS,
    UNIVERSAL_COLUMNS,
    ResultFile,
    collect_groups,
    parse_result_name,
    read_msu_csv,
    score_groups,
    universal_group_name,
    write_msu_csv,
)

REFERENCE = Path(__file__).parent / "data" / "msu_reference_scores.json"
# benchmark score_methods.py name -> our key
BENCHMARK_METHODS = {
    "robustness_score": "robustness_score",
    "normalized_absolute_gain": "norm_abs_gain",
    "normalized_relative_gain": "norm_rel_gain",
    "wasserstein_score": "wasserstein_score",
    "energy_distance_score": "energy_distance_score",
}
INTERVALS = {"_conf_interval_low": "_ci_low", "_conf_interval_high": "_ci_high"}


def image_row(name: str, clear: float, attacked: float, dataset: str = "NIPS") -> dict:
    return {"image_name": name, "test_dataset": dataset, "clear": clear, "attacked": attacked,
            "psnr": 30.0, "ssim": 0.9, "mse": 0.001}  # fmt: skip


def universal_row(name: str, train: str, amp: float, clear: float, attacked: float, dataset: str = "NIPS"):
    return {**image_row(name, clear, attacked, dataset), "train_dataset": train, "amplitude": amp}


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -- file names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("korhonen-et-al_maniqa_test.csv", ("korhonen-et-al", "maniqa")),
        ("std-fgsm_maniqa_test.csv", ("std-fgsm", "maniqa")),
        ("results/cumulative-uap_maniqa_test.csv", ("cumulative-uap", "maniqa")),
        ("ifgsm_clipiqa_rn50_test.csv", ("ifgsm", "clipiqa_rn50")),
        ("results.csv", (None, None)),
        ("maniqa_test.csv", (None, None)),
    ],
)
def test_attack_and_metric_names_come_from_msu_file_names(name, expected):
    assert parse_result_name(name) == expected


def test_universal_group_names_follow_the_benchmark():
    assert universal_group_name("uap", "COCO", 0.2) == "default-uap_COCO_amp0.2"
    assert universal_group_name("cumulative-uap", "VOC2012", 0.4) == "cumulative-uap_VOC2012_amp0.4"


# -- reading the shared results ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def msu_results(shared_dir: Path) -> list[ResultFile]:
    return [read_msu_csv(p) for p in sorted((shared_dir / "data" / "msu" / "results").glob("*.csv"))]


def test_shared_image_specific_file_reads_with_names_and_numbers(shared_dir):
    f = read_msu_csv(shared_dir / "data" / "msu" / "results" / "amifgsm_maniqa_test.csv")
    assert (f.attack, f.metric, f.universal) == ("amifgsm", "maniqa", False)
    assert len(f.rows) == 3218
    assert f.rows[0]["image_name"] == "000b7d55b6184b08.png"
    assert f.rows[0]["clear"] == 0.49756383895874023
    assert f.rows[0]["rel_gain"] == pytest.approx(f.rows[0]["attacked"] / f.rows[0]["clear"])


def test_shared_universal_file_reads_every_train_set_and_amplitude(shared_dir):
    f = read_msu_csv(shared_dir / "data" / "msu" / "results" / "uap_maniqa_test.csv")
    assert (f.attack, f.universal) == ("uap", True)
    assert len(f.rows) == 6 * 3218
    assert {(r["train_dataset"], r["amplitude"]) for r in f.rows} == {
        (t, k) for t in ("COCO", "VOC2012") for k in (0.2, 0.4, 0.8)
    }


def test_shared_results_group_as_the_benchmark_does(msu_results):
    names = [g.name for g in collect_groups(msu_results)]
    assert names[-3:] == ["all", "iterative", "uap"]
    assert "default-uap_VOC2012_amp0.8" in names
    assert "uap_COCO_amp0.2" not in names
    assert len(names) == 6 + 3 * (6 + 1) + 3


# -- agreement with the benchmark's own scoring code -------------------------------------------------


def same_to_4_significant_digits(ours: float, theirs: float) -> bool:
    """Within half a unit of the 4th significant digit of the benchmark's value."""
    return abs(ours - theirs) <= 5e-5 * abs(theirs)


@functools.cache
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def test_reference_fixture_names_its_origin():
    ref = reference()
    assert "score_methods.py" in ref["_comment"]
    assert ref["commit"] in ref["_comment"]


@pytest.fixture(scope="module")
def our_scores(msu_results) -> dict[str, dict]:
    return {r["group"]: r for r in score_groups(collect_groups(msu_results))}


@pytest.fixture(scope="module")
def our_scores_by_dataset(msu_results) -> dict[tuple[str, str], dict]:
    rows = score_groups(collect_groups(msu_results, by_dataset=True))
    return {(r["dataset"], r["group"]): r for r in rows}


def assert_matches_benchmark(ours: dict, theirs: dict) -> None:
    assert ours["n"] == theirs["n"]
    for method, key in BENCHMARK_METHODS.items():
        assert same_to_4_significant_digits(ours[key], theirs[method]), (method, ours[key], theirs[method])
        for suffix, our_suffix in INTERVALS.items():
            if method + suffix in theirs:
                ours_ci, theirs_ci = ours[key + our_suffix], theirs[method + suffix]
                assert same_to_4_significant_digits(ours_ci, theirs_ci), (method + suffix, ours_ci, theirs_ci)


@pytest.mark.parametrize("group", sorted(reference()["groups"]))
def test_scores_of_every_group_agree_with_the_benchmark(our_scores, group):
    assert_matches_benchmark(our_scores[group], reference()["groups"][group])


@pytest.mark.parametrize(
    ("dataset", "group"), [(d, g) for d, groups in reference()["by_dataset"].items() for g in sorted(groups)]
)
def test_scores_split_by_dataset_agree_with_the_benchmark(our_scores_by_dataset, dataset, group):
    assert_matches_benchmark(our_scores_by_dataset[(dataset, group)], reference()["by_dataset"][dataset][group])


def test_classic_relative_gain_agrees_with_the_benchmark(msu_results):
    ref = reference()["groups"]
    for group in collect_groups(msu_results):
        values = classic_relative_gain(group.clear, group.attacked)
        assert same_to_4_significant_digits(float(np.mean(values)), ref[group.name]["relative_gain_classic"])


def test_every_benchmark_group_is_produced(our_scores):
    assert set(reference()["groups"]) <= set(our_scores)


# -- writing ---------------------------------------------------------------------------------------


def test_image_specific_rows_survive_a_round_trip(tmp_path):
    rows = [
        image_row("a.png", 0.49756383895874023, 1.1093800067901611),
        image_row("b.png", 0.1, -0.3, "DERF"),
    ]
    rows[0]["ssim"] = 0.81034225
    path = write_msu_csv(tmp_path / "ifgsm_toy_test.csv", rows)
    back = read_msu_csv(path)
    assert path.read_text().splitlines()[0] == ",".join(IMAGE_COLUMNS)
    assert (back.universal, back.attack, back.metric) == (False, "ifgsm", "toy")
    for written, read in zip(rows, back.rows, strict=True):
        assert {k: read[k] for k in written} == written


def test_universal_rows_survive_a_round_trip_in_the_benchmark_column_order(tmp_path, shared_dir):
    rows = [universal_row("a.png", "COCO", 0.2, 0.5, 0.4), universal_row("a.png", "VOC2012", 0.8, 0.5, 0.1)]
    path = write_msu_csv(tmp_path / "uap_toy_test.csv", rows)
    back = read_msu_csv(path)
    shared_header = (shared_dir / "data" / "msu" / "results" / "uap_maniqa_test.csv").open().readline()
    assert path.read_text().splitlines()[0] == shared_header.strip() == ",".join(UNIVERSAL_COLUMNS)
    assert back.universal
    for written, read in zip(rows, back.rows, strict=True):
        assert {k: read[k] for k in written} == written


@pytest.mark.parametrize("attack", ["madc", "uap"])
def test_a_shared_file_is_rewritten_byte_for_byte(tmp_path, msu_results, attack):
    source = next(f for f in msu_results if f.attack == attack)
    copy = write_msu_csv(tmp_path / source.path.name, source.rows, universal=source.universal)
    assert copy.read_bytes() == source.path.read_bytes()


def test_missing_rel_gain_is_filled_as_the_benchmark_does(tmp_path):
    path = write_msu_csv(tmp_path / "x.csv", [image_row("a.png", 0.5, 0.75), image_row("b.png", 1e-4, 0.3)])
    rel = [r["rel_gain"] for r in read_msu_csv(path).rows]
    assert rel == [1.5, math.inf]


def test_writing_a_row_without_scores_is_refused(tmp_path):
    with pytest.raises(ValueError, match="attacked"):
        write_msu_csv(tmp_path / "x.csv", [{"image_name": "a.png", "test_dataset": "NIPS", "clear": 0.1}])


# -- bad files -------------------------------------------------------------------------------------

HEADER = ",".join(IMAGE_COLUMNS)
GOOD = "a.png,NIPS,0.5,0.7,1.4,30.0,0.9,0.001"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "line 1: empty file"),
        (("image_name,test_dataset,clear,attacked",), "line 1: missing column"),
        ((HEADER,), "line 2: no data rows"),
        (
            (HEADER, GOOD, "b.png,NIPS,0.5,oops,1.4,30.0,0.9,0.001"),
            "line 3: column 'attacked' is not a number",
        ),
        ((HEADER, GOOD, GOOD, "c.png,NIPS,0.5"), "line 4: missing value for column 'attacked'"),
        ((HEADER, GOOD + ",extra"), "line 2: 9 fields"),
        (("image_name,train_dataset,test_dataset,clear,attacked,rel_gain,psnr,ssim,mse",), "amplitude"),
    ],
)
def test_bad_files_raise_naming_file_and_line(tmp_path, lines, message):
    path = write_lines(tmp_path / "ifgsm_toy_test.csv", *lines)
    with pytest.raises(ValueError, match=message) as err:
        read_msu_csv(path)
    assert str(path) in str(err.value)


def test_a_binary_file_raises_naming_file_and_line(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(HEADER.encode() + b"\n" + b"\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match=r"binary\.csv, line 2"):
        read_msu_csv(path)


def test_a_missing_file_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere\.csv: cannot read"):
        read_msu_csv(tmp_path / "nowhere.csv")


# -- grouping --------------------------------------------------------------------------------------


@pytest.fixture
def toy_files() -> list[ResultFile]:
    ifgsm = ResultFile(
        rows=[
            image_row("a", 0.2, 0.9),
            image_row("b", 0.6, 0.8, "NIPS2017"),
            image_row("c", 0.4, 0.5, "DERF"),
        ],
        universal=False,
        attack="ifgsm",
    )
    uap = ResultFile(
        rows=[
            universal_row(img, train, amp, clear, clear - amp / 10)
            for train in ("VOC2012", "COCO")
            for amp in (0.8, 0.2)
            for img, clear in (("a", 0.2), ("b", 0.6))
        ],
        universal=True,
        attack="uap",
    )
    return [ifgsm, uap]


def test_groups_are_attacks_universal_subgroups_and_aggregates(toy_files):
    groups = {g.name: g.n for g in collect_groups(toy_files)}
    assert list(groups) == [
        "ifgsm",
        "default-uap_VOC2012_amp0.2",
        "default-uap_VOC2012_amp0.8",
        "default-uap_COCO_amp0.2",
        "default-uap_COCO_amp0.8",
        "default-uap",
        "all",
        "iterative",
        "uap",
    ]
    assert groups["default-uap_COCO_amp0.2"] == 2
    assert (groups["default-uap"], groups["all"], groups["iterative"], groups["uap"]) == (8, 11, 3, 8)


def test_aggregate_scaling_is_fitted_on_the_pooled_group(toy_files):
    scored = {r["group"]: r for r in score_groups(collect_groups(toy_files))}
    # clear scores of ifgsm span [0.2, 0.6], as do those of the pooled group: same scale, same gains
    assert scored["iterative"]["norm_abs_gain"] == pytest.approx((0.7 + 0.2 + 0.1) / 3 / 0.4)
    all_clear = np.array([0.2, 0.6, 0.4] + [0.2, 0.6] * 4)
    all_gain = np.array([0.7, 0.2, 0.1] + [-0.08, -0.08, -0.02, -0.02] * 2)
    assert scored["all"]["abs_gain"] == pytest.approx(all_gain.mean())
    assert scored["all"]["norm_abs_gain"] == pytest.approx(all_gain.mean() / np.ptp(all_clear))


def test_one_attack_gets_no_aggregates(toy_files):
    assert [g.name for g in collect_groups(toy_files[:1])] == ["ifgsm"]


def test_files_of_the_same_attack_are_pooled(toy_files):
    groups = collect_groups([toy_files[0], toy_files[0]])
    assert [(g.name, g.n) for g in groups] == [("ifgsm", 6)]


def test_split_by_dataset_merges_nips2017_into_nips(toy_files):
    groups = [(g.name, g.dataset, g.n) for g in collect_groups(toy_files[:1], by_dataset=True)]
    assert groups == [("ifgsm", "NIPS", 2), ("ifgsm", "DERF", 1)]


def test_split_by_dataset_covers_every_group(toy_files):
    groups = collect_groups(toy_files, by_dataset=True)
    assert {g.dataset for g in groups} == {"NIPS", "DERF"}
    assert sum(g.n for g in groups if g.name == "all") == 11
