"""LinearityIQA, KonCept512, SPAQ baseline: declared facts, gradients, released-file layout, offline errors.

Every model here is built in random mode (no download). The expected state-dict keys and shapes are
written out from the original code (LinearityIQA ``IQAModel.py``, the KonCept512 port's ``model_qa``
on Cadene's ``inceptionresnetv2``, SPAQ ``BL_demo.py``), not read from the modules under test.
"""

from __future__ import annotations

import argparse
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import torch

from iqa_robustness.metrics import MissingWeightsError, create_metric, get_spec, koncept512, linearity, spaq
from iqa_robustness.metrics._released import load_release_checkpoint, resize_bilinear, shorter_side_size
from iqa_robustness.metrics.base import Metric


@dataclass(frozen=True)
class Released:
    """What the original release of one metric looks like."""

    name: str
    module: ModuleType
    urls: str  # name of the module constant holding the download URLs
    filename: str
    native_hw: tuple[int, int]
    #: The network inside the metric (``metric.net``) -> the object the authors saved.
    wrap: Callable[[dict[str, torch.Tensor]], object]
    #: A few keys of the original state dict and their shapes.
    keys: dict[str, tuple[int, ...]]
    n_keys: int
    #: Attributes the metric must take from the saved file.
    loaded: dict[str, object]
    #: Marks of the native-size gradient test (``slow`` where it takes over ~20 s on 2 busy cores).
    native_marks: tuple[pytest.MarkDecorator, ...] = ()


def _linearity_checkpoint(state: dict[str, torch.Tensor]) -> object:
    # main.py saves the model with the Adam and apex AMP states and the k/b map of IQAPerformance.
    return {
        "model": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}},
        "k": [12.5, 3.0, 4.0],
        "b": [60.25, 1.0, 2.0],
    }


CASES = {
    "linearity": Released(
        name="linearity",
        module=linearity,
        urls="LINEARITY_URLS",
        filename="p1q2.pth",
        native_hw=(498, 664),
        wrap=_linearity_checkpoint,
        keys={
            "features.0.weight": (64, 3, 7, 7),  # conv1
            "features.1.running_var": (64,),  # bn1
            "features.4.0.conv2.weight": (256, 8, 3, 3),  # layer1, 32 groups of width 8
            "features.6.22.conv3.weight": (1024, 1024, 1, 1),  # layer3 has 23 blocks
            "features.7.0.downsample.0.weight": (2048, 1024, 1, 1),
            "dr6.0.weight": (1024, 1024),
            "dr6.5.running_mean": (64,),
            "dr7.0.weight": (1024, 2048),
            "dr7.4.weight": (64, 256),
            "regr6.weight": (1, 64),
            "regr7.bias": (1,),
            "regression.weight": (1, 128),
        },
        n_keys=672,
        loaded={"k": 12.5, "b": 60.25},
        native_marks=(pytest.mark.slow,),
    ),
    "koncept512": Released(
        name="koncept512",
        module=koncept512,
        urls="KONCEPT512_URLS",
        filename="KonCept512.pth",
        native_hw=(384, 512),
        wrap=lambda state: state,  # the port saves model_qa's bare state dict
        keys={
            "base.0.conv.weight": (32, 3, 3, 3),  # conv2d_1a
            "base.0.bn.running_var": (32,),
            "base.7.branch3.1.conv.weight": (64, 192, 1, 1),  # mixed_5b
            "base.8.9.conv2d.weight": (320, 128, 1, 1),  # 10th Block35
            "base.10.19.branch1.2.conv.weight": (192, 160, 7, 1),  # 20th Block17
            "base.13.conv2d.bias": (2080,),  # block8
            "base.14.conv.weight": (1536, 2080, 1, 1),  # conv2d_7b
            "fc.0.weight": (2048, 1536),
            "fc.2.running_mean": (2048,),
            "fc.4.weight": (1024, 2048),
            "fc.10.num_batches_tracked": (),
            "fc.12.weight": (1, 256),
        },
        n_keys=1327,
        loaded={"input_size": (384, 512)},
    ),
    "spaq": Released(
        name="spaq",
        module=spaq,
        urls="SPAQ_URLS",
        filename="BL_release.pt",
        native_hw=(512, 512),
        wrap=lambda state: {"state_dict": state},
        keys={
            "backbone.conv1.weight": (64, 3, 7, 7),
            "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
            "backbone.layer4.2.bn3.running_var": (2048,),
            "backbone.fc.weight": (1, 2048),
            "backbone.fc.bias": (1,),
        },
        n_keys=320,
        loaded={"resize_small": True},
        native_marks=(pytest.mark.slow,),
    ),
}
NAMES = list(CASES)


