"""VSFA and MDTVSFA, video clips on disk, and attacks on clips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet50
from video_files import write_video

from iqa_robustness.attacks import create_attack, list_attacks
from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.data.video import iter_clip_chunks, read_clip, vimeo_clip_dirs
from iqa_robustness.metrics import MissingWeightsError, create_metric, get_spec, list_metrics
from iqa_robustness.metrics._video_features import RESNET50_FILE
from iqa_robustness.metrics.frames import as_image_metric
from iqa_robustness.metrics.mdtvsfa import MDTVSFAHead, load_mdtvsfa_head
from iqa_robustness.metrics.vsfa import VSFAHead, load_vsfa_head
from iqa_robustness.runner.clips import FlickerMeter, attack_clip, score_chunks, temporal_flicker, universal_clip

VIDEO_METRICS = ("vsfa", "mdtvsfa")
T, SIDE = 16, 64


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """ResNet-50 on 64x64 frames gains little from a second thread and loses much on shared cores (xdist)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def random_metrics() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: create_metric(name, weights="random") for name in VIDEO_METRICS}


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    """16 frames of a smooth pattern drifting right, with a little noise."""
    gen = torch.Generator().manual_seed(1)
    y, x = torch.meshgrid(torch.linspace(0, 1, SIDE), torch.linspace(0, 1, SIDE), indexing="ij")
    frames = []
    for t in range(T):
        base = torch.stack([x + 0.03 * t, y, (x + y) / 2]).remainder(1.0)
        frames.append((0.8 * base + 0.2 * torch.rand(3, SIDE, SIDE, generator=gen)).clamp(0, 1))
    return torch.stack(frames)


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IQA_ROBUSTNESS_OFFLINE", "1")
    monkeypatch.delenv("IQA_ROBUSTNESS_WEIGHTS", raising=False)


# --------------------------------------------------------------------------- released heads


