"""Speed machinery: `iqa-robustness bench`, out-of-memory splitting, mixed precision and channels-last."""

from __future__ import annotations

import csv

import pytest
import torch

from iqa_robustness.bench import (
    BenchConfig,
    bench_images,
    forward_throughput,
    per_image,
    precision_difference,
    run_bench,
)
from iqa_robustness.cli.main import main
from iqa_robustness.metrics import create_metric
from iqa_robustness.runner.config import SuiteConfig
from iqa_robustness.runner.resources import call_in_chunks
from iqa_robustness.runner.suite import Suite


@pytest.fixture(scope="module")
def cnniqa():
    return create_metric("cnniqa", device="cpu", weights="random")


@pytest.mark.pyiqa
def test_bench_measures_every_task_with_a_positive_time(cnniqa):
    config = BenchConfig(
        batch_size=2,
        image_size=48,
        attacks=("fgsm", "ifgsm"),
        universal=("uap",),
        repeats=1,
        warmup=0,
        reference_images=1,
        train_steps=1,
    )
    rows = {row.task: row for row in run_bench(cnniqa, config)}
    assert list(rows) == ["floor", "floor:batch1", "fgsm", "ifgsm", "train:uap", "evaluation"]
    for row in rows.values():
        assert row.seconds_per_image > 0
        assert row.reference_seconds_per_image > 0
    assert rows["ifgsm"].iterations == 10
    assert rows["floor"].efficiency == pytest.approx(1.0)
    # efficiency is iterations x floor / attack time (timings themselves are the bench's output, not asserted)
    ifgsm, floor = rows["ifgsm"], rows["floor"].seconds_per_image
    assert ifgsm.efficiency == pytest.approx(10 * floor / ifgsm.seconds_per_image)


@pytest.mark.pyiqa
def test_bench_times_black_box_attacks_against_the_fastest_forward_pass(cnniqa):
    config = BenchConfig(
        batch_size=3, image_size=48, attacks=("square", "onepixel"), universal=(), repeats=1, warmup=0, queries=30
    )
    rows = {row.task: row for row in run_bench(cnniqa, config)}
    assert list(rows) == ["floor", "floor:batch1", "forward", "square", "onepixel", "evaluation"]
    forward = rows["forward"]
    # the fastest forward pass per image over batches 1, 2, 4, ... (here up to 64), never slower than batch 1
    assert 0 < forward.seconds_per_image <= forward.reference_seconds_per_image
    square = rows["square"]
    assert square.iterations == 30  # queries made per image
    assert 15 <= rows["onepixel"].iterations <= 30  # its schedule: generations of 15 individuals for 3 pixels
    assert square.floor_seconds_per_image == forward.seconds_per_image
    assert square.efficiency == pytest.approx(30 * forward.seconds_per_image / square.seconds_per_image)


@pytest.mark.pyiqa
def test_forward_throughput_times_whole_windows_of_calls_at_each_batch(cnniqa):
    images = bench_images(3, 40, torch.device("cpu"))
    totals = forward_throughput(cnniqa, images, batches=(1, 2, 4), window=0.02, rounds=2)
    assert list(totals) == [1, 2, 4]
    for size, (seconds, scored) in totals.items():
        # whole calls of the batch, at least two per window, in every round
        assert scored % size == 0
        assert scored >= 2 * 2 * size
        assert seconds >= 2 * 0.02
    pooled = {size: (s + s, n + n) for size, (s, n) in totals.items()}
    assert per_image(pooled) == pytest.approx(per_image(totals))
    assert per_image(totals)[4] == pytest.approx(totals[4][0] / totals[4][1])


@pytest.mark.pyiqa
def test_bench_refuses_a_universal_attack_among_image_attacks(cnniqa):
    with pytest.raises(ValueError, match="--universal"):
        run_bench(cnniqa, BenchConfig(batch_size=1, image_size=32, attacks=("uap",), universal=(), repeats=1))


