"""LinearityIQA: Li, Jiang and Jiang, "Norm-in-Norm Loss with Faster Convergence and Better Performance
for Image Quality Assessment", ACM MM 2020 (github.com/lidq92/LinearityIQA).

No-reference image quality. A ResNeXt-101 32x8d (torchvision ``resnext101_32x8d``) is read at two
depths: the outputs of ``layer3`` (1024 channels) and ``layer4`` (2048 channels) are average-pooled
over space (the original's ``SPSP`` with ``P = 1``), each reduced to 64 values by
Linear-BatchNorm-Linear-BatchNorm-Linear-BatchNorm-ReLU (``dr6``, ``dr7``), and the concatenated
128 values are regressed to one score (``regression``). The released ``p1q2.pth`` (norm-in-norm loss
with p = 1, q = 2, trained on KonIQ-10k at 664x498) stores the network under ``model`` and the linear
map ``k``/``b`` that the authors' test code applies to that score: quality = ``k[0] * s + b[0]``, on
KonIQ-10k's MOS scale (scores of real photos lie roughly in [0, 100]; the map is not bounded).
Higher is better.

Preprocessing follows the authors' test code with ``--resize``: the image is resized to 498x664
(H x W, aspect ratio not kept), then normalised with the ImageNet mean and std. The original
resizes with PIL (bilinear, antialiased when shrinking, 8-bit output); here the resize is
:func:`torch.nn.functional.interpolate` (bilinear, ``antialias=True``) on the float image so the
whole pipeline is differentiable. ``input_size=None`` feeds images at their own size instead, as
the MSU-group ``MetricModel`` wrappers of this metric do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnext101_32x8d

from ._released import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    google_drive_url,
    load_release_checkpoint,
    resize_bilinear,
    resolve_release_file,
    state_dict_from,
)
from .base import Metric, MetricSpec
from .registry import metric

log = logging.getLogger(__name__)

LINEARITY_FILE = "p1q2.pth"
#: Where the authors publish ``p1q2.pth`` (README of lidq92/LinearityIQA): a Google Drive folder and
#: a Baidu Pan share (password ``4z7z``). Neither is a direct file link, and no checksum is published.
LINEARITY_RELEASE = (
    "https://drive.google.com/drive/folders/1H79ptqjcR4NH6HP4wLsEmqwhNqNNqXwh "
    "(or https://pan.baidu.com/s/1MRamimHWX8F-SOQ_QsIrvg, password 4z7z)"
)
#: Direct download: a public copy of ``p1q2.pth`` shared by file id (the authors' folder link
#: cannot be fetched as a file).
LINEARITY_URLS = (google_drive_url("1ALDFo87IJrKzGck2MEGymsgzsczh4ZkG"),)
#: (H, W) the released KonIQ-10k model was trained and tested at (``--resize``, 498 x 664).
INPUT_SIZE = (498, 664)

SPEC = MetricSpec(
    name="linearity",
    kind="nr-image",
    lower_better=False,
    bounds=(0.0, 100.0),
    differentiable=True,
    fixed_size=INPUT_SIZE,
    weight_files=(LINEARITY_FILE,),
    heavy=True,
    source="own",
    description="LinearityIQA (Li et al., ACM MM 2020): ResNeXt-101 two-level features; KonIQ-10k",
)


def _reduction(in_features: int) -> nn.Sequential:
    """The original's ``dr6``/``dr7``: in -> 1024 -> 256 -> 64, BatchNorm after each Linear, ReLU last."""
    return nn.Sequential(
        nn.Linear(in_features, 1024),
        nn.BatchNorm1d(1024),
        nn.Linear(1024, 256),
        nn.BatchNorm1d(256),
        nn.Linear(256, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
    )


class LinearityNet(nn.Module):
    """The original ``IQAModel(arch="resnext101_32x8d", pool="avg", use_bn_end=False, P6=1, P7=1)``.

    Its state-dict keys are those of ``p1q2.pth``'s ``model``: ``features.0`` to ``features.7``
    (ResNeXt-101 ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1`` to ``layer4``), ``dr6``,
    ``dr7``, ``regr6``, ``regr7`` and ``regression``. The backbone starts with random weights; the
    released file holds all of them.
    """

    #: ``features`` indices whose outputs are pooled (``id1``, ``id2`` in the original): layer3, layer4.
    LEVEL6, LEVEL7 = 6, 7

    def __init__(self) -> None:
        super().__init__()
        backbone = resnext101_32x8d(weights=None)
        self.features = nn.Sequential(*list(backbone.children())[:-2])
        self.dr6 = _reduction(1024)
        self.dr7 = _reduction(2048)
        self.regr6 = nn.Linear(64, 1)
        self.regr7 = nn.Linear(64, 1)
        self.regression = nn.Linear(64 * 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised images (N, 3, H, W) -> (level-6 score, level-7 score, final score), each (N, 1)."""
        pooled = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in (self.LEVEL6, self.LEVEL7):
                pooled.append(x.mean(dim=(2, 3)))  # SPSP(P=1, "avg") is a global average
        f6, f7 = self.dr6(pooled[0]), self.dr7(pooled[1])
        return self.regr6(f6), self.regr7(f7), self.regression(torch.cat([f6, f7], dim=1))


class LinearityIQA(Metric):
    """LinearityIQA as a metric: images in [0, 1] -> ``k * s + b`` per image, shape (N,).

    Args:
        spec: the metric's declared facts.
        net: the network, with the released parameters or random ones.
        k: slope of the released linear map (``checkpoint["k"][0]``).
        b: intercept of the released linear map (``checkpoint["b"][0]``).
        input_size: (H, W) every image is resized to; ``None`` keeps each image's own size.
    """

    def __init__(
        self,
        spec: MetricSpec,
        net: LinearityNet,
        k: float = 1.0,
        b: float = 0.0,
        input_size: tuple[int, int] | None = INPUT_SIZE,
    ) -> None:
        super().__init__(spec)
        self.net = net
        self.k = float(k)
        self.b = float(b)
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None:
            x = resize_bilinear(x, self.input_size)
        s = self.net((x - self.mean) / self.std)[-1]
        return (s * self.k + self.b).reshape(-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k:.6g}, b={self.b:.6g}, input_size={self.input_size}"


def linear_mapping(checkpoint: Any, path: str | Path) -> tuple[float, float]:
    """``(k[0], b[0])`` of a released checkpoint: the map the authors' test code applies to the score."""
    if not isinstance(checkpoint, Mapping) or "k" not in checkpoint or "b" not in checkpoint:
        raise ValueError(
            f"{path} has no 'k'/'b' linear mapping next to 'model'; the released {LINEARITY_FILE} has both. "
            "Check that it is the right file."
        )
    return float(checkpoint["k"][0]), float(checkpoint["b"][0])


def load_linearity(path: str | Path) -> tuple[LinearityNet, float, float]:
    """The network (loaded strictly) and the linear map ``(k, b)`` of a released checkpoint."""
    checkpoint = load_release_checkpoint(path, LINEARITY_RELEASE)
    net = LinearityNet()
    net.load_state_dict(state_dict_from(checkpoint, "model", path), strict=True)
    k, b = linear_mapping(checkpoint, path)
    log.debug("LinearityIQA loaded from %s (k=%g, b=%g)", path, k, b)
    return net.eval(), k, b


@metric(SPEC)
def build_linearity(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
    """Random mode: random ResNeXt-101 and heads, identity mapping, no download."""
    if random:
        return LinearityIQA(spec, LinearityNet().eval())
    path = resolve_release_file(LINEARITY_FILE, weights_dir, LINEARITY_URLS, LINEARITY_RELEASE)
    net, k, b = load_linearity(path)
    return LinearityIQA(spec, net, k, b)
