"""Published values: every metric with a published reference score reproduces it, where its real weights are.

Two kinds of reference:

* pyiqa's calibration table (``tests/data/pyiqa_calibration.csv``, from pyiqa's
  ``ResultsCalibra/calibration_summary.csv``): for each pyiqa metric of ``metrics/pyiqa_metrics.py`` it
  has, the scores of the original authors' code and of pyiqa on pyiqa's five calibration images (the
  ``ResultsCalibra/dist_dir`` that the pyiqa wheel installs; a full-reference metric scores each
  against its ``ref_dir`` namesake). The images are read and scored the way
  pyiqa's ``tests/test_metric_general.py`` does (one batch in file-name order, each file read by
  pyiqa's ``imread2tensor``: RGB, ``/ 255``, which the suite's loader equals) and compared with its rule
  (``torch.allclose`` with the row's ``atol`` and ``rtol``).
* a release's demo value (:data:`RELEASE_DEMOS`): the score its authors' demo prints for its demo image.

Every case goes through the suite's own adapter (:func:`metrics.create_metric`), so an adapter that
drifts from the published numbers fails here. A case whose weights, images or GPU are not on this
machine skips and says which file is missing and where to put it. Weights are looked up in the
reference folder's ``weights/`` (``IQA_ROBUSTNESS_SHARED``), then as the suite always does
(``IQA_ROBUSTNESS_WEIGHTS``, pyiqa's cache, a download unless offline).
"""

from __future__ import annotations

import csv
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import resize

from iqa_robustness.data import shared_folder
from iqa_robustness.data.decode import image_to_tensor, load_image
from iqa_robustness.metrics import MissingWeightsError, create_metric, get_spec, list_metrics
from iqa_robustness.metrics.weights import find_weight_file, offline_mode, resolve_weight_file, search_dirs

pytestmark = pytest.mark.weights

CALIBRATION_TABLE = Path(__file__).parent / "data" / "pyiqa_calibration.csv"
#: the calibration table's sources: whose scores a row holds
CALIBRATION_SOURCES = {
    "official": "the original code, in pyiqa's calibration table",
    "pyiqa": "pyiqa, in its calibration table",
}
#: where the pyiqa wheel installs its calibration images (pyiqa's test reads the same folder of its checkout)
CALIBRATION_IMAGES = "ResultsCalibra/dist_dir"
#: the reference images of the full-reference rows, beside them
CALIBRATION_REFERENCES = "ref_dir"


@dataclass(frozen=True)
class Reference:
    """Published scores of one metric on named images, and the tolerance they are checked with."""

    metric: str
    source: str
    images: tuple[str, ...]
    values: tuple[float, ...]
    atol: float
    rtol: float

    def mismatches(self, scores: torch.Tensor) -> list[str]:
        """One line per image whose score is outside ``atol + rtol * |value|`` of the published value."""
        expected = torch.tensor(self.values, dtype=torch.float64)
        got = scores.detach().double().cpu().reshape(-1)
        bad = ~torch.isclose(got, expected, rtol=self.rtol, atol=self.atol)
        return [
            f"{self.metric} on {image}: {score:.4f}, published ({self.source}) {value:.4f}, "
            f"allowed {self.atol:g} + {self.rtol:g} x |{value:.4f}|"
            for image, score, value, off in zip(self.images, got.tolist(), self.values, bad.tolist(), strict=True)
            if off
        ]


