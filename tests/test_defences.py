"""Defences (docs/methodology.md, "Defences"): specs, labels, BPDA and EoT, the defence scores, the grid, a session."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_plugin import run_suite

from iqa_robustness.cli.main import main as cli
from iqa_robustness.defences import (
    DefenceSpecError,
    DefendedMetric,
    list_defences,
    parse_defence,
    parse_defences,
    register_defended,
    split_defended,
)
from iqa_robustness.metrics import create_metric
from iqa_robustness.runner.grid import ADAPTIVE, NON_ADAPTIVE, build_grid
from iqa_robustness.scores.defences import defence_scores
from iqa_robustness.scores.msu_csv import read_msu_csv

torch.set_num_threads(min(2, torch.get_num_threads()))


def random_cnniqa() -> str:
    """pyiqa's CNNIQA architecture with random weights: differentiable, needs no download."""
    return "cnniqa"


# --- specs -----------------------------------------------------------------------------------------------


def test_specs_read_parameters_as_data_and_name_the_defended_metrics() -> None:
    found = parse_defences("none,jpeg(q=50),median(k=3),resize,random-crop(side=128,flip=true),bit-depth,blur(k=5)")
    assert found[0] is None  # `none` keeps the undefended metric
    assert [d.label for d in found[1:]] == ["jpeg50", "median3", "resize0.5", "crop128-flip", "quant16", "gauss5"]
    assert {"jpeg", "resize", "median-blur", "gaussian-blur", "random-crop", "quantize", "flip"} <= set(list_defences())
    jpeg, median = found[1], found[2]
    assert (jpeg.differentiable, jpeg.random) == (False, False)
    assert (median.differentiable, found[4].random) == (True, True)
    assert parse_defence(jpeg.text) == jpeg  # the exact text reads back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jpge", "jpeg"),  # unknown defence: the close name
        ("jpeg(quality=30)", r"no parameter 'quality' \(its parameters: q=50\)"),
        ("jpeg(q=0)", "from 1 to 100"),
        ("median(k=4)", "odd kernel"),
        ("none(q=1)", "takes no parameters"),
    ],
)
def test_a_bad_defence_spec_says_what_to_do(text: str, message: str) -> None:
    with pytest.raises(DefenceSpecError, match=message):
        parse_defences(text)


def test_a_crop_smaller_than_the_metrics_minimum_side_is_refused_with_the_side_to_give(pyiqa_weights) -> None:
    with pytest.raises(DefenceSpecError, match="side=96 or more"):
        register_defended(parse_defence("random-crop(side=64)"), "niqe")


def test_a_video_metric_takes_no_defence() -> None:
    with pytest.raises(DefenceSpecError, match="video metric"):
        register_defended(parse_defence("jpeg"), "vsfa")


def test_a_defended_metric_keeps_the_metrics_facts_and_a_shrinking_defence_raises_its_minimum_side() -> None:
    name = register_defended(parse_defence("resize(scale=0.5)"), "niqe")
    assert name == "resize0.5+niqe"
    assert split_defended(name) == ("resize0.5", "niqe")
    assert split_defended("niqe") is None
    from iqa_robustness.metrics import get_spec

    spec = get_spec(name)
    assert (spec.lower_better, spec.bounds, spec.min_side) == (True, get_spec("niqe").bounds, 192)


# --- BPDA and EoT ----------------------------------------------------------------------------------------


@pytest.mark.pyiqa
@pytest.mark.parametrize("spec", ["jpeg(q=30)", "quantize(levels=5)"])
def test_bpda_passes_the_gradient_straight_through_a_non_differentiable_defence(spec: str) -> None:
    defence = parse_defence(spec)
    metric = create_metric(register_defended(defence, random_cnniqa()), weights="random")
    assert isinstance(metric, DefendedMetric)
    base = metric.base
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    metric(x).sum().backward()
    # BPDA: d/dx S(d(x)) is S's gradient at d(x), as if d were the identity
    at_defended = defence.transform(x.detach(), None).requires_grad_(True)
    base(at_defended).sum().backward()
    assert x.grad is not None
    assert float(x.grad.abs().sum()) > 0
    torch.testing.assert_close(x.grad, at_defended.grad)
    # the forward value is the defended one
    with torch.no_grad():
        torch.testing.assert_close(metric(x), base(defence.transform(x, None)))
    # without BPDA the step gives no gradient: none at all (JPEG) or zero (rounding)
    y = x.detach().requires_grad_(True)
    out = base(defence.transform(y, None))
    if out.requires_grad:
        out.sum().backward()
        assert y.grad is None or float(y.grad.abs().sum()) == 0


