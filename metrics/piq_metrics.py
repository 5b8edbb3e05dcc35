"""piq's image metrics, registered as ``piq-<name>``, one line each.

Implementation: piq, PyTorch Image Quality (S. Kastryulin, J. Zakirov, D. Prokopenko, D. V.
Dylov, "PyTorch Image Quality: Metrics for Image Quality Assessment", arXiv:2208.14818, 2022;
https://github.com/photosynthesis-team/piq), version 0.8, licensed Apache-2.0: a core dependency,
so these metrics run without pyiqa (docs/licences.md).

A metric that pyiqa also has keeps pyiqa's name after the prefix (``piq-ssim`` is SSIM as piq
computes it, ``ssim`` as pyiqa does): the two implementations differ in details (colour handling,
downsampling, rounding), so their scores are reported under their own names and never mixed.
Each is called with ``data_range=1.0`` and ``reduction="none"`` and piq's defaults otherwise;
the descriptions say what those defaults are where they matter. Facts were checked on piq 0.8.0
on CPU: ``min_side`` is the smallest square side that scores (for LPIPS and DISTS, whose files
were not at hand, the side at which VGG-16's last block still has one pixel), the bounds are the
metric's range (PSNR: pyiqa's ~0-40 dB; piq caps identical images at 80 dB).

Left out: ``TV`` (total variation grows with the image size and says nothing of quality by
itself), ``PieAPP`` and ``CLIPIQA`` (weights not checked here), and the set metrics (FID, KID,
IS, MSID, GS, PR), which score sets of images, not images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._library import TORCHVISION, VGG16, Function, register_library_metric

_RELEASES = "https://github.com/photosynthesis-team/piq/releases/download/"


def _function(name: str, **options: Any) -> Callable[[], nn.Module]:
    """``piq.<name>(images..., data_range=1.0, reduction="none", **options)`` as a scorer factory."""

    def make() -> nn.Module:
        import piq

        return Function(getattr(piq, name), data_range=1.0, reduction="none", **options)

    return make


def _module(name: str) -> Callable[[], nn.Module]:
    """``piq.<name>(reduction="none")``, a piq loss module, as a scorer factory."""

    def make() -> nn.Module:
        import piq

        return getattr(piq, name)(reduction="none")

    return make


def _fr(name: str, bounds: tuple[float, float], scorer: Callable[[], nn.Module], **facts: Any) -> None:
    register_library_metric("piq", f"piq-{name}", bounds, scorer, kind="fr", **facts)


# fmt: off
# -- full-reference, no parameter files
_fr("psnr", (0, 40), _function("psnr"), description="PSNR (piq) on RGB, dB")
_fr("ssim", (0, 1), _function("ssim"), min_side=11,
    description="SSIM (Wang et al., IEEE TIP 2004) (piq): RGB channels averaged, downsampled as the authors' "
    "MATLAB code does")
_fr("ms_ssim", (0, 1), _function("multi_scale_ssim"), min_side=161,
    description="MS-SSIM (Wang et al., Asilomar 2003) (piq), five scales")
_fr("iw_ssim", (0, 1), _function("information_weighted_ssim"), min_side=161,
    description="IW-SSIM (Wang & Li, IEEE TIP 2011) (piq), information-weighted SSIM")
_fr("vif", (0, 1), _function("vif_p"), min_side=48,
    description="VIF (Sheikh & Bovik, IEEE TIP 2006) (piq), pixel domain")
_fr("fsim", (0, 1), _function("fsim"), min_side=2,
    description="FSIMc (Zhang et al., IEEE TIP 2011) (piq), feature similarity with chroma")
_fr("srsim", (0, 1), _function("srsim"), min_side=48,
    description="SR-SIM (Zhang & Li, ICIP 2012) (piq), spectral residual similarity")
_fr("gmsd", (0, 1), _function("gmsd"), lower_better=True,
    description="GMSD (Xue et al., IEEE TIP 2014) (piq), gradient magnitude deviation")
_fr("ms_gmsd", (0, 1), _function("multi_scale_gmsd"), lower_better=True, min_side=17,
    description="MS-GMSD (Zhang et al., ICASSP 2017) (piq), GMSD over four scales, luma")
_fr("vsi", (0, 1), _function("vsi"), description="VSI (Zhang et al., IEEE TIP 2014) (piq), visual saliency index")
_fr("mdsi", (0, 1), _function("mdsi"), lower_better=True,
    description="MDSI (Nafchi et al., IEEE Access 2016) (piq), mean deviation similarity")
_fr("haarpsi", (0, 1), _function("haarpsi"), min_side=16,
    description="HaarPSI (Reisenhofer et al., Signal Process. Image Commun. 2018) (piq)")
_fr("dss", (0, 1), _function("dss"), min_side=32,
    description="DSS (Balanov et al., ICIP 2015) (piq), DCT subband similarity")

# -- deep features: piq's release files and torchvision's ImageNet VGG-16, fetched through torch.hub
_fr("lpips", (0, 1), _module("LPIPS"), lower_better=True, min_side=16,
    weights={"lpips_weights.pt": _RELEASES + "v0.4.0/lpips_weights.pt", VGG16: TORCHVISION + VGG16},
    description="LPIPS (Zhang et al., CVPR 2018) (piq), VGG-16")
_fr("dists", (0, 1), _module("DISTS"), lower_better=True, min_side=16,
    weights={"dists_weights.pt": _RELEASES + "v0.4.1/dists_weights.pt", VGG16: TORCHVISION + VGG16},
    description="DISTS (Ding et al., IEEE TPAMI 2020) (piq), structure and texture similarity")

# -- no-reference. piq 0.8 multiplies its float64 support vectors by coefficients cast to the
#    image's type, which float32 images make fail; the images are scored in float64.
register_library_metric(
    "piq", "piq-brisque", (0, 150), _function("brisque", dtype=torch.float64), lower_better=True,
    weights={"brisque_svm_weights.pt": _RELEASES + "v0.4.0/brisque_svm_weights.pt"},
    description="BRISQUE (Mittal et al., IEEE TIP 2012) (piq), SVR on NSS features",
)
# fmt: on
