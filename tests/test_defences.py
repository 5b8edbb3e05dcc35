"""Defences (docs/methodology.md, "Defences"): specs, labels, BPDA and EoT, the defence scores, the grid, a session."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_plugin import run_suite

from conftest import NO_PYIQA
from iqa_robustness.cli.main import main as cli
from iqa_robustness.defences import (
    DefenceSpecError,
    DefendedMetric,
    ImageDraws,
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
    """pyiqa's CNNIQA architecture with random weights: differentiable, needs no download (skips without pyiqa)."""
    if importlib.util.find_spec("pyiqa") is None:
        pytest.skip(NO_PYIQA)
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
        ("jpeg(quality=30)", r"no parameter 'quality' \(its parameters: q=50, float32=false\)"),
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


def pixels(*shape: int, seed: int = 1) -> torch.Tensor:
    """A random 8-bit image batch (values k / 255): the 8-bit round trip leaves it as it is."""
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).float() / 255


@pytest.mark.parametrize("spec", ["jpeg(q=30)", "quantize(levels=5)"])
def test_bpda_passes_the_gradient_straight_through_a_non_differentiable_defence(spec: str) -> None:
    defence = parse_defence(spec)
    metric = create_metric(register_defended(defence, random_cnniqa()), weights="random")
    assert isinstance(metric, DefendedMetric)
    base = metric.base
    x = pixels(2, 3, 64, 64).requires_grad_(True)
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


def test_the_defence_receives_the_8_bit_image_unless_float32_and_the_gradient_passes_the_rounding() -> None:
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    eight_bit = torch.round(x.detach() * 255) / 255
    assert not torch.equal(eight_bit, x.detach())
    rounded = create_metric(register_defended(parse_defence("flip"), random_cnniqa()), weights="random")
    exact = create_metric(register_defended(parse_defence("flip(float32=true)"), random_cnniqa()), weights="random")
    assert (rounded.name, exact.name) == ("flip+cnniqa", "flip-float32+cnniqa")
    exact.base.load_state_dict(rounded.base.state_dict())
    assert torch.equal(rounded.defended_images(x), torch.flip(eight_bit, dims=(-2, -1)))  # bit for bit
    assert torch.equal(exact.defended_images(x), torch.flip(x.detach(), dims=(-2, -1)))
    with torch.no_grad():
        torch.testing.assert_close(rounded(x), exact(eight_bit))
        assert not torch.allclose(rounded(x), exact(x))
    rounded(x).sum().backward()  # straight through the rounding: S's gradient at the rounded image
    at = eight_bit.clone().requires_grad_(True)
    exact(at).sum().backward()
    torch.testing.assert_close(x.grad, at.grad)


# The source benchmark's defences (metrics/defences/<name>/run.py of msu-video-group/adversarial-defenses-for-iqa),
# as the torch and torchvision calls they make on a batch in [0, 1].
def _source_resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    from torchvision import transforms

    new_size = torch.tensor(x.shape[-2:]) * scale
    return transforms.Resize((int(new_size[0]), int(new_size[1])))(x)