def read_calibration_table(path: Path = CALIBRATION_TABLE) -> dict[str, list[Reference]]:
    """The calibration table's rows by metric (``#`` lines are its provenance)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    table: dict[str, list[Reference]] = {}
    for row in rows:
        images = tuple(key for key in row if key.endswith(".bmp"))
        table.setdefault(row["metric"], []).append(
            Reference(
                metric=row["metric"],
                source=CALIBRATION_SOURCES[row["source"]],
                images=images,
                values=tuple(float(row[key]) for key in images),
                atol=float(row["atol"]),
                rtol=float(row["rtol"]),
            )
        )
    return table


@dataclass(frozen=True)
class ReleaseDemo:
    """A score an original release publishes for its demo image, and how its demo reads the image.

    Attributes:
        metric: registry name.
        image: the demo image's file name.
        origin: where the release keeps the image (for the skip message).
        urls: where to download it from when it is not on disk (skipped offline).
        shared_subdir: a folder of the reference folder holding the image, if any.
        value: the published score.
        atol, rtol: allowed difference ``atol + rtol * |value|``.
        resize: (H, W) the demo resizes the decoded image to with torchvision's PIL resize, if it does.
        source: where the value is published.
    """

    metric: str
    image: str
    origin: str
    urls: tuple[str, ...]
    value: float
    atol: float
    rtol: float
    source: str
    shared_subdir: str | None = None
    resize: tuple[int, int] | None = None

    def load(self, path: Path) -> torch.Tensor:
        """The demo image as the release's demo feeds it, as a (1, 3, H, W) batch in [0, 1]."""
        if self.resize is None:
            return load_image(path).unsqueeze(0)
        with Image.open(path) as image:
            resized = resize(image.convert("RGB"), list(self.resize))  # test_demo.py: resize(im, (h, w))
        return image_to_tensor(resized).unsqueeze(0)


#: The releases that publish a score for their demo image. KonCept512 (ZhengyuZhao/koniq-PyTorch),
#: SPAQ (h4nwei/SPAQ BL_demo.py), VSFA and MDTVSFA (lidq92/VSFA, lidq92/MDTVSFA test_demo.py) publish
#: none; PaQ-2-PiQ is checked through pyiqa's calibration table.
RELEASE_DEMOS = (
    # docs/methodology.md, "Reference material": data/cnniqa/I03_01_1.bmp scores
    # about 18.1 with CNNIQA-LIVE.pth. The image is the demo image of lidq92/CNNIQA's test_demo.py, which
    # reads it with PIL's convert("L") (the adapter's luma) and averages the scores of its 32x32 patches.
    ReleaseDemo(
        metric="cnniqa-live",
        image="I03_01_1.bmp",
        origin="data/I03_01_1.bmp of github.com/lidq92/CNNIQA",
        urls=("https://github.com/lidq92/CNNIQA/raw/master/data/I03_01_1.bmp",),
        shared_subdir="data/cnniqa",
        value=18.1,
        atol=0.05,
        rtol=0.0,
        source="about 18.1, docs/methodology.md, 'Reference material'",
    ),
    # README of github.com/lidq92/LinearityIQA, "Test Demo": `python test_demo.py --img_path
    # data/1000.JPG --resize -arch resnext101_32x8d --trained_model_file checkpoints/p1q2.pth` prints
    # 10.430044178601875 (a GPU run). test_demo.py: PIL RGB, torchvision resize to (498, 664),
    # to_tensor, ImageNet normalisation (in the adapter), k[0] * score + b[0]. Tolerance: pyiqa's default
    # rule, which leaves room for another GPU's or the CPU's arithmetic.
    ReleaseDemo(
        metric="linearity",
        image="1000.JPG",
        origin="data/1000.JPG of github.com/lidq92/LinearityIQA",
        urls=("https://github.com/lidq92/LinearityIQA/raw/master/data/1000.JPG",),
        value=10.430044178601875,
        atol=0.01,
        rtol=0.01,
        resize=(498, 664),
        source="README of github.com/lidq92/LinearityIQA, test_demo.py --resize",
    ),
)

CALIBRATION = read_calibration_table()


# --------------------------------------------------------------------------- where things are


def weights_folder() -> Path | None:
    """The reference folder's ``weights/`` (``pyiqa/`` and ``original/`` inside), searched first when present."""
    folder = shared_folder() / "weights"
    return folder if folder.is_dir() else None


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build(metric: str):
    """The metric through the suite's adapter with its real weights; skips naming what is missing."""
    spec = get_spec(metric)
    if spec.needs_gpu and not torch.cuda.is_available():
        pytest.skip(
            f"{metric}: declared needs_gpu (minutes per batch on a CPU) and no CUDA device is here; "
            "run this test on a machine with a GPU"
        )
    try:
        return create_metric(metric, device=device(), weights=weights_folder())
    except MissingWeightsError as exc:
        reason = str(exc)
        pytest.skip(reason if reason.startswith(f"{metric}:") else f"{metric}: {reason}")


