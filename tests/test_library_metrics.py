"""Metrics of piq and torchmetrics (Apache-2.0, core dependencies), and metrics whose library is absent.

The piq and torchmetrics metrics are read from the registry (``piq-*``, ``tm-*``) and tested by
their declared facts: direction, bounds, differentiability, files. They score real photographs
(scikit-image's, the built-in ``sample`` set) and the MSU test images where the reference folder is.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iqa_robustness.data.images import folder_dataset, sample_dataset
from iqa_robustness.metrics import (
    MetricNotInstalledError,
    MetricSpec,
    MissingWeightsError,
    create_metric,
    get_spec,
    list_metrics,
    register_metric,
)
from iqa_robustness.metrics._libraries import LIBRARIES, Library

LIBRARY_METRICS = list_metrics("piq-*,tm-*", uninstalled=True)
WITHOUT_FILES = [name for name in LIBRARY_METRICS if not get_spec(name).weight_files]
WITH_FILES = [name for name in LIBRARY_METRICS if get_spec(name).weight_files]
PYIQA_INSTALLED = importlib.util.find_spec("pyiqa") is not None


@pytest.fixture(scope="module")
def photographs() -> torch.Tensor:
    """Three real photographs at 176 x 176 (the largest smallest side a library metric declares)."""
    side = max(get_spec(name).min_side or 1 for name in WITHOUT_FILES)
    return torch.stack([image for _, image in sample_dataset(max_images=3, size=(side, side)).images()])


def centre(images: torch.Tensor, name: str) -> torch.Tensor:
    """The centre of ``images`` at 96 px, or at the metric's smallest side if larger: CPU time goes by pixels."""
    side = max(96, get_spec(name).min_side or 1)
    top, left = (images.shape[-2] - side) // 2, (images.shape[-1] - side) // 2
    return images[..., top : top + side, left : left + side]