@pytest.fixture(scope="module")
def random_metrics() -> dict[str, Metric]:
    torch.manual_seed(0)
    return {name: create_metric(name, weights="random") for name in NAMES}


@pytest.fixture(autouse=True)
def _no_weights_folder_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IQA_ROBUSTNESS_WEIGHTS", raising=False)


def _image_gradient(metric: Metric, hw: tuple[int, int], batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(batch, 3, *hw, generator=torch.Generator().manual_seed(1), requires_grad=True)
    scores = metric(x)
    (grad,) = torch.autograd.grad(metric.loss(x).sum(), x)
    return scores, grad


# -- declared facts -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "fixed_size", "weight_file"),
    [
        ("linearity", (498, 664), "p1q2.pth"),
        ("koncept512", (384, 512), "KonCept512.pth"),
        ("spaq", None, "BL_release.pt"),
    ],
)
def test_spec_declares_the_original_facts(name: str, fixed_size: tuple[int, int] | None, weight_file: str) -> None:
    spec = get_spec(name)
    assert spec.kind == "nr-image"
    assert spec.lower_better is False
    assert spec.bounds == (0.0, 100.0)
    assert spec.differentiable is True
    assert spec.fixed_size == fixed_size
    assert spec.weight_files == (weight_file,)
    assert spec.source == "own"


@pytest.mark.parametrize("name", NAMES)
def test_each_metric_publishes_download_urls_for_its_release(name: str) -> None:
    case = CASES[name]
    urls = getattr(case.module, case.urls)
    assert urls
    assert all(url.startswith("https://") for url in urls)


# -- random mode: builds offline, differentiable end to end --------------------------------------
@pytest.mark.parametrize("name", [pytest.param(n, marks=CASES[n].native_marks) for n in NAMES])
def test_random_mode_backpropagates_at_the_native_input_size(name: str, random_metrics: dict[str, Metric]) -> None:
    metric = random_metrics[name]
    assert metric.is_random
    scores, grad = _image_gradient(metric, CASES[name].native_hw)
    assert scores.shape == (1,)
    assert torch.isfinite(scores).all()
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "make", "hw"),
    [
        # an image far from the model size, so the gradient also crosses the resize
        ("linearity", lambda m: linearity.LinearityIQA(m.spec, m.net, input_size=(64, 80)), (50, 60)),
        ("spaq", lambda m: spaq.SPAQ(m.spec, m.net, resize_small=False), (224, 224)),
    ],
    ids=["linearity-64x80", "spaq-one-patch"],
)
def test_gradient_reaches_the_image_on_a_cheaper_configuration(
    name: str, make: Callable[[Metric], Metric], hw: tuple[int, int], random_metrics: dict[str, Metric]
) -> None:
    scores, grad = _image_gradient(make(random_metrics[name]).freeze(), hw)
    assert scores.shape == (1,)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def test_spaq_scores_of_a_batch_match_the_images_scored_alone(random_metrics: dict[str, Metric]) -> None:
    metric = spaq.SPAQ(get_spec("spaq"), random_metrics["spaq"].net, resize_small=False).freeze()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        together = metric(x)
        alone = torch.cat([metric(x[:1]), metric(x[1:])])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