def _source_median(x: torch.Tensor, k: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(x, (k // 2,) * 4, mode="reflect")
    windows = padded.unfold(2, k, 1).unfold(3, k, 1).reshape(x.shape[0], x.shape[1], -1, k * k)
    return torch.median(windows, dim=-1).values.reshape(x.shape)


def _source_jpeg(x: torch.Tensor, q: int) -> torch.Tensor:
    from torchvision.io import decode_jpeg, encode_jpeg

    return torch.cat([decode_jpeg(encode_jpeg((i * 255).type(torch.uint8), q))[None] for i in x]) / 255


def _source_blur(k: int, sigma: float):
    from torchvision.transforms import GaussianBlur

    return GaussianBlur(k, sigma)


SOURCE = {
    "jpeg(q=10)": lambda x: _source_jpeg(x, 10),
    "jpeg(q=70)": lambda x: _source_jpeg(x, 70),
    "gaussian-blur(k=3)": lambda x: _source_blur(3, 0.3 * ((3 - 1) * 0.5 - 1) + 0.8)(x),
    "gaussian-blur(k=9)": lambda x: _source_blur(9, 0.3 * ((9 - 1) * 0.5 - 1) + 0.8)(x),
    "median-blur(k=5)": lambda x: _source_median(x, 5),
    "unsharp(k=5)": lambda x: torch.clip(x + (x - _source_blur(5, 1.0)(x)) * 1, 0, 1),
    "quantize(levels=5)": lambda x: torch.round(x * 4) / 4,
    "flip": lambda x: torch.flip(x, [2, 3]),
    "resize(scale=0.1)": lambda x: _source_resize(x, 0.1),  # 299 * 0.1 = 29.9: 29 rows, not 30
    "resize(scale=0.75)": lambda x: _source_resize(x, 0.75),
    "upscale(scale=0.1)": lambda x: torch.nn.Upsample(size=x.shape[-2:], mode="bilinear")(_source_resize(x, 0.1)),
}


@pytest.mark.parametrize("spec", sorted(SOURCE))
def test_a_deterministic_defence_equals_the_source_benchmarks_pixel_for_pixel(msu_test_images: Path, spec: str) -> None:
    from iqa_robustness.data.decode import load_image

    photos = torch.stack([load_image(p) for p in sorted(msu_test_images.iterdir())[:2]])  # 299 x 299, 8 bits
    got = parse_defence(spec).transform(photos, None)
    assert torch.equal(got, SOURCE[spec](photos))


def test_upscale_goes_back_to_the_input_size_which_is_the_sources_fixed_384_by_512_on_koniq_images() -> None:
    koniq = pixels(1, 3, 384, 512)
    source = torch.nn.Upsample(size=(384, 512), mode="bilinear")(_source_resize(koniq, 0.25))
    assert torch.equal(parse_defence("upscale(scale=0.25)").transform(koniq, None), source)
    assert parse_defence("upscale").transform(pixels(1, 3, 299, 301), None).shape[-2:] == (299, 301)


@pytest.mark.parametrize("spec", ["random-crop(side=48)", "random-rotate(angle=15)"])
def test_a_random_defence_draws_and_transforms_as_the_sources_torchvision_transform_from_the_same_state(
    msu_test_images: Path, spec: str
) -> None:
    from torchvision import transforms

    from iqa_robustness.data.decode import load_image

    photo = load_image(sorted(msu_test_images.iterdir())[0])[None]
    source = transforms.RandomCrop(48) if spec.startswith("random-crop") else transforms.RandomRotation(15)
    defence = parse_defence(spec)
    for seed in range(3):
        torch.manual_seed(seed)  # the source seeds torch's global generator before each batch
        expected = source(photo)
        draw = defence.draw(photo[0], torch.Generator().manual_seed(seed))
        assert torch.equal(defence.apply(photo[0], draw)[None], expected)


def random_defended(spec: str, eot: int = 3) -> DefendedMetric:
    metric = create_metric(register_defended(parse_defence(spec), random_cnniqa(), eot=eot), weights="random")
    assert isinstance(metric, DefendedMetric)
    return metric


def test_four_images_get_four_draws_and_each_image_its_own_draw_in_any_batch_and_session() -> None:
    crop, rotate = random_defended("random-crop(side=16,flip=true)"), random_defended("random-rotate(angle=15)")
    batch = pixels(4, 3, 40, 40)
    names = ("a.png", "b.png", "c.png", "d.png")
    with ImageDraws(names, seed=0).bound():
        crops, angles = crop.scoring_draws(batch), rotate.scoring_draws(batch)
        defended = crop.defended_images(batch)
        with torch.no_grad():
            scores = rotate(batch)
    assert len({(d["top"], d["left"]) for d in crops}) == 4  # four positions
    assert len({d["angle"] for d in angles}) == 4
    assert all(abs(d["angle"]) <= 15 for d in angles)
    assert max(abs(d["angle"]) for d in angles) > 1  # not one near-zero angle for all
    for i, draw in enumerate(crops):  # what is scored is what the rows record
        expected = batch[i, :, draw["top"] : draw["top"] + 16, draw["left"] : draw["left"] + 16]
        assert torch.equal(defended[i], torch.flip(expected, dims=(-1,)) if draw["flip"] else expected)
    # the same image: the same draw in another binding (another session), alone, or in another order
    with ImageDraws(("c.png",), seed=0).bound():
        assert crop.scoring_draws(batch[2:3]) == crops[2:3]
        with torch.no_grad():
            torch.testing.assert_close(rotate(batch[2:3]), scores[2:3])
    with ImageDraws(names[::-1], seed=0).bound():
        assert rotate.scoring_draws(batch.flip(0)) == angles[::-1]
    # the name, not the pixels, decides: an attacked copy of an image is scored with its clean draw
    with ImageDraws(("a.png", "a.png"), seed=0).bound():
        assert crop.scoring_draws(batch[1:3]) == [crops[0], crops[0]]
    with ImageDraws(names, seed=1).bound():  # another session seed, other draws
        assert rotate.scoring_draws(batch) != angles


def test_scoring_more_rows_than_the_bound_images_is_refused() -> None:
    rotate = random_defended("random-rotate")
    with ImageDraws(("a.png",)).bound(), pytest.raises(RuntimeError, match="bind ImageDraws"):
        rotate.defended_images(pixels(2, 3, 32, 32))


def test_eot_scores_the_mean_of_n_fresh_draws_per_image_and_its_gradient_is_their_mean_gradient() -> None:
    n = 5
    metric = random_defended("random-noise(sigma=0.05)", eot=n)
    x = pixels(2, 3, 48, 48, seed=2).requires_grad_(True)
    names = ("a.png", "b.png")
    with ImageDraws(names, seed=7, attack=True).bound():
        score = metric(x)
        score.sum().backward()
        second = metric(x.detach())  # the next step: fresh draws again

    streams = ImageDraws(names, seed=7, attack=True)  # the same streams, drawn by hand
    gens = [streams.generator(name, "eot") for name in names]
    values, grads = [], []
    for _ in range(n):
        xi = x.detach().requires_grad_(True)
        drawn = [metric.defence.draw(image, g) for image, g in zip(xi, gens, strict=True)]
        s = metric.base(metric.defence.apply_draws(xi, drawn))
        s.sum().backward()
        values.append(s.detach())
        grads.append(xi.grad)
    torch.testing.assert_close(score.detach(), torch.stack(values).mean(0))
    torch.testing.assert_close(x.grad, torch.stack(grads).mean(0))
    assert not torch.allclose(values[0], values[1])  # the draws differ
    assert not torch.allclose(second, score.detach())


def test_a_query_attack_sees_a_fresh_draw_per_query_from_the_queried_images_own_stream() -> None:
    from iqa_robustness.attacks.queries import Oracle

    metric = random_defended("random-rotate(angle=30)")
    x = pixels(2, 3, 48, 48, seed=3)
    candidates = torch.cat([x[1:2]] * 3 + [x[0:1]])  # three queries of image 1, one of image 0
    with ImageDraws(("a.png", "b.png"), seed=0, attack=True).bound():
        q = Oracle(metric, 2, budget=10)(candidates, owners=[1, 1, 1, 0])
    assert len(set(q[:3].tolist())) == 3  # the same image queried three times: three draws
    with ImageDraws(("b.png",), seed=0, attack=True).bound():  # image b alone: the same stream
        alone = Oracle(metric, 1, budget=10)(x[1:2].expand(3, -1, -1, -1), owners=[0, 0, 0])
    torch.testing.assert_close(alone, q[:3])
    with ImageDraws(("a.png", "b.png"), seed=0).bound():  # scoring draws none of those
        scored = metric.quality(x)
    assert float(scored[1]) not in q[:3].tolist()


def test_a_random_defence_is_queried_one_iteration_at_a_time_a_deterministic_one_ahead() -> None:
    from iqa_robustness.attacks.queries import Lookahead, Oracle
    from iqa_robustness.attacks.query_batch import query_batch

    rotate = random_defended("random-rotate(angle=30)")
    jpeg = create_metric(register_defended(parse_defence("jpeg(q=50)"), random_cnniqa()), weights="random")
    assert rotate.random_scores  # a query scored ahead and dropped would move the image's draw stream on
    assert not jpeg.random_scores
    plans = {}
    for metric in (rotate, jpeg):
        query_batch(metric, (3, 32, 32)).limit = 16  # the batch its calls settled on
        oracle = Oracle(metric, 2, budget=1000)
        oracle.used = [400, 400]  # 400 iterations with nothing kept: the lookahead's depth may grow
        plans[metric.name] = Lookahead(oracle, torch.Size((3, 32, 32))).plan()
    assert plans[rotate.name] == {0: 1, 1: 1}
    assert plans[jpeg.name] == {0: 8, 1: 8}  # the oracle's batch of 16 shared between the two images


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


@pytest.mark.parametrize("q", [10, 50, 90])
def test_the_differentiable_jpeg_is_a_real_jpeg_forward_with_the_differentiable_codecs_gradient(
    msu_test_images: Path, q: int
) -> None:
    import io

    from kornia.enhance import jpeg_codec_differentiable
    from PIL import Image

    def pil_jpeg(array: np.ndarray) -> torch.Tensor:  # libjpeg through Pillow: the standard tables, 4:2:0
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=q, subsampling="4:2:0")
        return torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).permute(2, 0, 1)[None] / 255.0

    photo = np.array(Image.open(sorted(msu_test_images.iterdir())[0]).convert("RGB"))  # 299 x 299: no multiple of 16
    x = (torch.from_numpy(photo).permute(2, 0, 1)[None] / 255.0).requires_grad_(True)
    out = parse_defence(f"diffjpeg(q={q})").transform(x, None)
    assert float((out.detach() - pil_jpeg(photo)).abs().max()) <= 1 / 255
    # a float image is coded as its 8-bit rounding
    noisy = (x.detach() + torch.rand(x.shape, generator=torch.Generator().manual_seed(q)) / 255).clamp(0, 1)
    rounded = torch.round(noisy * 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert float((parse_defence(f"diffjpeg(q={q})").transform(noisy, None) - pil_jpeg(rounded)).abs().max()) <= 1 / 255
    # the gradient is the differentiable codec's (a surrogate: its forward is no JPEG)
    weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(0))
    (out * weights).sum().backward()
    y = x.detach().requires_grad_(True)
    (jpeg_codec_differentiable(y, torch.tensor([float(q)])) * weights).sum().backward()
    assert float(x.grad.abs().sum()) > 0
    torch.testing.assert_close(x.grad, y.grad)


@pytest.fixture(scope="module")
def random_sessions(tmp_path_factory, torch_home, original_weights):
    """Two sessions of random defences on the five MSU images: one batch of five, then batches of two."""
    out = []
    for batch_size in ("5", "2"):
        tmp = tmp_path_factory.mktemp(f"random-defences-{batch_size}")
        proc = run_suite(
            tmp, torch_home, "--metric", "cnniqa-live", "--attack", "ifgsm", "--dataset", "msu5",
            "--defence", "random-rotate,random-crop(side=48)", "--image-size", "64", "--batch-size", batch_size,
            "--weights-dir", str(original_weights), "--results-dir", str(tmp / "results"), "--no-mlflow",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out.append(tmp / "results" / "per_image")
    return out


@pytest.mark.parametrize(("defence", "columns"), [("rotate15", ["draw_angle"]), ("crop48", ["draw_top", "draw_left"])])
def test_each_image_records_its_own_draw_and_a_second_session_draws_the_same(random_sessions, defence, columns):
    first, second = random_sessions
    draws = {}
    for folder in (first, second):
        for attack in ("ifgsm", "ifgsm-nonadaptive"):
            rows = read_msu_csv(folder / f"{attack}_{defence}+cnniqa-live_test.csv").rows
            draws[folder, attack] = {r["image_name"]: tuple(r[c] for c in columns) for r in rows}
    seen = draws[first, "ifgsm"]
    assert len(seen) == 5
    assert len(set(seen.values())) == 5  # five images, five draws
    if defence.startswith("rotate"):
        assert all(abs(a) <= 15 for (a,) in seen.values())
        assert max(abs(a) for (a,) in seen.values()) > 1
    # the other evaluation of the same images, and the second session in other batches: the same draws
    assert all(d == seen for d in draws.values())