def test_released_vsfa_file_loads_strictly_into_the_vsfa_head(original_weights: Path) -> None:
    path = original_weights / "VSFA.pt"
    head = load_vsfa_head(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(head.state_dict()) == set(state)
    assert all(torch.equal(head.state_dict()[k], v) for k, v in state.items())


def test_released_mdtvsfa_file_loads_strictly_into_the_mdtvsfa_head(original_weights: Path) -> None:
    path = original_weights / "MDTVSFA.pt"
    head = load_mdtvsfa_head(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(head.state_dict()) == set(state)
    assert all(torch.equal(head.state_dict()[k], v) for k, v in state.items())


def test_a_head_refuses_the_other_metrics_file(original_weights: Path) -> None:
    with pytest.raises(RuntimeError, match="Missing key"):
        load_vsfa_head(original_weights / "MDTVSFA.pt")


def test_released_heads_map_the_same_features_to_plausible_scores(original_weights: Path) -> None:
    features = torch.rand(T, 4096, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        vsfa = load_vsfa_head(original_weights / "VSFA.pt")(features)
        mdtvsfa = load_mdtvsfa_head(original_weights / "MDTVSFA.pt")(features)
        konvid = load_mdtvsfa_head(original_weights / "MDTVSFA.pt", dataset="K")(features)
    assert vsfa.shape == mdtvsfa.shape == (1,)
    assert 0.0 < float(mdtvsfa) < 1.0  # the unified score is a sigmoid output
    assert float(konvid) > float(mdtvsfa)  # KoNViD-1k's MOS scale (1..5) lies above the unified one


def test_pretrained_build_takes_the_head_from_the_weights_folder(
    original_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch)
    shutil.copy2(original_weights / "VSFA.pt", tmp_path / "VSFA.pt")
    torch.save(resnet50(weights=None).state_dict(), tmp_path / RESNET50_FILE)  # a stand-in with the right keys
    metric = create_metric("vsfa", weights=tmp_path)
    assert not metric.is_random
    assert torch.equal(metric.head.q.bias, load_vsfa_head(original_weights / "VSFA.pt").q.bias)


def test_a_missing_backbone_file_is_a_missing_weights_error(
    original_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch)
    shutil.copy2(original_weights / "VSFA.pt", tmp_path / "VSFA.pt")
    with pytest.raises(MissingWeightsError, match=RESNET50_FILE):
        create_metric("vsfa", weights=tmp_path)


def test_a_missing_head_file_is_named_in_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    with pytest.raises(MissingWeightsError, match=r"MDTVSFA\.pt"):
        create_metric("mdtvsfa", weights=tmp_path)


# --------------------------------------------------------------------------- the metrics


def test_video_metrics_are_registered_as_higher_is_better_video_metrics() -> None:
    assert set(VIDEO_METRICS) <= set(list_metrics(kind="nr-video"))
    for name in VIDEO_METRICS:
        spec = get_spec(name)
        assert not spec.lower_better
        assert spec.differentiable
        assert RESNET50_FILE in spec.weight_files


def test_random_mode_builds_without_any_download(random_metrics: dict, torch_home: Path) -> None:
    assert all(m.is_random for m in random_metrics.values())
    assert isinstance(random_metrics["vsfa"].head, VSFAHead)
    assert isinstance(random_metrics["mdtvsfa"].head, MDTVSFAHead)
    assert not (torch_home / "hub" / "checkpoints" / RESNET50_FILE).exists()


@pytest.mark.parametrize("name", VIDEO_METRICS)
def test_a_clip_gets_one_score_and_a_finite_nonzero_gradient(
    name: str, random_metrics: dict, clip: torch.Tensor
) -> None:
    metric = random_metrics[name]
    x = clip.clone().requires_grad_(True)
    score = metric(x)
    (grad,) = torch.autograd.grad(metric.loss(x).sum(), x)
    assert score.shape == (1,)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    assert (grad.flatten(1).abs().sum(1) > 0).all(), "every frame receives gradient"


def test_chunked_and_checkpointed_scoring_equals_one_pass(random_metrics: dict, clip: torch.Tensor) -> None:
    metric = random_metrics["vsfa"]
    x = clip[:8]
    try:
        metric.chunk_size, metric.gradient_checkpointing = 8, False
        xa = x.clone().requires_grad_(True)
        whole = metric(xa)
        (grad_whole,) = torch.autograd.grad(whole.sum(), xa)
        metric.chunk_size, metric.gradient_checkpointing = 3, True
        xb = x.clone().requires_grad_(True)
        chunked = metric(xb)
        (grad_chunked,) = torch.autograd.grad(chunked.sum(), xb)
    finally:
        metric.chunk_size, metric.gradient_checkpointing = 16, None
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_chunked, grad_whole, rtol=1e-4, atol=1e-8)


def test_an_image_batch_is_scored_as_one_frame_clips(random_metrics: dict, clip: torch.Tensor) -> None:
    video_metric = random_metrics["vsfa"]
    image_metric = as_image_metric(video_metric)
    with torch.no_grad():
        batch = image_metric(clip[:3])
        alone = torch.cat([video_metric(clip[i : i + 1]) for i in range(3)])
    assert image_metric.spec.kind == "nr-image"
    assert batch.shape == (3,)
    torch.testing.assert_close(batch, alone)


# --------------------------------------------------------------------------- attacks on clips


@pytest.mark.skipif("ifgsm" not in list_attacks(), reason="attacks/ifgsm.py is not available")
def test_ifgsm_attacks_every_frame_against_the_clip_score(random_metrics: dict, clip: torch.Tensor) -> None:
    attack = create_attack("ifgsm", iters=2)
    adversarial, result = attack_clip(random_metrics["vsfa"], attack, clip, clip_name="synthetic")
    change = adversarial - clip
    assert adversarial.shape == clip.shape
    assert change.abs().max() <= attack.eps + 1e-6
    assert (change.flatten(1).abs().amax(1) > 0).all(), "every frame is perturbed"
    assert result.attacked > result.clear, "VSFA is higher-better: the attack raised its clip score"
    assert result.flicker > 0
    assert np.isfinite(result.psnr)
    assert result.row()["image_name"] == "synthetic"


def test_a_universal_delta_goes_through_apply_on_every_chunk_without_flicker(
    random_metrics: dict, clip: torch.Tensor
) -> None:
    metric, attack = random_metrics["mdtvsfa"], create_attack("uap")
    delta = 0.1 * (2 * torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(3)) - 1)
    perturbation = Perturbation(delta=delta)
    kept = []
    result = universal_clip(
        metric, attack, perturbation, clip.split(5), 0.4, train_dataset="noise", keep=lambda *frame: kept.append(frame)
    )
    whole = attack.apply(perturbation, clip, 0.4)
    assert result.attacked == pytest.approx(score_chunks(metric, [whole]), rel=1e-5), "chunks score as the whole clip"
    assert result.clear == pytest.approx(score_chunks(metric, [clip]), rel=1e-5)
    assert result.flicker == pytest.approx(0.0, abs=1e-7), "the same delta on every frame, across chunk boundaries"
    assert result.max_linf == pytest.approx(0.4 * float(delta.abs().max()), rel=1e-5)
    assert result.n_frames == clip.shape[0]
    assert result.attacked != result.clear
    assert result.row()["amplitude"] == 0.4
    ((index, clean_frame, adversarial_frame),) = kept
    torch.testing.assert_close(adversarial_frame, whole[index])
    torch.testing.assert_close(clean_frame, clip[index])


def test_a_generator_on_a_clip_goes_through_the_attacks_own_test_time_mode(
    random_metrics: dict, clip: torch.Tensor
) -> None:
    from iqa_robustness.attacks._unet import UNetGenerator

    torch.manual_seed(5)
    metric, perturbation = random_metrics["vsfa"], Perturbation(generator=UNetGenerator())
    frames = torch.rand(3, 3, 288, 272, generator=torch.Generator().manual_seed(6))  # sides past one 256 tile
    results = {}
    for mode in ("tile", "pad"):
        attack = create_attack("cnn", test_time=mode)
        result = universal_clip(metric, attack, perturbation, frames.split(2), 0.8)
        whole = attack.apply(perturbation, frames, 0.8)
        assert result.attacked == pytest.approx(score_chunks(metric, [whole]), rel=1e-5)
        results[mode] = result
    assert results["tile"].attacked != results["pad"].attacked, "the attack's test_time option reaches clips"
    assert results["tile"].flicker > 0, "a generator makes one perturbation per frame"


def test_temporal_flicker_is_zero_for_a_constant_perturbation() -> None:
    assert temporal_flicker(torch.full((5, 3, 8, 8), 0.03)) == 0.0


def test_temporal_flicker_of_alternating_frames_is_twice_their_amplitude() -> None:
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]).view(5, 1, 1, 1)
    assert temporal_flicker(0.02 * signs.expand(5, 3, 8, 8)) == pytest.approx(0.04)