@pytest.mark.pyiqa
def test_eot_scores_the_mean_of_n_draws_and_its_gradient_is_their_mean_gradient() -> None:
    defence = parse_defence("random-noise(sigma=0.05)")
    n = 5
    metric = create_metric(register_defended(defence, random_cnniqa(), eot=n), weights="random")
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    score = metric(x)
    score.sum().backward()

    draws = torch.Generator().manual_seed(metric.seed + 1)  # the defended metric's gradient draws
    values, grads = [], []
    for _ in range(n):
        xi = x.detach().requires_grad_(True)
        s = metric.base(defence.transform(xi, draws))
        s.sum().backward()
        values.append(s.detach())
        grads.append(xi.grad)
    torch.testing.assert_close(score.detach(), torch.stack(values).mean(0))
    torch.testing.assert_close(x.grad, torch.stack(grads).mean(0))
    assert not torch.allclose(values[0], values[1])  # the draws differ


@pytest.mark.pyiqa
def test_scoring_gives_every_image_the_same_draw_whatever_the_batch() -> None:
    defence = parse_defence("random-crop(side=16,flip=true)")
    metric = create_metric(register_defended(defence, random_cnniqa(), eot=3), weights="random")
    index = torch.arange(3 * 40 * 40, dtype=torch.float32).reshape(1, 3, 40, 40) / (3 * 40 * 40)
    batch = torch.cat([index, index, index * 0.5])
    crops = metric.defended_images(batch)
    assert torch.equal(crops[0], crops[1])
    assert torch.equal(crops[2], crops[0] * 0.5)
    assert torch.equal(metric.defended_images(batch[2:]), crops[2:])  # alone or in a batch: the same crop
    with torch.no_grad():
        assert torch.equal(metric(batch), metric(batch))  # scoring is repeatable


# --- the scores ------------------------------------------------------------------------------------------


def test_defence_scores_match_a_hand_computation() -> None:
    rows = [
        # c = undefended clear, a = undefended attacked, dc = clear, da = attacked
        {"clear": 2.0, "attacked": 3.0, "undefended_clear": 1.0, "undefended_attacked": 5.0,
         "defended_psnr": 30.0, "defended_ssim": 0.9, "clear_defended_psnr": math.inf, "clear_defended_ssim": 1.0,
         "defence_seconds": 0.1},
        {"clear": 4.0, "attacked": 4.5, "undefended_clear": 3.0, "undefended_attacked": 7.0,
         "defended_psnr": 20.0, "defended_ssim": 0.5, "clear_defended_psnr": 40.0, "clear_defended_ssim": 0.8,
         "defence_seconds": 0.3},
        {"clear": 1.0, "attacked": 2.0, "undefended_clear": 0.5, "undefended_attacked": 1.5,
         "defended_psnr": 40.0, "defended_ssim": 1.0, "clear_defended_psnr": 60.0, "clear_defended_ssim": 0.95,
         "defence_seconds": 0.2},
        {"image_name": "broken.png", "clear": math.nan, "attacked": math.nan, "skip_reason": "unreadable"},
    ]  # fmt: skip
    got = defence_scores(rows, score_range=10.0, lower_better=False)
    e = 1e-6
    # robust = gain(c, da): |1-3|, |3-4.5|, |0.5-2| over c
    assert got["robust_abs_gain"] == pytest.approx((2 + 1.5 + 1.5) / 3 / 10)
    assert got["robust_rel_gain"] == pytest.approx((2 / (1 + e) + 1.5 / (3 + e) + 1.5 / (0.5 + e)) / 3)
    # nonpurified = gain(c, a): |1-5|, |3-7|, |0.5-1.5|
    assert got["nonpurified_abs_gain"] == pytest.approx((4 + 4 + 1) / 3 / 10)
    assert got["nonpurified_rel_gain"] == pytest.approx((4 / (1 + e) + 4 / (3 + e) + 1 / (0.5 + e)) / 3)
    # both defended = gain(dc, da): |2-3|, |4-4.5|, |1-2|
    assert got["both_defended_abs_gain"] == pytest.approx((1 + 0.5 + 1) / 3 / 10)
    assert got["both_defended_rel_gain"] == pytest.approx((1 / (2 + e) + 0.5 / (4 + e) + 1 / (1 + e)) / 3)
    # SSIM + PSNR / 40, PSNR capped at 100 dB
    assert got["similarity"] == pytest.approx(((0.9 + 0.75) + (0.5 + 0.5) + (1.0 + 1.0)) / 3)
    assert got["clear_similarity"] == pytest.approx(((1.0 + 2.5) + (0.8 + 1.0) + (0.95 + 1.5)) / 3)
    # c = (1, 3, 0.5) and dc = (2, 4, 1) rank the images alike
    assert got["clean_consistency"] == pytest.approx(1.0)
    assert got["defence_seconds_per_image"] == pytest.approx(0.2)
    assert got["defence_n"] == 3


