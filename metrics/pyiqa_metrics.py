"""pyiqa's image metrics, no-reference and full-reference, registered by their pyiqa names, one line each.

Implementation: pyiqa (C. Chen et al., "TOPIQ: A top-down approach from semantics to distortions
for image quality assessment", IEEE TIP 2024; https://github.com/chaofengc/IQA-PyTorch), version
0.1.16. Each metric's facts live in the table below as data; nothing is built until
:func:`metrics.create_metric` is called.

Facts come from pyiqa's ``DEFAULT_CONFIGS`` (``lower_better``; ``bounds`` = ``score_range``
with the ``~`` "about" marks dropped) except where pyiqa leaves an end open: there the table
documents the approximate range it uses. ``weight_files`` are the files pyiqa loads for the
metric (pyiqa cache names; CLIP models by their OpenAI file names; Hugging Face repository ids
for models loaded with ``from_pretrained``). ``differentiable=False``
marks metrics whose input gradient is zero or undefined (checked on small inputs).

Left out on purpose: ``fid``, ``sfid``, ``fid_dinov2`` and ``inception_score`` score image
*sets*, not images; ``clipscore`` needs a caption per image.

A pyiqa no-reference metric without a line here (one newer than this table) is still found by
its pyiqa name (:func:`iqa_robustness.metrics.pyiqa_names.register_pyiqa_name`): direction and bounds come from pyiqa's
``DEFAULT_CONFIGS``, it is built through the same :class:`PyiqaMetric` adapter, and a warning
says that its minimum input side and differentiability are unchecked. The table stays for the
metrics whose facts were measured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ._pyiqa_loading import DownloadBlockedError, loading
from .base import Metric, MetricSpec
from .registry import register_metric
from .weights import MissingWeightsError

log = logging.getLogger(__name__)

__all__ = ["DownloadBlockedError", "PyiqaEntropy", "PyiqaMetric"]

#: pyiqa metrics the suite cannot attack, and why (the full-reference ones are added below their table)
LEFT_OUT = {
    "fid": "it scores a set of images against another set, not one image",
    "sfid": "it scores a set of images against another set, not one image",
    "fid_dinov2": "it scores a set of images against another set, not one image",
    "inception_score": "it scores a set of images, not one image",
    "clipscore": "it needs a caption for every image",
}


class PyiqaMetric(Metric):
    """A pyiqa metric behind the suite's :class:`~metrics.base.Metric` interface.

    A full-reference one is called on the distorted batch while its reference is bound
    (:meth:`~metrics.base.Metric.reference`), and hands pyiqa ``(distorted, reference)``.

    Wraps ``pyiqa.create_metric(name, as_loss=True, loss_reduction="none")``: pyiqa's loss mode
    returns the raw per-image score unchanged (no sign flip for lower-better metrics, no
    reduction with ``loss_reduction="none"`` and no loss weight) and skips pyiqa's [0, 1] input
    check, so out-of-range images (unclamped universal perturbations) are scored as they are.
    pyiqa enables gradients whenever ``as_loss`` is set; here the caller's grad mode decides.
    """

    def __init__(
        self,
        spec: MetricSpec,
        device: torch.device,
        weights_dir: Path | None = None,
        random: bool = False,
        *,
        pyiqa_name: str | None = None,
        full_checkpoint: bool = False,
        per_image: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(spec, "random" if random else "pretrained")
        self.pyiqa_name = pyiqa_name or spec.name
        self.per_image = per_image
        self.iqa = _create(
            self.pyiqa_name, device, weights_dir, random, full_checkpoint, dict(options or {}), spec.weight_files
        )

    def score(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        self.iqa.as_loss = torch.is_grad_enabled()
        # pyiqa's full-reference call is iqa(distorted, reference)
        pair = (self.bound_reference(x),) if self.spec.is_full_reference else ()
        if self.per_image:
            one = [_first(self.iqa(x[i : i + 1], *(r[i : i + 1] for r in pair))) for i in range(n)]
            out = torch.cat([score.reshape(1) for score in one])
        else:
            out = _first(self.iqa(x, *pair))
        if out.numel() != n:
            raise RuntimeError(f"{self.name}: pyiqa returned {out.numel()} scores for {n} images")
        return out.reshape(n).to(x.dtype)


class PyiqaEntropy(PyiqaMetric):
    """pyiqa's ``entropy`` with its histogram counted by ``torch.bincount``: the same values, 30x faster.

    pyiqa builds the grey-level histogram as a one-hot tensor of N x H x W x 256 int64s (1 GiB for
    eight 256 x 256 images) and sums it; a query-based attack scores thousands of batches, so here
    the counts come from one ``bincount`` over image-offset bins instead. Everything else is pyiqa's
    own: its Y channel (``to_y_channel``, YIQ, rounded to 0..255), its arguments, its ``-sum(p
    log2(p + eps))``. The values equal pyiqa's exactly (``tests/test_pyiqa_metrics.py``).
    """

    def score(self, x: torch.Tensor) -> torch.Tensor:
        from pyiqa.utils.color_util import to_y_channel

        opts = {"data_range": 255.0, "eps": 1e-8, "color_space": "yiq", **getattr(self.iqa.net, "kwargs", {})}
        bins = int(opts["data_range"] + 1)
        y = to_y_channel(x, opts["data_range"], opts["color_space"]) if x.shape[1] == 3 else x
        levels = y.detach().long().flatten(1)
        if levels.numel() and (int(levels.min()) < 0 or int(levels.max()) >= bins):
            raise ValueError(f"{self.name}: grey levels outside 0..{bins - 1}; clamp the images to [0, 1] first")
        n = levels.shape[0]
        offsets = torch.arange(n, device=levels.device).unsqueeze(1) * bins
        hist = torch.bincount((levels + offsets).flatten(), minlength=n * bins).reshape(n, bins)
        hist = hist / hist.sum(dim=1, keepdim=True)
        return -torch.sum(hist * torch.log2(hist + opts["eps"]), dim=1).to(x.dtype)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


def _network_errors() -> tuple[type[BaseException], ...]:
    from urllib.error import URLError

    errors: list[type[BaseException]] = [URLError, ConnectionError, TimeoutError]
    try:
        from huggingface_hub import errors as hf_errors

        errors += [hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, hf_errors.HfHubHTTPError]
    except ImportError:  # pragma: no cover - pyiqa depends on huggingface_hub
        pass
    return tuple(errors)


def _create(
    name: str,
    device: torch.device,
    weights_dir: Path | None,
    random: bool,
    full_checkpoint: bool,
    options: dict[str, Any],
    weight_files: tuple[str, ...] = (),
) -> torch.nn.Module:
    import pyiqa

    try:
        with loading(name, weights_dir, random, full_checkpoint):
            return pyiqa.create_metric(name, as_loss=True, loss_reduction="none", device=device, **options)
    except MissingWeightsError as exc:
        if str(exc).startswith(f"{name}:"):
            raise
        raise type(exc)(f"{name}: {exc}") from exc
    except (*_network_errors(), OSError) as exc:
        if not _is_network_error(exc):
            raise
        if random:
            raise DownloadBlockedError(
                f"{name}: random-weights mode never downloads, but building it needs files from the "
                f"network ({type(exc).__name__}: {exc}). This metric has no random-weights build."
            ) from exc
        files = f" (it loads {', '.join(weight_files)})" if weight_files else ""
        raise MissingWeightsError(
            f"{name}: a file it needs could not be fetched{files} ({type(exc).__name__}: {exc}). Fetch it once "
            "with network access (pyiqa caches it), or use weights='random' for a smoke run."
        ) from exc


def _is_network_error(exc: BaseException) -> bool:
    """Network and hub errors, including transformers' OSError for an uncached hub model."""
    if isinstance(exc, _network_errors()):
        return True
    text = str(exc).lower()
    return any(key in text for key in ("huggingface.co", "couldn't connect", "offline mode", "urlopen error"))