# -- released files -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_missing_weights_offline_raise_an_error_naming_the_file(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    monkeypatch.setattr(case.module, case.urls, ())  # never download in tests
    with pytest.raises(MissingWeightsError, match=case.filename.replace(".", r"\.")):
        create_metric(name, weights=tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_network_has_the_key_layout_of_the_original_release(name: str, random_metrics: dict[str, Metric]) -> None:
    case = CASES[name]
    state = random_metrics[name].net.state_dict()
    assert len(state) == case.n_keys
    assert {key: tuple(state[key].shape) for key in case.keys} == case.keys


@pytest.mark.parametrize("name", NAMES)
def test_a_file_saved_in_the_original_layout_loads_strictly(
    name: str, random_metrics: dict[str, Metric], tmp_path: Path
) -> None:
    case = CASES[name]
    state = random_metrics[name].net.state_dict()
    torch.save(case.wrap(state), tmp_path / case.filename)

    loaded = create_metric(name, weights=tmp_path)

    assert not loaded.is_random
    assert {attr: getattr(loaded, attr) for attr in case.loaded} == case.loaded
    for key in case.keys:
        torch.testing.assert_close(loaded.net.state_dict()[key], state[key], rtol=0, atol=0)


def test_linearity_score_is_the_final_output_mapped_by_k_and_b(random_metrics: dict[str, Metric]) -> None:
    net = random_metrics["linearity"].net
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    plain = linearity.LinearityIQA(get_spec("linearity"), net, input_size=None).eval()
    mapped = linearity.LinearityIQA(get_spec("linearity"), net, k=12.5, b=60.25, input_size=None).eval()
    with torch.no_grad():
        torch.testing.assert_close(mapped(x), plain(x) * 12.5 + 60.25)


def test_a_checkpoint_without_the_state_dict_key_is_rejected_with_a_reason(tmp_path: Path) -> None:
    torch.save({"weights": {"fc.weight": torch.zeros(1)}}, tmp_path / "BL_release.pt")
    with pytest.raises(ValueError, match="state_dict"):
        create_metric("spaq", weights=tmp_path)


def test_an_html_page_saved_as_checkpoint_is_reported_as_a_blocked_download(tmp_path: Path) -> None:
    page = tmp_path / "KonCept512.pth"
    page.write_text("<!DOCTYPE html><html><body>Virus scan warning</body></html>")
    with pytest.raises(ValueError, match="HTML page"):
        load_release_checkpoint(page, koncept512.KONCEPT512_RELEASE)


def test_an_archive_saved_as_checkpoint_is_reported_as_unreadable(tmp_path: Path) -> None:
    archive = tmp_path / "KonCept512.pth"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("KonCept512/readme.txt", "a folder share downloads as a zip")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_release_checkpoint(archive, koncept512.KONCEPT512_RELEASE)


def test_a_checkpoint_with_pickled_objects_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1e-4)}, path)
    with caplog.at_level(logging.WARNING, logger="metrics._released"):
        checkpoint = load_release_checkpoint(path, "the release page")
    assert checkpoint["args"].lr == 1e-4
    assert "weights_only=False" in caplog.text


# -- preprocessing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("length", "origins"), [(224, [0]), (512, [0, 112, 224, 288]), (682, [0, 112, 224, 336, 448, 458])]
)
def test_spaq_patch_grid_matches_the_original(length: int, origins: list[int]) -> None:
    assert spaq.patch_origins(length) == origins


def test_spaq_extracts_patches_row_by_row() -> None:
    x = torch.arange(512 * 682, dtype=torch.float32).view(1, 1, 512, 682).expand(1, 3, 512, 682)
    patches = spaq.extract_patches(x)
    assert patches.shape == (1, 4 * 6, 3, 224, 224)
    torch.testing.assert_close(patches[0, 1], x[0, :, 0:224, 112:336])
    torch.testing.assert_close(patches[0, -1], x[0, :, 288:512, 458:682])


def test_spaq_rejects_a_side_under_one_patch_when_not_resizing_small_images() -> None:
    with pytest.raises(ValueError, match="224 px"):
        spaq.patch_origins(200)


@pytest.mark.parametrize(
    ("hw", "expected"), [((299, 299), (512, 512)), ((512, 910), (512, 910)), ((788, 1400), (512, 909))]
)
def test_shorter_side_resize_follows_torchvision(hw: tuple[int, int], expected: tuple[int, int]) -> None:
    assert shorter_side_size(*hw, 512) == expected


def test_resize_passes_an_image_already_at_size_unchanged() -> None:
    x = torch.rand(1, 3, 8, 10)
    assert resize_bilinear(x, (8, 10)) is x
    assert resize_bilinear(x, (16, 20)).shape == (1, 3, 16, 20)