def calibration_images() -> Path:
    """pyiqa's calibration images as its wheel installs them; skips saying why when they are not there."""
    try:
        folder = Path(importlib.metadata.distribution("pyiqa").locate_file(CALIBRATION_IMAGES))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pyiqa is not installed: its calibration images come with it (pip install pyiqa)")
    if not folder.is_dir():
        pytest.skip(
            f"pyiqa's calibration images are not at {folder}: this pyiqa was installed without them; "
            "reinstall pyiqa from its wheel (pip install --force-reinstall pyiqa)"
        )
    return folder


def demo_image(demo: ReleaseDemo) -> Path:
    """The demo image: beside the weights (or in the reference folder), else downloaded; skips when neither."""
    extra = [shared_folder() / demo.shared_subdir] if demo.shared_subdir else []
    found = find_weight_file(demo.image, weights_folder(), extra_dirs=extra)
    if found is not None:
        return found
    if not offline_mode():
        try:
            return resolve_weight_file(demo.image, weights_folder(), urls=demo.urls)
        except MissingWeightsError:
            pass
    folders = ", ".join(str(d) for d in [*search_dirs(weights_folder()), *extra])
    weights = get_spec(demo.metric).weight_files
    absent = [name for name in weights if find_weight_file(name, weights_folder()) is None]
    also = f" ({', '.join(absent)} is not on disk either)" if absent else ""
    pytest.skip(
        f"{demo.metric}: the release's demo image {demo.image!r} ({demo.origin}) is not on disk; put it "
        f"beside the metric's weights {', '.join(weights)}{also} in one of: {folders} "
        "(or point IQA_ROBUSTNESS_WEIGHTS at a folder holding both)"
    )


# --------------------------------------------------------------------------- the tests


def test_every_published_value_belongs_to_a_registered_metric():
    assert set(CALIBRATION) <= set(list_metrics(source="pyiqa"))
    assert {demo.metric for demo in RELEASE_DEMOS} <= set(list_metrics())
    for references in CALIBRATION.values():
        assert sorted(ref.source for ref in references) == sorted(CALIBRATION_SOURCES.values())
        assert all(len(ref.values) == len(ref.images) == 5 for ref in references)


def test_calibration_images_read_as_pyiqas_test_reads_them():
    from pyiqa.utils import imread2tensor

    folder = calibration_images()
    names = sorted(p.name for p in folder.iterdir())
    assert names == list(next(iter(CALIBRATION.values()))[0].images)
    for name in names:
        torch.testing.assert_close(load_image(folder / name), imread2tensor(str(folder / name)), rtol=0, atol=0)


@pytest.mark.parametrize("metric", sorted(CALIBRATION))
def test_pyiqa_metric_reproduces_pyiqas_calibration_table(metric):
    references = CALIBRATION[metric]
    folder = calibration_images()
    model = build(metric)
    batch = torch.stack([load_image(folder / name) for name in references[0].images]).to(device())
    with torch.no_grad():
        if get_spec(metric).is_full_reference:  # pyiqa's test: metric(dist_dir image, ref_dir image)
            reference_folder = folder.parent / CALIBRATION_REFERENCES
            reference = torch.stack([load_image(reference_folder / name) for name in references[0].images])
            scores = model.score_pair(batch, reference.to(device()))
        else:
            scores = model(batch)
    mismatches = [line for ref in references for line in ref.mismatches(scores)]
    assert not mismatches, "the adapter no longer reproduces pyiqa's published scores:\n" + "\n".join(mismatches)


@pytest.mark.parametrize("demo", RELEASE_DEMOS, ids=[demo.metric for demo in RELEASE_DEMOS])
def test_release_demo_image_scores_the_published_value(demo):
    image = demo_image(demo)
    model = build(demo.metric)
    with torch.no_grad():
        score = model(demo.load(image).to(device()))
    reference = Reference(demo.metric, demo.source, (demo.image,), (demo.value,), demo.atol, demo.rtol)
    mismatches = reference.mismatches(score)
    assert not mismatches, "the adapter no longer reproduces the release's demo value:\n" + "\n".join(mismatches)