def test_flicker_measured_chunk_by_chunk_equals_the_whole_clips() -> None:
    perturbation = torch.rand(7, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    meter = FlickerMeter()
    for chunk in perturbation.split(3):
        meter.add(chunk)
    assert meter.value == pytest.approx(temporal_flicker(perturbation), rel=1e-12)
    assert meter.value == pytest.approx(float((perturbation[1:] - perturbation[:-1]).abs().mean()), rel=1e-6)


def test_a_single_frame_has_no_flicker() -> None:
    assert temporal_flicker(torch.ones(1, 3, 4, 4)) == 0.0


# --------------------------------------------------------------------------- clips on disk


def _write_frames(folder: Path, n: int, prefix: str = "im") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        Image.fromarray(np.full((20, 30, 3), 10 * i, np.uint8)).save(folder / f"{prefix}{i}.png")


def test_a_frame_folder_is_read_in_natural_order(tmp_path: Path) -> None:
    _write_frames(tmp_path, 12)
    clip = read_clip(tmp_path)
    assert clip.shape == (12, 3, 20, 30)
    assert clip.dtype == torch.float32
    assert torch.allclose(clip[:, 0, 0, 0] * 255, torch.arange(10, 130, 10).float(), atol=1e-3)


def test_frame_reading_options_take_stride_count_and_size(tmp_path: Path) -> None:
    _write_frames(tmp_path, 12)
    clip = read_clip(tmp_path, start=1, stride=3, max_frames=3, size=(10, 16))
    assert clip.shape == (3, 3, 10, 16)
    assert torch.allclose(clip[:, 0, 0, 0] * 255, torch.tensor([20.0, 50.0, 80.0]), atol=1e-3)


def test_vimeo_test_list_gives_the_triplet_clip_folders(tmp_path: Path) -> None:
    for name in ("00001/0001", "00001/0002", "00002/0001"):
        _write_frames(tmp_path / "sequences" / name, 3)
    (tmp_path / "tri_testlist.txt").write_text("00001/0002\n00002/0001\n")
    assert vimeo_clip_dirs(tmp_path, split="test") == [
        tmp_path / "sequences" / "00001" / "0002",
        tmp_path / "sequences" / "00002" / "0001",
    ]
    all_dirs = vimeo_clip_dirs(tmp_path)
    assert len(all_dirs) == 3
    assert read_clip(all_dirs[0]).shape == (3, 3, 20, 30)


def _write_video(path: Path, fmt: str, codec: str, colours: list[tuple[int, int, int]]) -> None:
    write_video(path, (np.full((48, 64, 3), colour, np.uint8) for colour in colours), fmt, codec)


COLOURS = [(200, 40 + 20 * i, 100) for i in range(6)]


@pytest.mark.parametrize(("suffix", "fmt", "codec"), [(".y4m", "yuv4mpegpipe", "rawvideo"), (".mp4", "mp4", "mpeg4")])
def test_a_video_file_decodes_to_rgb_frames(tmp_path: Path, suffix: str, fmt: str, codec: str) -> None:
    path = tmp_path / f"clip{suffix}"
    _write_video(path, fmt, codec, COLOURS)
    clip = read_clip(path)
    assert clip.shape == (6, 3, 48, 64)
    assert clip.dtype == torch.float32
    assert float(clip.min()) >= 0.0
    assert float(clip.max()) <= 1.0
    expected = torch.tensor(COLOURS, dtype=torch.float32) / 255
    assert torch.allclose(clip.mean(dim=(2, 3)), expected, atol=0.03)


def test_a_long_clip_is_read_and_scored_in_chunks(tmp_path: Path, random_metrics: dict) -> None:
    path = tmp_path / "clip.y4m"
    _write_video(path, "yuv4mpegpipe", "rawvideo", COLOURS + COLOURS[:1])
    assert [len(c) for c in iter_clip_chunks(path, 3)] == [3, 3, 1]
    metric = random_metrics["mdtvsfa"]
    with torch.no_grad():
        whole = float(metric(read_clip(path, size=(64, 64))))
    chunks = iter_clip_chunks(path, 3, size=(64, 64))
    assert score_chunks(metric, chunks) == pytest.approx(whole, rel=1e-5)


def test_a_missing_clip_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="folder of frames or a video file"):
        read_clip(tmp_path / "nothing.y4m")