def test_defence_scores_without_undefended_scores_say_so() -> None:
    with pytest.raises(ValueError, match="undefended"):
        defence_scores([{"clear": 1.0, "attacked": 2.0}], 1.0, False)


# --- the grid and a session ------------------------------------------------------------------------------


def test_a_defended_metric_gets_an_adaptive_and_a_non_adaptive_case_per_attack() -> None:
    name = register_defended(parse_defence("jpeg"), "niqe")
    grid = build_grid([name, "niqe"], ["ifgsm", "uap"], ["msu5"], amplitudes=[0.4], train_datasets=["sample"])
    ids = {c.id: c for c in grid}
    assert set(ids) == {
        "ifgsm-jpeg50+niqe-msu5",
        "ifgsm-nonadaptive-jpeg50+niqe-msu5",
        "uap-jpeg50+niqe-msu5-on-sample-amp0.4",
        "uap-nonadaptive-jpeg50+niqe-msu5-on-sample-amp0.4",
        "ifgsm-niqe-msu5",
        "uap-niqe-msu5-on-sample-amp0.4",
    }
    adaptive, non_adaptive = ids["ifgsm-jpeg50+niqe-msu5"], ids["ifgsm-nonadaptive-jpeg50+niqe-msu5"]
    assert (adaptive.defence_mode, adaptive.victim) == (ADAPTIVE, name)
    assert (non_adaptive.defence_mode, non_adaptive.victim) == (NON_ADAPTIVE, "niqe")
    assert non_adaptive.undefended().id == "ifgsm-niqe-msu5"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def defended_session(tmp_path_factory, torch_home, original_weights):
    tmp = tmp_path_factory.mktemp("defences")
    proc = run_suite(
        tmp, torch_home, "--metric", "cnniqa-live", "--attack", "ifgsm", "--defence", "none,jpeg(q=30),quantize",
        "--dataset", "msu5", "--image-size", "64", "--weights-dir", str(original_weights),
        "--results-dir", str(tmp / "results"), "--mlflow-uri", f"sqlite:///{tmp / 'mlflow.db'}",
    )  # fmt: skip
    return proc, tmp


