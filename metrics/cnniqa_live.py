"""CNNIQA trained on LIVE: L. Kang, P. Ye, Y. Li and D. Doermann, "Convolutional neural networks
for no-reference image quality assessment", CVPR 2014.

The network and its preprocessing follow the weights' own release, Dingquan Li's PyTorch
implementation (https://github.com/lidq92/CNNIQA, ``test_demo.py`` and ``IQADataset.py``):

1. grayscale: ITU-R BT.601 luma exactly as PIL's ``convert("L")`` computes it, rounded to 8 bits
   (the rounding passes gradients straight through; ``round_luma=False`` skips it);
2. non-overlapping 32x32 patches at offsets 0, 32, ... strictly below ``side - 32`` (the release's
   loop, which leaves out a last patch that would end exactly on the border);
3. local contrast normalisation of each patch on its own: 3x3 mean and standard deviation with
   symmetric borders, ``(I - mean) / (std + 1)``;
4. conv 50x7x7, global max and min pooling, fc 800, ReLU, fc 800, ReLU, fc 1 (dropout is a
   training-time layer and is off);
5. the image score is the mean of its patch scores.

The score is a predicted LIVE DMOS: lower is better. Its bounds are LIVE's nominal DMOS scale
(0, 100); the realigned DMOS the network was trained on lie roughly within it.

Weights: ``CNNIQA-LIVE.pth`` is the file ``models/CNNIQA-LIVE`` of that repository (the same
bytes under a ``.pth`` name). It is resolved through :mod:`metrics.weights`: an explicit folder
(``weights=PATH`` / ``--weights-dir``), then ``$IQA_ROBUSTNESS_WEIGHTS`` (flat or under
``original/``), then pyiqa's cache (``$TORCH_HOME/hub/pyiqa``); when online and the file is nowhere
on disk it is downloaded from the repository into that cache. It is loaded strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import Metric, MetricSpec
from .registry import metric
from .weights import resolve_weight_file

WEIGHT_FILE = "CNNIQA-LIVE.pth"
WEIGHT_URL = "https://raw.githubusercontent.com/lidq92/CNNIQA/master/models/CNNIQA-LIVE"
PATCH = 32

# PIL's fixed-point BT.601 weights: L = (19595 R + 38470 G + 7471 B + 2**15) >> 16
_LUMA = (19595 / 65536, 38470 / 65536, 7471 / 65536)

SPEC = MetricSpec(
    name="cnniqa-live",
    kind="nr-image",
    lower_better=True,
    bounds=(0.0, 100.0),
    differentiable=True,
    min_side=PATCH + 1,
    weight_files=(WEIGHT_FILE,),
    source="own",
    description="CNNIQA (Kang et al., CVPR 2014) trained on LIVE, predicted DMOS (lidq92/CNNIQA weights)",
)


class CNNIQANet(nn.Module):
    """Kang et al.'s patch network: conv 50x7x7, max+min pooling, fc 800-800-1."""

    def __init__(self, kernel_size: int = 7, n_kernels: int = 50, n1: int = 800, n2: int = 800) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, n_kernels, kernel_size)
        self.fc1 = nn.Linear(2 * n_kernels, n1)
        self.fc2 = nn.Linear(n1, n2)
        self.fc3 = nn.Linear(n2, 1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(P, 1, 32, 32) normalised patches -> (P,) patch scores."""
        h = self.conv1(patches)
        h = torch.cat([h.amax(dim=(-2, -1)), h.amin(dim=(-2, -1))], dim=1)
        h = F.relu(self.fc1(h))
        h = F.relu(self.fc2(h))
        return self.fc3(h).squeeze(1)


def luma(x: torch.Tensor, round_to_8bit: bool = True) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) BT.601 luma as PIL's ``convert("L")``.

    Rounding to the 8-bit grid uses a straight-through gradient, so attacks still see the
    gradient of the unrounded luma.
    """
    weights = torch.tensor(_LUMA, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    y = (x.double() * weights).sum(dim=1, keepdim=True)
    if round_to_8bit:
        y = y + (torch.floor(y * 255.0 + 0.5) / 255.0 - y).detach()
    return y.to(x.dtype)


def nonoverlapping_patches(gray: torch.Tensor, size: int = PATCH) -> tuple[torch.Tensor, int]:
    """(N, 1, H, W) -> ((N * P, 1, size, size) patches in row-major order, P).

    Offsets 0, size, ... strictly below ``side - size``, as the released test code crops.
    """
    n, _, h, w = gray.shape
    rows, cols = (h - 1) // size, (w - 1) // size
    if rows < 1 or cols < 1:
        raise ValueError(f"cnniqa-live needs images larger than {size}x{size} pixels, got {h}x{w}")
    crop = gray[..., : rows * size, : cols * size]
    patches = crop.reshape(n, rows, size, cols, size).permute(0, 1, 3, 2, 4)
    return patches.reshape(n * rows * cols, 1, size, size), rows * cols


def local_normalisation(patches: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """(I - mean) / (std + c) over 3x3 windows, each patch padded by its own border pixels.

    One pixel of symmetric padding (scipy ``boundary="symm"``) repeats the border pixel, which is
    ``replicate`` padding. The square root is guarded so flat windows get a zero, finite gradient.
    """
    padded = F.pad(patches, (1, 1, 1, 1), mode="replicate")
    mean = F.avg_pool2d(padded, 3, stride=1)
    mean_sq = F.avg_pool2d(padded.square(), 3, stride=1)
    var = (mean_sq - mean.square()).clamp_min(0.0)
    positive = var > 0
    std = torch.where(positive, torch.where(positive, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))
    return (patches - mean) / (std + c)


class CNNIQALive(Metric):
    """CNNIQA with the LIVE weights of the lidq92/CNNIQA release; raw score = predicted DMOS."""

    def __init__(self, spec: MetricSpec = SPEC, round_luma: bool = True) -> None:
        super().__init__(spec)
        self.net = CNNIQANet()
        self.round_luma = round_luma

    def load_weights(self, path: str | Path) -> None:
        """Load the released state dict strictly (every key and shape must match)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        patches, per_image = nonoverlapping_patches(luma(x, self.round_luma))
        patch_scores = self.net(local_normalisation(patches))
        return patch_scores.view(x.shape[0], per_image).mean(dim=1)


@metric(SPEC)
def _build(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
    model = CNNIQALive(spec)
    if not random:
        model.load_weights(resolve_weight_file(WEIGHT_FILE, weights_dir, urls=(WEIGHT_URL,)))
    return model
