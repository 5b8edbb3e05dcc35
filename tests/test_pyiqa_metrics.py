"""pyiqa metrics behind the suite's interface: calibration, raw scores, gradients, weights, smoke mode."""

from __future__ import annotations

import importlib.util
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_robustness.metrics import MissingWeightsError, create_metric, get_spec
from iqa_robustness.metrics.pyiqa_metrics import DownloadBlockedError, PyiqaMetric
from iqa_robustness.metrics.weights import ENV_VAR

torch.set_num_threads(min(2, torch.get_num_threads()))

#: pyiqa's own scores of its calibration images (rows "niqe(ours)" and "brisque(ours)" of
#: ResultsCalibra/calibration_summary.csv, https://github.com/chaofengc/IQA-PyTorch at commit
#: 01ae427f9afd66842031d3a7cb694dcad5b5cbb8), in the order I03, I04, I06, I08, I19.
CALIBRATION_IMAGES = ("I03.bmp", "I04.bmp", "I06.bmp", "I08.bmp", "I19.bmp")
PYIQA_CALIBRATION = {
    "niqe": (15.6538, 3.6549, 3.2342, 3.1922, 9.0722),
    "brisque": (94.6443, -0.1068, 1.0732, 5.1447, 66.8415),
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or download attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def calibration_batch() -> torch.Tensor:
    """pyiqa's distorted calibration images, shipped in the pyiqa wheel next to the package."""
    spec = importlib.util.find_spec("pyiqa")
    folder = Path(spec.origin).parents[1] / "ResultsCalibra" / "dist_dir" if spec and spec.origin else None
    if folder is None or not folder.is_dir():
        pytest.skip("pyiqa's ResultsCalibra/dist_dir images are not installed beside the pyiqa package")
    images = [np.asarray(Image.open(folder / name).convert("RGB")) for name in CALIBRATION_IMAGES]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def test_niqe_reproduces_pyiqa_calibration_to_three_significant_digits(pyiqa_weights, calibration_batch):
    niqe = create_metric("niqe")
    with torch.no_grad():
        scores = niqe(calibration_batch)
    assert scores.tolist() == pytest.approx(PYIQA_CALIBRATION["niqe"], rel=5e-3)


def test_brisque_reproduces_pyiqa_calibration(pyiqa_weights, calibration_batch):
    brisque = create_metric("brisque")
    with torch.no_grad():
        scores = brisque(calibration_batch)
    # Three significant digits; the two scores near zero (I04, I06) are compared to 0.02 absolute:
    # BRISQUE's float32 SVR output moves by ~0.01 with batch composition and BLAS.
    assert scores.tolist() == pytest.approx(PYIQA_CALIBRATION["brisque"], rel=5e-3, abs=2e-2)


def test_scores_are_raw_pyiqa_values_without_a_loss_sign(pyiqa_weights):
    import pyiqa

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    brisque = create_metric("brisque")
    with torch.no_grad():
        ours = brisque(x)
        reference = pyiqa.create_metric("brisque", device="cpu")(x).reshape(-1)
    torch.testing.assert_close(ours, reference.to(ours.dtype))
    assert brisque.lower_better
    torch.testing.assert_close(brisque.quality(x), -ours)


def test_pyiqa_runs_in_loss_mode_without_reduction(pyiqa_weights):
    brisque = create_metric("brisque")
    assert isinstance(brisque, PyiqaMetric)
    assert brisque.iqa.as_loss
    assert brisque.iqa.loss_reduction == "none"
    noisy = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert brisque(noisy).item() > 0  # BRISQUE of white noise is large and positive, not negated


def test_the_caller_grad_mode_decides_whether_a_graph_is_built(pyiqa_weights):
    brisque = create_metric("brisque")
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with torch.no_grad():
        assert not brisque(x).requires_grad
    assert brisque(x).requires_grad


@pytest.mark.parametrize(("name", "side"), [("paq2piq", 64), ("cnniqa", 48), ("wadiqam_nr", 64), ("dbcnn", 48)])
def test_random_mode_builds_offline_without_any_download(name, side, no_network, offline):
    model = create_metric(name, weights="random")
    assert model.weights_mode == "random"
    assert model.is_random
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0), requires_grad=True)
    scores = model(x)
    assert scores.shape == (2,)
    assert torch.isfinite(scores).all()
    # gradients flow, and each image's score depends on that image only
    (grad,) = torch.autograd.grad(scores[0], x)
    assert grad[0].abs().sum() > 0
    assert grad[1].abs().sum() == 0


def test_parameters_are_frozen(no_network, offline):
    model = create_metric("paq2piq", weights="random")
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())


def test_piqe_gradient_is_zero_as_declared():
    assert not get_spec("piqe").differentiable
    piqe = create_metric("piqe")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    scores = piqe(x)
    assert scores.shape == (2,)
    grad = torch.autograd.grad(scores.sum(), x, allow_unused=True)[0] if scores.requires_grad else None
    assert grad is None or grad.abs().sum() == 0


def test_missing_weights_offline_fail_fast_naming_the_file_and_where_to_put_it(offline, no_network):
    import pyiqa  # noqa: F401  (import time is not the metric's)

    start = time.perf_counter()
    with pytest.raises(MissingWeightsError, match=r"niqe_matlab_params\.mat") as info:
        create_metric("niqe_matlab")
    assert time.perf_counter() - start < 5.0
    assert ENV_VAR in str(info.value)
    assert str(info.value).startswith("niqe_matlab:")


def test_a_missing_torchvision_backbone_offline_names_its_file(offline, no_network):
    with pytest.raises(MissingWeightsError, match="resnet50-"):
        create_metric("arniqa")


def test_random_mode_refuses_to_download_what_it_cannot_make_up(no_network, offline):
    with pytest.raises(DownloadBlockedError, match=r"niqe_matlab_params\.mat"):
        create_metric("niqe_matlab", weights="random")


def test_weights_come_from_an_explicit_folder_or_the_environment_without_backbone_downloads(
    tmp_path, monkeypatch, no_network, offline
):
    random_model = create_metric("paq2piq", weights="random")
    (checkpoint,) = get_spec("paq2piq").weight_files
    torch.save(random_model.iqa.net.state_dict(), tmp_path / checkpoint)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    from_folder = create_metric("paq2piq", weights=tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    from_env = create_metric("paq2piq")

    assert from_folder.weights_mode == "pretrained"
    assert not from_folder.is_random
    with torch.no_grad():
        expected = random_model(x)
        torch.testing.assert_close(from_folder(x), expected)
        torch.testing.assert_close(from_env(x), expected)


def test_entropy_counts_its_histogram_with_bincount_and_gives_pyiqas_values_exactly():
    import pyiqa

    reference = pyiqa.create_metric("entropy", device="cpu", as_loss=True, loss_reduction="none")
    metric = create_metric("entropy", device="cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 48, 40, generator=gen)
    x[0] = 0.5  # one grey level: entropy 0
    x[1, :, :20] = 1.0  # a saturated half
    x[2] = (x[2] * 4).round() / 4  # a few levels
    with torch.no_grad():
        assert torch.equal(metric.score(x), reference(x).reshape(4))
    with pytest.raises(ValueError, match="clamp the images"):
        metric.score(x + 0.5)