@pytest.mark.pyiqa
def test_bench_command_prints_a_table_and_writes_csv(capsys, tmp_path):
    out_csv = tmp_path / "bench.csv"
    code = main(
        [
            "bench",
            "--metric",
            "cnniqa",
            "--random-weights",
            "--device",
            "cpu",
            "--image-size",
            "40",
            "--batch-size",
            "2",
            "--attacks",
            "fgsm,square",
            "--queries",
            "12",
            "--universal",
            "",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--reference-images",
            "1",
            "--output",
            str(out_csv),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "efficiency" in out
    assert "fgsm" in out
    # the query batch the black-box attack's oracle measured, for its candidates' shape
    assert "query batch the black-box attacks chose" in out
    assert "3x40x40: " in out
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["task"] for r in rows] == ["floor", "floor:batch1", "forward", "fgsm", "square", "evaluation"]
    assert {r["metric"] for r in rows} == {"cnniqa"}
    assert float(rows[3]["s_per_image"]) > 0


def test_bench_command_rejects_a_bad_batch_size(capsys):
    code = main(["bench", "--metric", "cnniqa", "--random-weights", "--batch-size", "0"])
    assert code == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.pyiqa
def test_channels_last_keeps_scores_and_bf16_changes_them_a_little(cnniqa):
    batch = bench_images(2, 48, torch.device("cpu"), seed=1)
    assert precision_difference(cnniqa, batch, channels_last=True) < 1e-5
    change = precision_difference(cnniqa, batch, autocast=torch.bfloat16)
    assert 0 < change < 0.05
    assert cnniqa.autocast_dtype is None  # options restored
    assert not cnniqa.channels_last


def test_call_in_chunks_matches_one_call():
    batch = torch.arange(10.0).view(10, 1)
    assert torch.equal(call_in_chunks(lambda x: x * 2, batch, 3), batch * 2)


def test_out_of_memory_halves_the_batch_and_keeps_the_smaller_size():
    suite = Suite(SuiteConfig(device="cpu"))
    seen: list[int] = []

    def needs_small_batches(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated by a batch-size limit)")
        return x + 1

    batch = torch.zeros(8, 1)
    assert torch.equal(suite.run_batched("m", needs_small_batches, batch), batch + 1)
    assert seen == [8, 4, 2, 2, 2, 2]
    seen.clear()
    suite.run_batched("m", needs_small_batches, batch)
    assert seen == [2, 2, 2, 2]  # remembered for the metric


def test_out_of_memory_at_one_image_is_raised():
    suite = Suite(SuiteConfig(device="cpu"))

    def never_fits(x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        suite.run_batched("m", never_fits, torch.zeros(4, 1))


def test_auto_batch_size_depends_on_the_device():
    assert Suite(SuiteConfig(device="cpu")).batch_size == 8
    assert Suite(SuiteConfig(device="cpu", batch_size=3)).batch_size == 3


def test_projection_scales_by_pixels_epochs_and_cases():
    from iqa_robustness.bench import BenchRow, TestSet, project_hours

    rows = [
        BenchRow("floor", 0.1, 0.2, 1, 0.1),
        BenchRow("ifgsm", 1.0, 3.0, 10, 0.1),
        BenchRow("train:uap", 0.5, 2.0, 1, 0.1),
        BenchRow("evaluation", 0.01, 0.04),
    ]
    sets = [TestSet("a", 100, 200, 200), TestSet("b", 10, 400, 400)]  # 100 + 10 x 4 = 140 images at 200 px
    hours = project_hours(rows, 200, test_sets=sets, train_images=50, train_sets=2, amplitudes=3, epochs={"uap": 4})
    universal = 4  # uap, cumulative-uap, generative-uap, cnn
    assert hours["image attacks"] == pytest.approx(140 * 1.0 / 3600)
    # every universal attack without its own row is charged at the uap rate, with its own epochs
    assert hours["universal training"] == pytest.approx((4 + 5 + 1 + 200) * 50 * 2 * 0.5 / 3600)
    assert hours["evaluation"] == pytest.approx((1 + universal * 2 * 3) * 140 * 0.01 / 3600)
    assert hours["total"] == pytest.approx(sum(v for k, v in hours.items() if k != "total"))
    reference = project_hours(rows, 200, test_sets=sets, train_images=50, epochs={"uap": 4}, reference=True)
    assert reference["image attacks"] == pytest.approx(3 * hours["image attacks"])


@pytest.mark.pyiqa
def test_research_code_gradients_give_the_same_gradient_and_restore_frozen_parameters(cnniqa):
    from iqa_robustness.attacks.base import loss_grad, research_code_gradients

    x = bench_images(2, 40, torch.device("cpu"), seed=2)
    exact = loss_grad(cnniqa, x)
    with research_code_gradients(cnniqa):
        assert all(p.requires_grad for p in cnniqa.parameters())
        slow = loss_grad(cnniqa, x)
        assert any(p.grad is not None for p in cnniqa.parameters())  # backward filled the parameters too
    torch.testing.assert_close(slow, exact)
    assert not any(p.requires_grad for p in cnniqa.parameters())
    assert all(p.grad is None for p in cnniqa.parameters())