def noisy(images: torch.Tensor, sigma: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def test_the_library_metrics_asked_for_are_registered_under_their_library():
    asked = {"piq-psnr", "piq-ssim", "piq-ms_ssim", "piq-lpips", "piq-dists", "piq-brisque"}
    asked |= {"tm-psnr", "tm-ssim", "tm-ms_ssim", "tm-lpips", "tm-dists"}

    assert asked <= set(LIBRARY_METRICS)
    for name in LIBRARY_METRICS:
        prefix = name.split("-", 1)[0]
        assert get_spec(name).source == {"piq": "piq", "tm": "torchmetrics"}[prefix], name


def test_registering_the_library_metrics_imports_neither_library():
    code = (
        "import sys, iqa_robustness.metrics as m; m.list_metrics('piq-*,tm-*'); "
        "print('piq' in sys.modules, 'torchmetrics' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)

    assert out.stdout.split() == ["False", "False"]


def test_a_library_metric_named_like_a_pyiqa_metric_has_its_kind_and_direction():
    pyiqa_names = set(list_metrics(source="pyiqa", uninstalled=True))
    same = [name for name in LIBRARY_METRICS if name.split("-", 1)[1] in pyiqa_names]

    assert len(same) >= 10
    for name in same:
        ours, theirs = get_spec(name), get_spec(name.split("-", 1)[1])
        assert (ours.kind, ours.lower_better) == (theirs.kind, theirs.lower_better), name


@pytest.mark.parametrize("name", WITHOUT_FILES)
def test_a_library_metric_ranks_photographs_by_how_much_noise_they_carry(name, photographs):
    metric = create_metric(name)
    assert metric.spec.is_full_reference  # every library metric without files compares with a reference
    photographs = centre(photographs, name)
    mild, strong = noisy(photographs, 0.03), noisy(photographs, 0.15)

    with torch.no_grad(), metric.reference(photographs):
        identical, q_mild, q_strong = (metric.quality(images) for images in (photographs, mild, strong))
        raw = torch.cat([metric(mild), metric(strong)])

    assert torch.all(q_mild > q_strong), (q_mild, q_strong)
    assert torch.all(identical >= q_mild - 1e-6), (identical, q_mild)
    low, high = metric.spec.bounds
    assert torch.all((raw >= low - 1e-3) & (raw <= high + 1e-3)), raw


@pytest.mark.parametrize("name", [n for n in WITHOUT_FILES if get_spec(n).differentiable])
def test_a_differentiable_library_metric_has_a_finite_input_gradient(name, photographs):
    metric = create_metric(name)
    photographs = centre(photographs[:2], name)
    distorted = noisy(photographs, 0.05).requires_grad_(True)

    with metric.reference(photographs):
        (gradient,) = torch.autograd.grad(metric.loss(distorted).sum(), distorted)

    assert torch.isfinite(gradient).all()
    assert gradient.abs().sum() > 0


def test_an_out_of_range_image_is_scored_clamped(photographs):
    metric = create_metric("piq-ssim")
    out_of_range = photographs[:1] * 1.5 - 0.25

    with torch.no_grad(), metric.reference(photographs[:1]):
        assert metric(out_of_range).item() == pytest.approx(metric(out_of_range.clamp(0, 1)).item())


@pytest.mark.parametrize("name", WITH_FILES)
def test_a_library_metric_whose_files_are_nowhere_stops_offline_naming_the_file(
    name, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("IQA_ROBUSTNESS_OFFLINE", "1")
    monkeypatch.delenv("IQA_ROBUSTNESS_WEIGHTS", raising=False)

    with pytest.raises(MissingWeightsError, match=rf"^{name}: weight file '[^']+' not found\. Offline mode") as info:
        create_metric(name)
    assert any(f"'{file}'" in str(info.value) for file in get_spec(name).weight_files)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in str(info.value)
    with pytest.raises(MissingWeightsError, match="no random-weights build"):
        create_metric(name, weights="random")


@pytest.fixture
def brisque_file(shared_dir: Path, tmp_path: Path) -> Path:
    """A weights folder holding piq's BRISQUE model.

    pyiqa's ``brisque_svm_weights.pth`` is piq's v0.4.0 release file under another name
    (``pyiqa/archs/brisque_arch.py`` says so): the same support vectors and coefficients.
    """
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copyfile(shared_dir / "weights" / "pyiqa" / "brisque_svm_weights.pth", folder / "brisque_svm_weights.pt")
    return folder


def msu_images(folder: Path) -> torch.Tensor:
    return torch.stack([image for _, image in folder_dataset(folder).images()])


def test_piq_brisque_scores_the_msu_images_from_a_weights_folder_and_noise_lowers_their_quality(
    brisque_file, msu_test_images, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    images = msu_images(msu_test_images)

    metric = create_metric("piq-brisque", weights=brisque_file)
    with torch.no_grad():
        clean, distorted = metric.quality(images), metric.quality(noisy(images, 0.1))

    assert (tmp_path / "torch" / "hub" / "checkpoints" / "brisque_svm_weights.pt").is_file()
    assert torch.isfinite(clean).all()
    assert torch.all(distorted < clean), (clean, distorted)


@pytest.mark.pyiqa
def test_piq_and_pyiqa_brisque_agree_within_two_points_on_the_msu_images(
    brisque_file, msu_test_images, pyiqa_weights, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    images = msu_images(msu_test_images)

    with torch.no_grad():
        ours = create_metric("piq-brisque", weights=brisque_file)(images)
        theirs = create_metric("brisque", weights=pyiqa_weights)(images)

    assert torch.allclose(ours, theirs, atol=2.0), (ours, theirs)
    assert not torch.equal(ours, theirs)  # two implementations: this is why they keep two names


# -- a metric whose library is not installed -------------------------------------------------
@pytest.fixture
def absent_library_metric(restored_metric_registry, monkeypatch: pytest.MonkeyPatch) -> str:
    """``haarpsi`` from a library that is really not installed (no module of that name exists)."""
    monkeypatch.setitem(
        LIBRARIES, "absentlib", Library("iqa_robustness_absent_library", "pip install absentlib", "LicenseRef-Test")
    )

    def build(*args: object) -> None:
        raise AssertionError("a metric whose library is missing was built")

    register_metric(MetricSpec(name="haarpsi", kind="fr", source="absentlib"), build)
    return "haarpsi"


def test_a_metric_whose_library_is_missing_is_named_with_the_install_command(absent_library_metric):
    message = r"metric 'haarpsi' comes from iqa_robustness_absent_library, which is not installed: pip install absentl"

    with pytest.raises(MetricNotInstalledError, match=message) as info:
        list_metrics("haarpsi")
    assert "installed metrics of that name from other libraries: piq-haarpsi" in str(info.value)
    with pytest.raises(MetricNotInstalledError, match=message):
        create_metric("haarpsi")
    assert get_spec("haarpsi").source == "absentlib"  # its facts stay readable for results made elsewhere


def test_all_and_globs_leave_out_a_metric_whose_library_is_missing(absent_library_metric):
    assert "haarpsi" not in list_metrics("all")
    assert list_metrics("*haarpsi") == ["piq-haarpsi"]
    assert "haarpsi" in list_metrics("all", uninstalled=True)


@pytest.mark.skipif(PYIQA_INSTALLED, reason="runs where pyiqa is not installed (.ci/run's core environment)")
def test_without_pyiqa_a_pyiqa_name_says_which_extra_to_install_and_list_still_works():
    with pytest.raises(MetricNotInstalledError, match=r"pip install 'iqa-robustness\[pyiqa\]'") as info:
        list_metrics("brisque")
    assert "piq-brisque" in str(info.value)

    command = [sys.executable, "-m", "iqa_robustness.cli.main", "list", "metrics"]
    listed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()}
    assert {"cnniqa-live", "linearity", "piq-ssim", "tm-ssim"} <= names
    assert "niqe" not in names
    assert "more metrics" in listed.stderr
    assert "pip install 'iqa-robustness[pyiqa]'" in listed.stderr
