"""VSFA: Li, Jiang and Jiang, "Quality Assessment of In-the-Wild Videos", ACM MM 2019.

No-reference video quality: ImageNet ResNet-50 content features of every frame (mean and std
pooled, 4096 values; :mod:`metrics._video_features`), a linear reduction to 128, a GRU with 32
hidden units, a per-frame quality regression and subjectively-inspired temporal pooling, averaged
into one score per clip. Higher is better. The released ``VSFA.pt`` (github.com/lidq92/VSFA,
trained on KoNViD-1k with MOS divided by the dataset maximum) predicts roughly in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._video_features import FEATURE_DIM, RESNET50_FILE, build_video_metric, load_head, temporal_pool
from .base import Metric, MetricSpec
from .registry import metric

VSFA_FILE = "VSFA.pt"
VSFA_URLS = ("https://github.com/lidq92/VSFA/raw/master/models/VSFA.pt",)

SPEC = MetricSpec(
    name="vsfa",
    kind="nr-video",
    lower_better=False,
    bounds=(0.0, 1.0),
    differentiable=True,
    min_side=64,  # res5c must keep at least 2x2 positions for the std pooling
    weight_files=(VSFA_FILE, RESNET50_FILE),
    heavy=True,  # ResNet-50 on every frame; full-HD clips want a GPU
    source="own",
    description="VSFA (Li et al., ACM MM 2019): ResNet-50 mean/std features, GRU, temporal pooling",
)


class _ReductionANN(nn.Module):
    """The original's ``ANN``: ``fc0`` reduces 4096 -> 128, then ``n_layers - 1`` ReLU/dropout/``fc`` layers.

    The released model uses one layer, so ``fc`` is stored in the file but unused.
    """

    def __init__(self, input_size: int = FEATURE_DIM, reduced_size: int = 128, n_layers: int = 1, dropout: float = 0.5):
        super().__init__()
        self.n_layers = n_layers
        self.fc0 = nn.Linear(input_size, reduced_size)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(reduced_size, reduced_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc0(x)
        for _ in range(self.n_layers - 1):
            x = self.fc(self.dropout(F.relu(x)))
        return x


class VSFAHead(nn.Module):
    """Features (T, 4096) of one clip -> its quality, shape (1,). State-dict keys match ``VSFA.pt``."""

    def __init__(self, input_size: int = FEATURE_DIM, reduced_size: int = 128, hidden_size: int = 32) -> None:
        super().__init__()
        self.ann = _ReductionANN(input_size, reduced_size, n_layers=1)
        self.rnn = nn.GRU(reduced_size, hidden_size, batch_first=True)
        self.q = nn.Linear(hidden_size, 1)

    def frame_quality(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame quality (T,) before temporal pooling (the GRU starts from a zero state)."""
        hidden, _ = self.rnn(self.ann(features).unsqueeze(0))
        return self.q(hidden).reshape(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return temporal_pool(self.frame_quality(features)).mean().reshape(1)


def load_vsfa_head(path: str | Path) -> VSFAHead:
    """A :class:`VSFAHead` with the parameters of a released ``VSFA.pt``, loaded strictly."""
    return load_head(VSFAHead(), path)


@metric(SPEC)
def build_vsfa(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
    return build_video_metric(spec, VSFAHead, VSFA_FILE, VSFA_URLS, weights_dir, random)