def test_a_session_with_defences_scores_both_evaluations_and_the_csvs_give_the_same_scores(
    defended_session, capsys
) -> None:
    proc, tmp = defended_session
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = {r["case_id"]: r for r in _csv(tmp / "results" / "summary.csv")}
    assert set(summary) == {
        "ifgsm-cnniqa-live-msu5",
        *(f"ifgsm{m}-{d}+cnniqa-live-msu5" for m in ("", "-nonadaptive") for d in ("jpeg30", "quant16")),
    }
    undefended = summary["ifgsm-cnniqa-live-msu5"]
    non_adaptive = summary["ifgsm-nonadaptive-jpeg30+cnniqa-live-msu5"]
    adaptive = summary["ifgsm-jpeg30+cnniqa-live-msu5"]
    assert (non_adaptive["defence"], non_adaptive["base_metric"], non_adaptive["defence_mode"]) == (
        "jpeg30",
        "cnniqa-live",
        "non-adaptive",
    )
    assert adaptive["defence_mode"] == "adaptive"
    # the non-adaptive attack made the undefended case's images: the same undefended gain, |c - a| / R
    per_image = read_msu_csv(tmp / "results" / "per_image" / "ifgsm_cnniqa-live_test.csv").rows
    expected = np.mean([abs(r["attacked"] - r["clear"]) for r in per_image]) / 100.0
    assert float(non_adaptive["nonpurified_abs_gain"]) == pytest.approx(expected, rel=1e-5)
    assert float(undefended["psnr"]) == pytest.approx(float(non_adaptive["psnr"]))
    for case in (adaptive, non_adaptive):
        assert float(case["robust_abs_gain"]) >= 0
        assert -1 <= float(case["clean_consistency"]) <= 1
    # `score` reads the MSU CSVs back and gives the summary's defence scores
    files = sorted((tmp / "results" / "per_image").glob("*jpeg30*_test.csv"))
    assert cli(["score", *map(str, files), "--format", "json"]) == 0
    import json

    printed = json.loads(capsys.readouterr().out)
    by_file = {r["file"]: r for r in printed[-1]["defences"]}
    got = by_file["ifgsm-nonadaptive_jpeg30+cnniqa-live_test.csv"]
    assert got["robust_abs_gain"] == pytest.approx(float(non_adaptive["robust_abs_gain"]), rel=1e-6)
    assert got["similarity"] == pytest.approx(float(non_adaptive["similarity"]), rel=1e-6)


def test_the_session_writes_the_defence_table_report_section_and_defence_leaderboard(defended_session, capsys) -> None:
    proc, tmp = defended_session
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "defences: " in proc.stdout
    table = _csv(tmp / "results" / "defences.csv")
    assert {(r["metric"], r["defence"], r["attack"]) for r in table} == {
        ("cnniqa-live", "jpeg30", "ifgsm"),
        ("cnniqa-live", "quant16", "ifgsm"),
    }
    summary = {r["case_id"]: r for r in _csv(tmp / "results" / "summary.csv")}
    jpeg = next(r for r in table if r["defence"] == "jpeg30")
    assert float(jpeg["adaptive_robust_abs_gain"]) == pytest.approx(
        float(summary["ifgsm-jpeg30+cnniqa-live-msu5"]["robust_abs_gain"])
    )
    assert float(jpeg["nonadaptive_robust_abs_gain"]) == pytest.approx(
        float(summary["ifgsm-nonadaptive-jpeg30+cnniqa-live-msu5"]["robust_abs_gain"])
    )
    page = (tmp / "results" / "report" / "index.html").read_text()
    assert '<section id="defences">' in page
    assert "jpeg30" in page
    # the defence leaderboard from the MLflow store: the same numbers, ranked by the adaptive robust gain
    out = tmp / "board"
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert cli(["leaderboard", "--defences", "--tracking-uri", uri, "--out", str(out), "--format", "json"]) == 0
    import json

    board = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in board] == [1, 2]
    gains = [r["adaptive_robust_abs_gain"] for r in board]
    assert gains == sorted(gains)
    by_defence = {r["defence"]: r for r in board}
    assert by_defence["jpeg30"]["adaptive_robust_abs_gain"] == pytest.approx(float(jpeg["adaptive_robust_abs_gain"]))
    assert (out / "defences_leaderboard.png").stat().st_size > 5000
    # compare shows the defence scores too
    assert cli(["compare", "latest", "latest", "--tracking-uri", uri, "--out", str(tmp / "cmp")]) == 0
    assert "robust_abs_gain" in capsys.readouterr().out


def test_the_differentiable_jpeg_has_a_real_gradient_and_stays_close_to_libjpeg(msu_test_images: Path) -> None:
    from iqa_robustness.data.decode import load_image

    image = load_image(sorted(msu_test_images.iterdir())[0])[None, :, :96, :96].contiguous()
    diff, coded = parse_defence("diffjpeg(q=50)"), parse_defence("jpeg(q=50)")
    assert diff.differentiable
    x = image.clone().requires_grad_(True)
    out = diff.transform(x, None)
    out.mean().backward()
    assert float(x.grad.abs().sum()) > 0
    assert float((out.detach() - coded.transform(image, None)).abs().mean()) < 0.02  # a photo: close to libjpeg
