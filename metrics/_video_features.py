"""Shared parts of the VSFA family: ResNet-50 content features and subjectively-inspired temporal pooling.

Li, Jiang and Jiang, "Quality Assessment of In-the-Wild Videos", ACM MM 2019 (VSFA), and "Unified
Quality Assessment of In-the-Wild Videos with Mixed Datasets Training", IJCV 2021 (MDTVSFA), describe
each frame by the last convolutional block (``res5c``) of an ImageNet ResNet-50, pooled over space
by mean and by standard deviation and concatenated into 4096 values. The frames are normalised with
the ImageNet mean and std at their native resolution (no resizing). The released heads reduce the
features to 128 values, run a GRU with 32 hidden units and pool per-frame quality with the
subjectively-inspired temporal pooling (SITP, tau = 12, beta = 0.5).

The original code extracts features once, without gradients. Here frames -> features -> score is
one differentiable graph so attacks can run through it. Frames are processed in chunks of
``chunk_size``: without gradients, memory is bounded by one chunk's activations. With gradients,
autograd keeps every chunk's activations until backward, so memory grows with the clip length; per
chunk gradient checkpointing (:func:`torch.utils.checkpoint.checkpoint`) keeps only each chunk's
input and recomputes its activations during backward (about one extra forward pass), which bounds
memory by one chunk again. It is on by default whenever gradients flow and the clip spans more
than one chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models import ResNet50_Weights, resnet50

from .base import Metric, MetricSpec
from .weights import find_weight_file, missing_weights_error, offline_mode, resolve_weight_file

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 4096

#: torchvision's ImageNet ResNet-50 (``pretrained=True`` in the original code is ``IMAGENET1K_V1``).
RESNET50_WEIGHTS = ResNet50_Weights.IMAGENET1K_V1
RESNET50_FILE = RESNET50_WEIGHTS.url.rsplit("/", 1)[-1]  # resnet50-0676ba61.pth

DEFAULT_CHUNK_SIZE = 16


def global_std_pool2d(x: torch.Tensor) -> torch.Tensor:
    """Spatial standard deviation (unbiased, as ``torch.std`` in the original) of (N, C, H, W) -> (N, C)."""
    return x.flatten(2).std(dim=2)


def load_resnet50_imagenet(weights_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet ResNet-50 parameters torchvision uses.

    Looks for ``resnet50-0676ba61.pth`` in the suite's weight folders (explicit folder,
    ``IQA_ROBUSTNESS_WEIGHTS``, pyiqa's cache) and in torchvision's cache
    (``$TORCH_HOME/hub/checkpoints``), then takes torchvision's normal download (skipped in
    offline mode, :func:`metrics.weights.offline_mode`).

    Raises:
        MissingWeightsError: the file is nowhere on disk and could not be downloaded.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    local = find_weight_file(RESNET50_FILE, weights_dir, extra_dirs=(checkpoints,))
    if local is not None:
        log.debug("ResNet-50 ImageNet weights found at %s", local)
        return torch.load(local, map_location="cpu", weights_only=True)
    source = f" torchvision downloads it from {RESNET50_WEIGHTS.url}."
    if offline_mode():
        raise missing_weights_error(
            RESNET50_FILE, weights_dir, checkpoints, why=f" Offline mode: no download attempted;{source}"
        )
    try:
        return RESNET50_WEIGHTS.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # urllib, ssl and hash errors share no base class worth naming
        raise missing_weights_error(
            RESNET50_FILE, weights_dir, checkpoints, why=f" Download failed ({exc});{source}"
        ) from exc


class ResNet50Features(nn.Module):
    """Frames (T, 3, H, W) in [0, 1] -> (T, 4096) ResNet-50 ``res5c`` mean and std features.

    Args:
        state_dict: torchvision ResNet-50 parameters (loaded strictly); ``None`` keeps random weights.
        chunk_size: frames per forward pass of the backbone.
        gradient_checkpointing: ``None`` (auto) checkpoints each chunk when gradients flow and the
            clip spans more than one chunk; ``True`` always when gradients flow; ``False`` never.
    """

    def __init__(
        self,
        state_dict: dict[str, torch.Tensor] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        gradient_checkpointing: bool | None = None,
    ) -> None:
        super().__init__()
        net = resnet50(weights=None)
        if state_dict is not None:
            net.load_state_dict(state_dict, strict=True)
        # Everything up to layer4 (res5c); the classifier is not part of the feature extractor.
        self.body = nn.Sequential(*list(net.children())[:-2])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.chunk_size = chunk_size
        self.gradient_checkpointing = gradient_checkpointing

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Features of one chunk, no chunking: (n, 3, H, W) -> (n, 4096)."""
        x = self.body((frames - self.mean) / self.std)
        return torch.cat([F.adaptive_avg_pool2d(x, 1).flatten(1), global_std_pool2d(x)], dim=1)

    def _use_checkpoint(self, frames: torch.Tensor) -> bool:
        if not (torch.is_grad_enabled() and frames.requires_grad):
            return False
        if self.gradient_checkpointing is None:
            return frames.shape[0] > self.chunk_size
        return self.gradient_checkpointing

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of frames, got {self.chunk_size}")
        use_ckpt = self._use_checkpoint(frames)
        out = []
        for chunk in frames.split(self.chunk_size):
            if use_ckpt:
                out.append(checkpoint(self.frame_features, chunk, use_reentrant=False))
            else:
                out.append(self.frame_features(chunk))
        return torch.cat(out)


