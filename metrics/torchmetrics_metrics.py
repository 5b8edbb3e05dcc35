"""torchmetrics' image metrics, registered as ``tm-<name>``, one line each.

Implementation: TorchMetrics (N. S. Detlefsen et al., "TorchMetrics - Measuring Reproducibility in
PyTorch", JOSS 7(70), 4101, 2022; https://github.com/Lightning-AI/torchmetrics), version 1.9,
licensed Apache-2.0: a core dependency, so these metrics run without pyiqa (docs/licences.md).

Names follow ``metrics/piq_metrics.py``: the prefix, then pyiqa's name of the same metric, and the
scores stay under their own name. The functions are called with ``data_range=1.0`` and
``reduction="none"``; LPIPS and DISTS are torchmetrics' networks built once and called per batch
(torchmetrics' stateful classes accumulate every score of a run and its functions rebuild the
network on every call; the network is the same). LPIPS's linear layers and DISTS's weights ship
inside torchmetrics; their ImageNet backbones come from torchvision through torch.hub. Facts were
checked on torchmetrics 1.9.0 on CPU (``min_side``: the smallest square side that scores, with
random backbones for LPIPS and DISTS).

Left out: the set metrics (FID, KID, IS, MiFID), the remote-sensing ones (ERGAS, SAM, D_lambda,
...), ``tv`` (see ``metrics/piq_metrics.py``), ``uqi`` (0/0 on flat regions), ``vif`` (its input
gradient fails on an in-place operation in torchmetrics 1.9), and CLIP-IQA and ARNIQA, which need
transformers or downloaded weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._library import ALEXNET, TORCHVISION, VGG16, Function, register_library_metric


def _function(name: str, **options: Any) -> Callable[[], nn.Module]:
    """``torchmetrics.functional.image.<name>(distorted, reference, data_range=1.0, reduction="none", **options)``."""

    def make() -> nn.Module:
        from torchmetrics.functional import image

        return Function(getattr(image, name), data_range=1.0, reduction="none", **options)

    return make


class _LPIPS(nn.Module):
    """torchmetrics' LPIPS network on [0, 1] images, one distance per image pair."""

    def __init__(self, net_type: str) -> None:
        super().__init__()
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        self.net = LearnedPerceptualImagePatchSimilarity(net_type=net_type, normalize=True).net

    def forward(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.net(distorted, reference, normalize=True).flatten()


class _DISTS(nn.Module):
    """torchmetrics' DISTS network, one distance per image pair."""

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.functional.image.dists import DISTSNetwork

        self.net = DISTSNetwork()

    def forward(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        # always outside inference mode: scores may meet autograd later (no graph is built under no_grad)
        return self.net(distorted, reference, require_grad=True).reshape(-1)


def _fr(name: str, bounds: tuple[float, float], scorer: Callable[[], nn.Module], **facts: Any) -> None:
    register_library_metric("torchmetrics", f"tm-{name}", bounds, scorer, kind="fr", **facts)


# fmt: off
_fr("psnr", (0, 40), _function("peak_signal_noise_ratio", dim=(1, 2, 3)),
    description="PSNR (torchmetrics) on RGB, dB; identical images score inf")
_fr("ssim", (0, 1), _function("structural_similarity_index_measure"), min_side=7,
    description="SSIM (Wang et al., IEEE TIP 2004) (torchmetrics): Gaussian 11x11 window on RGB, no downsampling")
_fr("ms_ssim", (0, 1), _function("multiscale_structural_similarity_index_measure"), min_side=176,
    description="MS-SSIM (Wang et al., Asilomar 2003) (torchmetrics), five scales")
_fr("lpips", (0, 1), lambda: _LPIPS("alex"), lower_better=True, min_side=31,
    weights={ALEXNET: TORCHVISION + ALEXNET},
    description="LPIPS (Zhang et al., CVPR 2018) (torchmetrics), AlexNet")
_fr("lpips-vgg", (0, 1), lambda: _LPIPS("vgg"), lower_better=True, min_side=16,
    weights={VGG16: TORCHVISION + VGG16},
    description="LPIPS (Zhang et al., CVPR 2018) (torchmetrics), VGG-16")
_fr("dists", (0, 1), _DISTS, lower_better=True, weights={VGG16: TORCHVISION + VGG16},
    description="DISTS (Ding et al., IEEE TPAMI 2020) (torchmetrics), structure and texture similarity")
# fmt: on
