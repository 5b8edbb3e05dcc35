"""Full-reference metrics: S(reference, distorted) attacked through the distorted input only.

docs/methodology.md, "Full-reference metrics and JPEG inputs" (the MSU benchmark's code): the distorted
input is a JPEG copy of the clean image, ``clear = S(x0, jpeg)``, the attack perturbs the JPEG with
the reference fixed, ``attacked = S(x0, adv)``, rows are named ``<image>-jpeg<q>`` and PSNR / SSIM /
MSE compare the JPEG with its attacked copy.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from test_plugin import run_suite

from iqa_robustness.attacks import create_attack
from iqa_robustness.metrics import create_metric, get_spec
from iqa_robustness.metrics.base import FullReferenceMetric, Metric, MetricSpec


class NegativeMSE(FullReferenceMetric):
    """-MSE(reference, distorted): a full-reference metric whose optimum is the reference itself."""

    spec = MetricSpec(name="negative-mse", kind="fr", bounds=(-1.0, 0.0), description="minus the mean squared error")

    def compare(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return -(distorted - reference).square().mean(dim=(1, 2, 3))


class Brightness(Metric):
    """Mean pixel value: a differentiable no-reference metric."""

    spec = MetricSpec(name="brightness", bounds=(0.0, 1.0), description="mean pixel value")

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def _pair(seed: int = 0, n: int = 2, side: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    reference = torch.rand(n, 3, side, side, generator=g)
    return (reference + 0.1 * torch.randn(reference.shape, generator=g)).clamp(0, 1), reference


def test_a_full_reference_metric_needs_its_reference_bound() -> None:
    metric = NegativeMSE()
    distorted, reference = _pair()
    with pytest.raises(RuntimeError, match=r"bind the reference images first"):
        metric(distorted)
    with pytest.raises(ValueError, match="does not match the distorted batch"), metric.reference(reference[:1]):
        metric(distorted)
    with metric.reference(reference):
        bound = metric(distorted)
    assert torch.allclose(bound, metric.score_pair(distorted, reference))
    assert metric._reference is None  # the binding ends with the block


def test_a_no_reference_metric_refuses_a_reference() -> None:
    with pytest.raises(TypeError, match="no-reference metric"), Brightness().reference(torch.zeros(1, 3, 8, 8)):
        pass


def test_image_attacks_move_the_distorted_input_and_leave_the_reference_alone() -> None:
    metric = NegativeMSE()
    distorted, reference = _pair()
    kept = reference.clone()
    for name in ("fgsm", "ifgsm", "mifgsm", "korhonen", "madc"):
        with metric.reference(reference):
            adversarial = create_attack(name)(metric, distorted)
            before, after = metric(distorted), metric(adversarial)
        assert torch.all(after > before), name
        assert torch.equal(reference, kept), name


@pytest.mark.pyiqa
def test_pyiqa_full_reference_scores_are_pyiqa_s_own() -> None:
    import pyiqa

    distorted, reference = _pair(seed=1, side=64)
    for name in ("psnr", "ssim", "fsim", "gmsd"):
        ours = create_metric(name, device="cpu")
        with torch.no_grad():
            expected = pyiqa.create_metric(name, device="cpu")(distorted, reference).reshape(-1).float()
            assert torch.allclose(ours.score_pair(distorted, reference), expected, rtol=1e-5, atol=1e-6), name


def test_the_classical_full_reference_metrics_declare_their_facts() -> None:
    assert get_spec("ssim").kind == "fr"
    assert not get_spec("psnr").lower_better
    assert get_spec("lpips").lower_better
    assert get_spec("ms_ssim").min_side == 161
    assert get_spec("lpips").weight_files == ("LPIPS_v0.1_alex-df73285e.pth", "alexnet-owt-7be5be79.pth")
    assert not get_spec("deepdc").differentiable


@pytest.mark.pyiqa
def test_ms_ssim_takes_its_minimum_side_and_refuses_one_pixel_less() -> None:
    metric = create_metric("ms_ssim", device="cpu")
    side = get_spec("ms_ssim").min_side
    distorted, reference = _pair(side=side)
    with torch.no_grad():
        assert torch.isfinite(metric.score_pair(distorted, reference)).all()
    smaller, reference = _pair(side=side - 1)
    with pytest.raises(ValueError, match=f"at least {side} px"):
        metric.score_pair(smaller, reference)


def test_universal_training_on_a_full_reference_metric_steps_once_per_distortion() -> None:
    metric = NegativeMSE()
    seen: list[tuple[int, ...]] = []
    compare = metric.compare

    def spy(distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(reference.shape))
        return compare(distorted, reference)

    metric.compare = spy  # type: ignore[method-assign]
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    distortions = [("half", lambda y: y * 0.5), ("dark", lambda y: y * 0.8)]
    attack = create_attack("uap")
    perturbation = attack.fit(metric, images, steps=3, distortions=distortions)
    assert len(perturbation.meta["loss_curve"]) == 6  # 3 draws x 2 distortions
    assert perturbation.meta["distortions"] == ["half", "dark"]
    assert seen == [(4, 3, 256, 256)] * 6  # the clean training batch was the reference of every step
    with pytest.raises(ValueError, match="give distortions"):
        attack.fit(metric, images, steps=1)
    with pytest.raises(ValueError, match="without distortions"):
        attack.fit(Brightness(), images, steps=1, distortions=distortions)


def _rows(results: Path, attack: str, metric: str) -> list[dict[str, str]]:
    with (results / "per_image" / f"{attack}_{metric}_test.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.pyiqa
def test_the_fr_grid_attacks_jpeg_copies_and_raises_ssim_on_every_image(tmp_path, torch_home, shared_dir) -> None:
    proc = run_suite(
        tmp_path,
        torch_home,
        "--metric", "ssim,psnr,lpips",
        "--attack", "ifgsm,korhonen,uap",
        "--dataset", "msu5",
        "--jpeg-quality", "30,70",
        "--image-size", "96",
        "--random-weights",
        "--uap-steps", "4",
        "--amplitude", "0.8",
        "--train-dataset", "msu5",
        "--no-mlflow",
        "-n", "2",
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "9 passed" in proc.stdout
    results = tmp_path / "results"
    for attack in ("ifgsm", "korhonen"):
        rows = _rows(results, attack, "ssim")
        assert len(rows) == 10
        assert {r["image_name"].rsplit("-", 1)[1] for r in rows} == {"jpeg30", "jpeg70"}
        for row in rows:
            assert float(row["attacked"]) > float(row["clear"]), (attack, row)
    # the JPEG at quality 30 is further from the reference than at 70: its clean SSIM is lower
    clean = {r["image_name"]: float(r["clear"]) for r in _rows(results, "ifgsm", "ssim")}
    for name, value in clean.items():
        if name.endswith("-jpeg30"):
            assert value < clean[name.replace("-jpeg30", "-jpeg70")], name
    # I-FGSM keeps its L-inf budget around the JPEG: MSE <= (10/255)^2
    for row in _rows(results, "ifgsm", "psnr"):
        assert float(row["mse"]) <= (10 / 255) ** 2 + 1e-7
    # a universal perturbation (unclamped) changes every JPEG copy by the same amount: the distortion
    # columns compare the JPEG with its attacked copy, not the reference with it
    mse = {float(r["mse"]) for r in _rows(results, "uap", "psnr")}
    assert max(mse) - min(mse) < 1e-9, mse
    assert len(_rows(results, "ifgsm", "lpips")) == 10


@pytest.mark.pyiqa
def test_bench_times_a_full_reference_metric_with_a_reference_per_input() -> None:
    from iqa_robustness.bench import BenchConfig, run_bench

    config = BenchConfig(
        batch_size=2, image_size=32, attacks=("fgsm",), universal=("uap",), repeats=1, warmup=0,
        reference_images=1, train_steps=1,
    )  # fmt: skip
    rows = run_bench(create_metric("ssim", device="cpu"), config)
    assert [row.task for row in rows] == ["floor", "floor:batch1", "fgsm", "train:uap", "evaluation"]
    assert all(row.seconds_per_image > 0 for row in rows)