# ----------------------------------------------------------------------------------------------
# The table: one line per metric.
# ----------------------------------------------------------------------------------------------
_CLIP_RN50 = "RN50.pt"
_CLIP_VITB32 = "ViT-B-32.pt"
_CLIP_VITL14 = "ViT-L-14.pt"


def _nr(
    name: str,
    bounds: tuple[float, float],
    weight_files: tuple[str, ...] = (),
    *,
    lower_better: bool = False,
    differentiable: bool = True,
    min_side: int | None = None,
    fixed_size: tuple[int, int] | None = None,
    heavy: bool = False,
    needs_gpu: bool = False,
    full_checkpoint: bool = False,
    per_image: bool = False,
    description: str = "",
    kind: str = "nr-image",
) -> None:
    """Register one pyiqa metric (no-reference unless ``kind="fr"``, see :func:`_fr`).

    The registry name is pyiqa's name in lower case (the registry is case-insensitive).
    ``full_checkpoint``: pyiqa loads the metric's checkpoint strictly over the whole network, so
    the ImageNet backbone initialisation is redundant and skipped. ``per_image``: pyiqa's
    network scores only the first image of a batch, so images are fed one at a time.
    """
    spec = MetricSpec(
        name=name.lower(),
        kind=kind,  # type: ignore[arg-type]
        lower_better=lower_better,
        bounds=(float(bounds[0]), float(bounds[1])),
        differentiable=differentiable,
        min_side=min_side,
        fixed_size=fixed_size,
        weight_files=weight_files,
        heavy=heavy,
        needs_gpu=needs_gpu,
        source="pyiqa",
        description=description,
    )
    register_metric(spec, _builder(name, full_checkpoint=full_checkpoint, per_image=per_image))


