"""CNNIQA-LIVE (Kang et al., CVPR 2014) with the lidq92/CNNIQA release weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_robustness.metrics import MissingWeightsError, create_metric, get_spec
from iqa_robustness.metrics.cnniqa_live import (
    WEIGHT_FILE,
    CNNIQALive,
    local_normalisation,
    luma,
    nonoverlapping_patches,
)
from iqa_robustness.metrics.weights import ENV_VAR

torch.set_num_threads(min(2, torch.get_num_threads()))

EXPECTED_STATE = {
    "conv1.weight": (50, 1, 7, 7),
    "conv1.bias": (50,),
    "fc1.weight": (800, 100),
    "fc1.bias": (800,),
    "fc2.weight": (800, 800),
    "fc2.bias": (800,),
    "fc3.weight": (1, 800),
    "fc3.bias": (1,),
}


def _load_rgb(path: Path) -> torch.Tensor:
    array = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0


@pytest.fixture(scope="module")
def weight_path(original_weights: Path) -> Path:
    path = original_weights / WEIGHT_FILE
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def model(original_weights: Path, weight_path: Path):
    return create_metric("cnniqa-live", weights=original_weights)


@pytest.fixture(scope="module")
def live_image(shared_dir: Path) -> torch.Tensor:
    path = shared_dir / "data" / "cnniqa" / "I03_01_1.bmp"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return _load_rgb(path)


def test_release_state_dict_has_the_papers_layers(weight_path):
    state = torch.load(weight_path, map_location="cpu", weights_only=True)
    assert {key: tuple(value.shape) for key, value in state.items()} == EXPECTED_STATE


def test_weights_load_strictly(weight_path, tmp_path):
    CNNIQALive().load_weights(weight_path)
    state = torch.load(weight_path, map_location="cpu", weights_only=True)
    state["fc4.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / WEIGHT_FILE)
    with pytest.raises(RuntimeError, match=r"fc4\.weight"):
        CNNIQALive().load_weights(tmp_path / WEIGHT_FILE)


def test_live_test_image_scores_about_18_1(model, live_image):
    with torch.no_grad():
        score = model(live_image)
    assert score.shape == (1,)
    assert score.item() == pytest.approx(18.1, abs=0.05)


def test_grayscale_is_pils_8_bit_luma(shared_dir, live_image):
    pil_l = np.asarray(Image.open(shared_dir / "data" / "cnniqa" / "I03_01_1.bmp").convert("L"))
    ours = (luma(live_image)[0, 0] * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(ours, pil_l)


def test_patches_follow_the_release_crop_loop():
    gray = torch.rand(2, 1, 384, 512)
    patches, per_image = nonoverlapping_patches(gray)
    assert per_image == len(range(0, 384 - 32, 32)) * len(range(0, 512 - 32, 32)) == 11 * 15
    assert patches.shape == (2 * per_image, 1, 32, 32)
    torch.testing.assert_close(patches[per_image + 16], gray[1, :, 32:64, 32:64])


def test_local_normalisation_matches_the_scipy_reference():
    signal = pytest.importorskip("scipy.signal")
    patch = np.random.default_rng(0).random((32, 32))
    kernel = np.ones((3, 3)) / 9
    mean = signal.convolve2d(patch, kernel, boundary="symm", mode="same")
    mean_sq = signal.convolve2d(patch**2, kernel, boundary="symm", mode="same")
    expected = (patch - mean) / (np.sqrt(np.maximum(mean_sq - mean**2, 0)) + 1)
    ours = local_normalisation(torch.from_numpy(patch).view(1, 1, 32, 32))[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_batching_does_not_change_any_score(model, live_image):
    crop = live_image[..., :160, :224]
    other = torch.rand(1, 3, 160, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = model(torch.cat([crop, other]))
        alone = torch.cat([model(crop), model(other)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_score_is_differentiable_per_image_even_on_flat_regions(model):
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    x[1] = 0.5  # a flat image: zero local variance everywhere
    x.requires_grad_(True)
    scores = model(x)
    (grad,) = torch.autograd.grad(scores[0], x)
    assert torch.isfinite(grad).all()
    assert grad[0].abs().sum() > 0
    assert grad[1].abs().sum() == 0
    (flat_grad,) = torch.autograd.grad(model(x)[1], x)
    assert torch.isfinite(flat_grad).all()


def test_declared_facts():
    spec = get_spec("cnniqa-live")
    assert spec.lower_better
    assert spec.bounds == (0.0, 100.0)
    assert spec.differentiable
    assert spec.min_side == 33


def test_images_without_a_full_patch_are_refused_with_advice(model):
    with pytest.raises(ValueError, match="at least 33 px"):
        model(torch.rand(1, 3, 32, 64))


def test_missing_weights_offline_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=WEIGHT_FILE):
        create_metric("cnniqa-live")


def test_weights_resolve_through_the_environment_variable(shared_dir, weight_path, monkeypatch, live_image):
    monkeypatch.setenv(ENV_VAR, str(shared_dir / "weights"))  # found under original/
    with torch.no_grad():
        assert create_metric("cnniqa-live")(live_image).item() == pytest.approx(18.13, abs=0.01)


def test_random_mode_needs_no_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    random_model = create_metric("cnniqa-live", weights="random")
    assert random_model.is_random
    assert random_model(torch.rand(2, 3, 40, 40)).shape == (2,)