def temporal_pool(q: torch.Tensor, tau: int = 12, beta: float = 0.5) -> torch.Tensor:
    """Subjectively-inspired temporal pooling of per-frame quality (T,) -> (T,).

    Memory: the worst quality over the current and previous ``tau - 1`` frames. Current: a
    softmin-weighted mean (weights ``exp(-q)``) over the current and next ``tau - 1`` frames, where
    frames past the end weigh nothing (the original pads with ``10000``, whose weight underflows to 0).
    The result blends both: ``beta * current + (1 - beta) * memory``.
    """
    q = q.reshape(1, 1, -1)
    memory = -F.max_pool1d(F.pad(-q, (tau - 1, 0), value=-float("inf")), tau, stride=1)
    # exp(-(q - min q)) has the same ratios as exp(-q) and cannot overflow.
    w = torch.exp(-(q - q.min().detach()))
    num = F.avg_pool1d(F.pad(q * w, (0, tau - 1)), tau, stride=1)
    den = F.avg_pool1d(F.pad(w, (0, tau - 1)), tau, stride=1)
    return (beta * num / den + (1 - beta) * memory).reshape(-1)


H = TypeVar("H", bound=nn.Module)


def load_head(head: H, path: str | Path) -> H:
    """Load a released head file strictly into ``head`` (a mismatch raises with the differing keys)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    head.load_state_dict(state, strict=True)
    head.eval()
    return head


class VideoQualityMetric(Metric):
    """A VSFA-family metric: ResNet-50 features of every frame, then a head -> one score per clip.

    Args:
        spec: the metric's declared facts.
        head: maps (T, 4096) features to a (1,) score.
        features: the frame feature extractor.
    """

    def __init__(self, spec: MetricSpec, head: nn.Module, features: ResNet50Features) -> None:
        super().__init__(spec)
        self.features = features
        self.head = head

    @property
    def chunk_size(self) -> int:
        """Frames per backbone pass (memory bound); results do not depend on it."""
        return self.features.chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        self.features.chunk_size = int(value)

    @property
    def gradient_checkpointing(self) -> bool | None:
        """``None`` = auto (on when gradients flow through more than one chunk), or forced on/off."""
        return self.features.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool | None) -> None:
        self.features.gradient_checkpointing = value

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """One clip (T, 3, H, W) in [0, 1] -> its score, shape (1,)."""
        return self.head(self.features(x)).reshape(1)


def build_video_metric(
    spec: MetricSpec,
    make_head: Callable[[], nn.Module],
    head_file: str,
    head_urls: Iterable[str],
    weights_dir: Path | None,
    random: bool,
) -> VideoQualityMetric:
    """The registry builder shared by VSFA and MDTVSFA.

    Random mode builds both parts with random weights and never downloads. Pretrained mode
    resolves the released head file (explicit folder, ``IQA_ROBUSTNESS_WEIGHTS``, cache, URL) and
    the ResNet-50 ImageNet weights (:func:`load_resnet50_imagenet`).
    """
    head = make_head()
    if random:
        return VideoQualityMetric(spec, head.eval(), ResNet50Features())
    load_head(head, resolve_weight_file(head_file, weights_dir, urls=head_urls))
    return VideoQualityMetric(spec, head, ResNet50Features(load_resnet50_imagenet(weights_dir)))
