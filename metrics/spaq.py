"""SPAQ baseline: Fang, Zhu, Zeng, Ma and Wang, "Perceptual Quality Assessment of Smartphone
Photography", CVPR 2020 (github.com/h4nwei/SPAQ, model BL).

No-reference image quality: a ResNet-50 whose classifier is replaced by one linear output, applied to
224x224 patches and averaged. The released ``BL_release.pt`` was trained on the SPAQ database (MOS
0 to 100). Higher is better.

Preprocessing follows the authors' ``BL_demo.py`` and ``Prepare_image.py``: the shorter side is
resized to 512 (torchvision ``Resize(512)``, bilinear), 224x224 patches are cut on a grid with stride
112, plus a last row and column flush with the bottom and right edges, and the score is the mean
of the patch scores. Patches stay in [0, 1]: the original applies no ImageNet normalisation.

Two differences from the original, both stated here:

* The original resizes with PIL (antialiased, 8-bit output); this uses
  :func:`torch.nn.functional.interpolate` (bilinear, ``antialias=True``) on the float image, so the
  pipeline is differentiable.
* The original returns images with a side under 512 px unresized, and then fails on them (its
  patch code expects a tensor). Here such images are resized up to a 512 px shorter side, as the
  MSU-group wrappers of this metric do (``transforms.Resize(512)`` on every image);
  ``resize_small=False`` keeps them at their own size instead (each side must then be >= 224).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50

from ._released import (
    google_drive_url,
    load_release_checkpoint,
    resize_bilinear,
    resolve_release_file,
    shorter_side_size,
    state_dict_from,
)
from .base import Metric, MetricSpec
from .registry import metric

log = logging.getLogger(__name__)

SPAQ_FILE = "BL_release.pt"
#: The authors' link in the README of h4nwei/SPAQ; no checksum is published.
SPAQ_RELEASE = "https://drive.google.com/file/d/1pXjXAIItViTFs7qUBY-b11WY50mzoVM2/view"
SPAQ_URLS = (google_drive_url("1pXjXAIItViTFs7qUBY-b11WY50mzoVM2"),)
SHORTER_SIDE = 512
PATCH_SIZE = 224
PATCH_STRIDE = PATCH_SIZE // 2

SPEC = MetricSpec(
    name="spaq",
    kind="nr-image",
    lower_better=False,
    bounds=(0.0, 100.0),
    differentiable=True,
    weight_files=(SPAQ_FILE,),
    heavy=True,
    source="own",
    description="SPAQ baseline (Fang et al., CVPR 2020): ResNet-50 on 224px patches of the 512px image; SPAQ",
    aliases=("spaq-bl",),
)


class SPAQBaseline(nn.Module):
    """The original ``Baseline``: torchvision ResNet-50 with ``fc`` = Linear(2048, 1).

    State-dict keys are those of ``BL_release.pt``'s ``state_dict``: ``backbone.conv1.weight`` ...
    ``backbone.fc.bias``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = resnet50(weights=None)
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patches (P, 3, 224, 224) in [0, 1] -> patch scores (P, 1)."""
        return self.backbone(x)


def patch_origins(length: int, patch: int = PATCH_SIZE, stride: int = PATCH_STRIDE) -> list[int]:
    """Start offsets of the patches along one side, as the original ``generate_patches``.

    A regular grid ``0, stride, 2 * stride, ...`` up to ``length - patch``, plus ``length - patch``
    itself when the grid misses it (the last patch is flush with the edge).
    """
    if length < patch:
        raise ValueError(f"an image side of {length} px is shorter than the {patch} px SPAQ patch")
    last = length - patch
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def extract_patches(x: torch.Tensor, patch: int = PATCH_SIZE, stride: int = PATCH_STRIDE) -> torch.Tensor:
    """(N, 3, H, W) -> (N, P, 3, patch, patch), rows first as in the original."""
    rows, cols = patch_origins(x.shape[-2], patch, stride), patch_origins(x.shape[-1], patch, stride)
    tiles = [x[..., i : i + patch, j : j + patch] for i in rows for j in cols]
    return torch.stack(tiles, dim=1)


class SPAQ(Metric):
    """The SPAQ baseline as a metric: images in [0, 1] -> mean patch score per image, shape (N,).

    Args:
        spec: the metric's declared facts.
        net: the network, with the released parameters or random ones.
        resize_small: resize images with a side under 512 px up to a 512 px shorter side (default,
            as the MSU-group wrappers); ``False`` scores them at their own size.
    """

    def __init__(self, spec: MetricSpec, net: SPAQBaseline, resize_small: bool = True) -> None:
        super().__init__(spec)
        self.net = net
        self.resize_small = resize_small

    def score(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.resize_small or min(height, width) >= SHORTER_SIDE:
            x = resize_bilinear(x, shorter_side_size(height, width, SHORTER_SIDE))
        patches = extract_patches(x)
        n, p = patches.shape[:2]
        return self.net(patches.flatten(0, 1)).reshape(n, p).mean(dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, resize_small={self.resize_small}"


def load_spaq(path: str | Path) -> SPAQBaseline:
    """A :class:`SPAQBaseline` with the parameters of a released ``BL_release.pt``, loaded strictly."""
    net = SPAQBaseline()
    state = state_dict_from(load_release_checkpoint(path, SPAQ_RELEASE), "state_dict", path)
    net.load_state_dict(state, strict=True)
    log.debug("SPAQ baseline loaded from %s", path)
    return net.eval()


@metric(SPEC)
def build_spaq(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
    """Random mode: random ResNet-50 (torchvision ``weights=None``), no download."""
    if random:
        return SPAQ(spec, SPAQBaseline().eval())
    path = resolve_release_file(SPAQ_FILE, weights_dir, SPAQ_URLS, SPAQ_RELEASE)
    return SPAQ(spec, load_spaq(path))