def _fr(name: str, bounds: tuple[float, float], weight_files: tuple[str, ...] = (), **facts: Any) -> None:
    """Register one pyiqa full-reference metric: S(reference, distorted), called as pyiqa's ``iqa(distorted, ref)``."""
    _nr(name, bounds, weight_files, kind="fr", **facts)


def _builder(pyiqa_name: str, *, full_checkpoint: bool = False, per_image: bool = False):
    """The registry builder of a pyiqa metric: the :class:`PyiqaMetric` adapter on pyiqa's ``pyiqa_name``."""
    adapter = PyiqaEntropy if pyiqa_name == "entropy" else PyiqaMetric

    def build(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
        return adapter(
            spec,
            device,
            weights_dir,
            random,
            pyiqa_name=pyiqa_name,
            full_checkpoint=full_checkpoint,
            per_image=per_image,
        )

    return build


# One line per metric. Facts checked on pyiqa 0.1.16 with random weights on CPU: min_side is set
# where smaller inputs fail; needs_gpu where one forward+backward pass of a 299x299 image takes
# more than ~20 s on two CPU cores (ilniqe ~28 s, tres ~42 s, maniqa ~110 s); heavy for large
# transformer/CLIP models and slow multi-crop CNNs (hyperiqa ~6 s).
# fmt: off
# -- classical: hand-crafted features; the parameter files are fitted statistics, not networks
_nr("niqe", (0, 100), ("niqe_modelparameters.mat",), lower_better=True, min_side=96,
    description="NIQE (Mittal et al., IEEE SPL 2013), natural-scene-statistics distance")
_nr("niqe_matlab", (0, 100), ("niqe_matlab_params.mat",), lower_better=True, min_side=96,
    description="NIQE with the MATLAB release's parameters")
_nr("ilniqe", (0, 100), ("ILNIQE_templateModel.mat",), lower_better=True, fixed_size=(524, 524),
    needs_gpu=True, description="IL-NIQE (Zhang et al., IEEE TIP 2015); resizes to 524x524")
_nr("brisque", (0, 150), ("brisque_svm_weights.pth",), lower_better=True,
    description="BRISQUE (Mittal et al., IEEE TIP 2012), SVR on NSS features")
_nr("brisque_matlab", (0, 100), ("brisque_matlab.mat",), lower_better=True,
    description="BRISQUE with the MATLAB release's model")
_nr("piqe", (0, 100), (), lower_better=True, differentiable=False, min_side=16,
    description="PIQE (Venkatanath et al., NCC 2015); 16x16 block classification, zero input gradient")
_nr("nrqm", (0, 10), ("NRQM_model.mat",), differentiable=False,
    description="NRQM (Ma et al., CVIU 2017); its features pass through numpy")
# pyiqa declares '~0, ~'. PI = ((10 - NRQM) + NIQE) / 2 with NRQM in [0, 10] and NIQE in ~[0, 100].
_nr("pi", (0, 55), ("niqe_modelparameters.mat", "NRQM_model.mat"), lower_better=True, differentiable=False,
    min_side=96, description="Perceptual Index (Blau et al., PIRM 2018) = (10 - NRQM + NIQE) / 2")
_nr("entropy", (0, 8), (), differentiable=False,
    description="grey-level histogram entropy; histogram counts have no input gradient")

# -- CNNs and transformers
_nr("cnniqa", (0, 1), ("CNNIQA_koniq10k-e6f14c91.pth",), min_side=7,
    description="CNNIQA (Kang et al., CVPR 2014), pyiqa's RGB KonIQ-10k retrain")
# 32x32 patches at offsets strictly below side - 32: a side must exceed 32
_nr("wadiqam_nr", (-1, 0.1), ("WaDIQaM-NR-koniq-aaffea29.pth",), min_side=33,
    description="WaDIQaM-NR (Bosse et al., IEEE TIP 2018), KonIQ-10k")
_nr("dbcnn", (0, 1), ("DBCNN_KonIQ10k-2de81c0a.pth", "DBCNN_scnn-7ea73d75.pth"), full_checkpoint=True,
    description="DBCNN (Zhang et al., IEEE TCSVT 2020), KonIQ-10k")
_nr("paq2piq", (0, 100), ("P2P_RoIPoolModel-fit.10.bs.120-ca69882e.pth",), full_checkpoint=True,
    description="PaQ-2-PiQ (Ying et al., CVPR 2020)")
_nr("hyperiqa", (0, 1), ("HyperIQA-resnet50-koniq10k-c96c41b1.pth",), heavy=True, full_checkpoint=True,
    description="HyperIQA (Su et al., CVPR 2020), KonIQ-10k; 25 crops of 224x224")
_nr("nima", (0, 10), ("NIMA_InceptionV2_ava-b0c77c00.pth",), full_checkpoint=True,
    description="NIMA (Talebi & Milanfar, IEEE TIP 2018), Inception-ResNet-v2, AVA")
_nr("nima-vgg16-ava", (0, 10), ("NIMA_VGG16_ava-dc4e8265.pth",), full_checkpoint=True,
    description="NIMA, VGG-16, AVA")
_nr("nima-koniq", (0, 1), ("NIMA_koniq-250367ae.pth",), full_checkpoint=True,
    description="NIMA, Inception-ResNet-v2, KonIQ-10k")
_nr("nima-spaq", (0, 1), ("NIMA-spaq-46a7fcb7.pth",), full_checkpoint=True,
    description="NIMA, Inception-ResNet-v2, SPAQ")
_nr("musiq", (0, 100), ("musiq_koniq_ckpt-e95806b9.pth",),
    description="MUSIQ (Ke et al., ICCV 2021), KonIQ-10k")
_nr("musiq-ava", (1, 10), ("musiq_ava_ckpt-e8d3f067.pth",), description="MUSIQ, AVA")
_nr("musiq-paq2piq", (0, 100), ("musiq_paq2piq_ckpt-364c0c84.pth",), description="MUSIQ, PaQ-2-PiQ")
_nr("musiq-spaq", (0, 100), ("musiq_spaq_ckpt-358bb6af.pth",), description="MUSIQ, SPAQ")
_nr("maniqa", (0, 1), ("ckpt_koniq10k.pt",), heavy=True, needs_gpu=True, full_checkpoint=True,
    description="MANIQA (Yang et al., CVPRW 2022), ViT-B/8, KonIQ-10k; 20 crops of 224x224")
_nr("maniqa-kadid", (0, 1), ("ckpt_kadid10k.pt",), heavy=True, needs_gpu=True, full_checkpoint=True,
    description="MANIQA, KADID-10k")
_nr("maniqa-pipal", (0, 1), ("MANIQA_PIPAL-ae6d356b.pth",), heavy=True, needs_gpu=True, full_checkpoint=True,
    description="MANIQA, PIPAL")
_nr("tres", (0, 100), ("tres_koniq-f0502926.pth",), heavy=True, needs_gpu=True, full_checkpoint=True,
    description="TReS (Golestaneh et al., WACV 2022), KonIQ-10k")
_nr("tres-flive", (0, 100), ("tres_flive-09b0de5b.pth",), heavy=True, needs_gpu=True, full_checkpoint=True,
    description="TReS, FLIVE")
_nr("topiq_nr", (0, 1), ("cfanet_nr_koniq_res50-9a73138b.pth",), full_checkpoint=True,
    description="TOPIQ-NR (Chen et al., IEEE TIP 2024), ResNet-50, KonIQ-10k")
_nr("topiq_nr-flive", (0, 1), ("cfanet_nr_flive_res50-ded1c74e.pth",), full_checkpoint=True,
    description="TOPIQ-NR, FLIVE")
_nr("topiq_nr-spaq", (0, 1), ("cfanet_nr_spaq_res50-a7f799ac.pth",), full_checkpoint=True,
    description="TOPIQ-NR, SPAQ")
_nr("topiq_iaa", (1, 10), ("cfanet_iaa_ava_swin-393b41b4.pth",), heavy=True, full_checkpoint=True,
    description="TOPIQ aesthetics, Swin-B, AVA")
_nr("topiq_iaa_res50", (1, 10), ("cfanet_iaa_ava_res50-3cd62bb3.pth",), full_checkpoint=True,
    description="TOPIQ aesthetics, ResNet-50, AVA")
# Face variants align faces with facexlib (numpy, one image at a time): no input gradient.
_FACEXLIB = ("detection_Resnet50_Final.pth", "parsing_parsenet.pth")
_nr("topiq_nr-face", (0, 1), ("topiq_nr_cgfiqa_res50-0a8b8e4f.pth", *_FACEXLIB), differentiable=False,
    full_checkpoint=True, per_image=True, description="TOPIQ-NR for faces (CGFIQA), ResNet-50")
_nr("topiq_nr-face-v1", (0, 1), ("topiq_nr_gfiqa_res50-d76bf1ae.pth", *_FACEXLIB), differentiable=False,
    full_checkpoint=True, per_image=True, description="TOPIQ-NR for faces (GFIQA), ResNet-50")
_nr("topiq_nr_swin-face", (0, 1), ("topiq_nr_gfiqa_swin-7bb80a60.pth", *_FACEXLIB), differentiable=False,
    heavy=True, full_checkpoint=True, per_image=True, description="TOPIQ-NR for faces (CGFIQA), Swin-B")
_nr("metaiqa", (0, 1), ("Metaiqa_livec.pth",), description="MetaIQA (Zhu et al., CVPR 2020), LIVE Challenge")
_nr("unique", (-3, 3), ("UNIQUE.pt",), full_checkpoint=True,
    description="UNIQUE (Zhang et al., IEEE TIP 2021)")
_nr("uranker", (-1, 2), ("URanker_ckpt-450eb36d.pth",),
    description="URanker (Guo et al., AAAI 2023), underwater image ranking")
_nr("arniqa", (0, 1), ("ARNIQA.pth", "regressor_koniq10k.pth"),
    description="ARNIQA (Agnolucci et al., WACV 2024), KonIQ-10k regressor")
for _ds, _file in [("live", "live"), ("csiq", "csiq"), ("tid", "tid2013"), ("kadid", "kadid10k"),
                   ("clive", "clive"), ("flive", "flive"), ("spaq", "spaq")]:
    _nr(f"arniqa-{_ds}", (0, 1), ("ARNIQA.pth", f"regressor_{_file}.pth"),
        description=f"ARNIQA, {_ds.upper()} regressor")

# -- CLIP-based (OpenAI CLIP files, cached in $TORCH_HOME/hub/clip)
_nr("clipiqa", (0, 1), (_CLIP_RN50,), heavy=True, description="CLIP-IQA (Wang et al., AAAI 2023), RN50")
_nr("clipiqa+", (0, 1), (_CLIP_RN50, "CLIP-IQA+_learned_prompts-603f3273.pth"), heavy=True,
    description="CLIP-IQA+ (learned prompts), RN50")
_nr("clipiqa+_rn50_512", (0, 1), (_CLIP_RN50, "CLIPIQA+_RN50_512-89f5d940.pth"), heavy=True,
    description="CLIP-IQA+, RN50 at 512 px")
_nr("clipiqa+_vitL14_512", (0, 1), (_CLIP_VITL14, "CLIPIQA+_ViTL14_512-e66488f2.pth"), heavy=True,
    description="CLIP-IQA+, ViT-L/14 at 512 px")
_nr("liqe", (1, 5), (_CLIP_VITB32, "liqe_koniq.pt"), heavy=True,
    description="LIQE (Zhang et al., CVPR 2023), KonIQ-10k")
_nr("liqe_mix", (1, 5), (_CLIP_VITB32, "liqe_mix.pt"), heavy=True, description="LIQE, mixed datasets")
_nr("laion_aes", (1, 10), (_CLIP_VITL14, "sac+logos+ava1-l14-linearMSE.pth"), heavy=True,
    description="LAION aesthetic predictor (CLIP ViT-L/14 + MLP)")
_nr("qualiclip", (0, 1), (_CLIP_RN50, "QualiCLIP.pth"), heavy=True,
    description="QualiCLIP (Agnolucci et al., 2024), opinion-unaware")
for _ds, _file in [("", "koniq"), ("-clive", "clive"), ("-flive", "flive"), ("-spaq", "spaq")]:
    _nr(f"qualiclip+{_ds}", (0, 1), (_CLIP_RN50, "QualiCLIP.pth", f"QualiCLIP+_{_file}.pth"), heavy=True,
        description=f"QualiCLIP+ fine-tuned on {_file}")
_nr("maclip", (0, 1), (_CLIP_RN50,), heavy=True, needs_gpu=True,
    description="MA-CLIP (pyiqa); builds its CLIP model on CUDA")
_nr("afine_nr", (-2, 2), (_CLIP_VITB32, "afine.pth"), lower_better=True, heavy=True,
    description="A-FINE naturalness term (Chen et al., CVPR 2025)")
_nr("fgresq", (0, 1), ("openai/clip-vit-base-patch16", "FGResQ.pth", "FGResQ_Degradation.pth"), heavy=True,
    description="FGResQ (fine-grained restoration quality), CLIP ViT-B/16 from Hugging Face")

# -- multimodal language models: multi-GB Hugging Face downloads, scored through PIL images (no
#    gradient). Q-Align and Compare2Score also need the `icecream` package.
for _name in ("qalign", "qalign_8bit", "qalign_4bit"):
    _nr(_name, (1, 5), ("q-future/one-align",), differentiable=False, heavy=True, needs_gpu=True,
        per_image=True, description="Q-Align (Wu et al., ICML 2024), mPLUG-Owl2 7B")
_nr("compare2score", (0, 100), ("q-future/Compare2Score",), differentiable=False, heavy=True, needs_gpu=True,
    per_image=True, description="Compare2Score (Zhu et al., NeurIPS 2024), mPLUG-Owl2 7B")
for _name, _repo in [("qrealign", "Mini-0.8B"), ("qrealign-mini", "Mini-0.8B"), ("qrealign-lite", "Lite-4B"),
                     ("qrealign-pro", "Pro-9B")]:
    _nr(_name, (0, 1), (f"q-future/Q-ReAlign-{_repo}",), differentiable=False, heavy=True, needs_gpu=True,
        description=f"Q-ReAlign {_repo} (pyiqa), Qwen3.5-VL based")
# fmt: on

# -- full-reference: S(reference, distorted). The attacks perturb the distorted image (a JPEG copy of
#    the clean one, see docs/methodology.md, "Full-reference metrics") and the reference stays fixed. Facts
#    checked on pyiqa 0.1.16 on CPU as for the NR table (random weights where a network has any):
#    min_side is the smallest square side that scores; differentiable=False where the input
#    gradient is detached. The classical ones need no parameter file, so CI runs them for real.
#    Left out: dmm (open range, direction undeclared), fgresq_pair (a pair ranking, not a score),
#    afine_all / afine_all_scale (an open range); see LEFT_OUT.
# fmt: off
# pyiqa caps PSNR of identical images at 80 dB; its declared range (~0, ~40) scales the loss.
_fr("psnr", (0, 40), description="PSNR on RGB (pyiqa), dB")
_fr("psnry", (0, 60), description="PSNR on the luma channel Y (pyiqa), dB")
_fr("ssim", (0, 1), min_side=16, description="SSIM (Wang et al., IEEE TIP 2004) on luma, no downsampling")
_fr("ssimc", (0, 1), min_side=16, description="SSIM on the RGB channels")
# five scales of an 11x11 window: the coarsest (side / 16) must hold the window
_fr("ms_ssim", (0, 1), min_side=161, description="MS-SSIM (Wang et al., Asilomar 2003) on luma")
_fr("cw_ssim", (0, 1), min_side=64, description="CW-SSIM (Sampat et al., IEEE TIP 2009), complex wavelet SSIM")
_fr("fsim", (0, 1), description="FSIMc (Zhang et al., IEEE TIP 2011), feature similarity with chroma")
_fr("vif", (0, 1), min_side=48, description="VIF (Sheikh & Bovik, IEEE TIP 2006), pixel domain")
_fr("gmsd", (0, 1), lower_better=True, description="GMSD (Xue et al., IEEE TIP 2014), gradient magnitude deviation")
_fr("vsi", (0, 1), description="VSI (Zhang et al., IEEE TIP 2014), visual saliency induced index")
# pyiqa declares '0, ~'; MAD of visibly distorted images lies within ~0-200
_fr("mad", (0, 200), lower_better=True, min_side=16, heavy=True,
    description="MAD (Larson & Chandler, JEI 2010), most apparent distortion; ~5 s per 299x299 pass on CPU")
_fr("nlpd", (0, 1), lower_better=True, description="NLPD (Laparra et al., 2016), normalised Laplacian pyramid")
# pyiqa declares '0, ~10' for MS-SWD
_fr("msswd", (0, 10), ("msswd_weights.pth",), lower_better=True,
    description="MS-SWD (He et al., ECCV 2024), multiscale sliced Wasserstein colour distance")
_fr("lpips", (0, 1), ("LPIPS_v0.1_alex-df73285e.pth", "alexnet-owt-7be5be79.pth"), lower_better=True, min_side=32,
    description="LPIPS (Zhang et al., CVPR 2018), AlexNet, v0.1")
_fr("lpips+", (0, 1), ("LPIPS_v0.1_alex-df73285e.pth", "alexnet-owt-7be5be79.pth"), lower_better=True,
    min_side=32, description="LPIPS+ (semantic-weighted LPIPS), AlexNet")
_fr("lpips-vgg", (0, 1), ("LPIPS_v0.1_vgg-a78928a0.pth", "vgg16-397923af.pth"), lower_better=True, min_side=16,
    description="LPIPS, VGG-16, v0.1")
_fr("lpips-vgg+", (0, 1), ("LPIPS_v0.1_vgg-a78928a0.pth", "vgg16-397923af.pth"), lower_better=True,
    min_side=16, description="LPIPS+, VGG-16")
_fr("stlpips", (0, 1), ("alex_shift_tolerant.pth",), lower_better=True, min_side=24,
    description="ST-LPIPS (Ghildyal & Liu, ECCV 2022), shift-tolerant, AlexNet")
_fr("stlpips-vgg", (0, 1), ("vgg_shift_tolerant.pth",), lower_better=True, min_side=24,
    description="ST-LPIPS, VGG-16")
_fr("dists", (0, 1), ("DISTS_weights-f5e65c96.pth", "vgg16-397923af.pth"), lower_better=True,
    description="DISTS (Ding et al., IEEE TPAMI 2020), structure and texture similarity")
_fr("deepdc", (0, 1), ("vgg19-dcbb9e9d.pth",), lower_better=True, differentiable=False, min_side=16,
    description="DeepDC (Zhu et al., 2024), deep distance correlation; pyiqa detaches its features")
_fr("pieapp", (0, 5), ("PieAPPv0.1-0937b014.pth",), lower_better=True, min_side=64,
    description="PieAPP (Prashnani et al., CVPR 2018), 64x64 patches at stride 27")
# 20 crops of 224x224 through ViT-B/8 and ResNet-50, like MANIQA
_fr("ahiq", (0, 1), ("AHIQ_vit_p8_epoch33-da3ea303.pth",), min_side=224, heavy=True, needs_gpu=True,
    full_checkpoint=True, description="AHIQ (Lao et al., CVPRW 2022), PIPAL; 20 crops of 224x224")
_fr("ckdn", (0, 1), ("CKDN_model_best-38b27dc6.pth", "resnet50-19c8e357.pth"),
    description="CKDN (Zheng et al., ICCV 2021), degraded-reference knowledge distillation")
_fr("topiq_fr", (0, 1), ("cfanet_fr_kadid_res50-2c4cc61d.pth",), full_checkpoint=True,
    description="TOPIQ-FR (Chen et al., IEEE TIP 2024), ResNet-50, KADID-10k")
_fr("topiq_fr-pipal", (0, 1), ("cfanet_fr_pipal_res50-69bbe5ba.pth",), full_checkpoint=True,
    description="TOPIQ-FR, ResNet-50, PIPAL")
# 32x32 patches at offsets strictly below side - 32, as the NR variant
_fr("wadiqam_fr", (-1, 0.1), ("WaDIQaM-kadid-f7541ea5.pth",), min_side=48,
    description="WaDIQaM-FR (Bosse et al., IEEE TIP 2018), KADID-10k")
_fr("afine_fr", (-2, 2), (_CLIP_VITB32, "afine.pth"), lower_better=True, heavy=True,
    description="A-FINE fidelity term (Chen et al., CVPR 2025), CLIP ViT-B/32")
# fmt: on

LEFT_OUT |= {
    "dmm": "pyiqa states an open score range ('0, ~') and no direction for it",
    "fgresq_pair": "it ranks a pair of images against each other rather than scoring one against its reference",
    "afine_all": "pyiqa states an open score range ('~, 2') for it",
    "afine_all_scale": "it is A-FINE rescaled to 0-100; attack afine_fr, its fidelity term, instead",
}
