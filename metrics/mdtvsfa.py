"""MDTVSFA: Li, Jiang and Jiang, "Unified Quality Assessment of In-the-Wild Videos with Mixed
Datasets Training", IJCV 2021.

VSFA's feature and temporal model (:mod:`metrics._video_features`) trained on several datasets at
once: the pooled relative quality is bounded by a sigmoid, a shared nonlinear mapping (linear ->
sigmoid -> linear, the last one frozen at identity) turns it into a unified perceptual score in
(0, 1), and one linear map per training dataset (KoNViD-1k ``K``, CVD2014 ``C``, LIVE-Qualcomm
``L``, LIVE-VQC ``N``) aligns it to that dataset's MOS scale. The released ``MDTVSFA.pt``
(github.com/lidq92/MDTVSFA, split 9 of K + C + L) is scored like the authors' demo: the unified
(mapped) score, higher is better. A per-dataset scale is an option (``dataset="K"``...).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ._video_features import FEATURE_DIM, RESNET50_FILE, build_video_metric, load_head, temporal_pool
from .base import Metric, MetricSpec
from .registry import metric

MDTVSFA_FILE = "MDTVSFA.pt"
MDTVSFA_URLS = ("https://github.com/lidq92/MDTVSFA/raw/master/models/MDTVSFA.pt",)
MAPPING_DATASETS = ("K", "C", "L", "N")

SPEC = MetricSpec(
    name="mdtvsfa",
    kind="nr-video",
    lower_better=False,
    bounds=(0.0, 1.0),
    differentiable=True,
    min_side=64,  # res5c must keep at least 2x2 positions for the std pooling
    weight_files=(MDTVSFA_FILE, RESNET50_FILE),
    heavy=True,  # ResNet-50 on every frame; full-HD clips want a GPU
    source="own",
    description="MDTVSFA (Li et al., IJCV 2021): VSFA trained on mixed datasets, unified score in (0, 1)",
)


class MDTVSFAHead(nn.Module):
    """Features (T, 4096) of one clip -> its quality, shape (1,). State-dict keys match ``MDTVSFA.pt``.

    Args:
        dataset: ``None`` returns the unified (mapped) score; ``"K"``, ``"C"``, ``"L"`` or ``"N"``
            applies that dataset's linear map to its MOS scale.
    """

    def __init__(
        self,
        input_size: int = FEATURE_DIM,
        reduced_size: int = 128,
        hidden_size: int = 32,
        dataset: str | None = None,
    ) -> None:
        super().__init__()
        if dataset is not None and dataset not in MAPPING_DATASETS:
            raise ValueError(f"unknown mapping dataset {dataset!r}; use None or one of {MAPPING_DATASETS}")
        self.dataset = dataset
        # The misspelled name is the key in the released file.
        self.dimemsion_reduction = nn.Linear(input_size, reduced_size)
        self.feature_aggregation = nn.GRU(reduced_size, hidden_size, batch_first=True)
        self.regression = nn.Linear(hidden_size, 1)
        self.nlm = nn.Sequential(nn.Linear(1, 1), nn.Sigmoid(), nn.Linear(1, 1))
        self.lm = nn.Sequential(OrderedDict((name, nn.Linear(1, 1)) for name in MAPPING_DATASETS))
        # The authors' initial mapping (identity scales); the released file overrides it.
        with torch.no_grad():
            self.nlm[0].weight.fill_(2 * math.sqrt(3))
            self.nlm[0].bias.fill_(-math.sqrt(3))
            self.nlm[2].weight.fill_(1.0)
            self.nlm[2].bias.fill_(0.0)
            for layer in self.lm:
                layer.weight.fill_(1.0)
                layer.bias.fill_(0.0)

    def frame_quality(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame relative quality (T,) before temporal pooling (the GRU starts from a zero state)."""
        hidden, _ = self.feature_aggregation(self.dimemsion_reduction(features).unsqueeze(0))
        return self.regression(hidden).reshape(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        relative = torch.sigmoid(temporal_pool(self.frame_quality(features)).mean()).reshape(1, 1)
        mapped = self.nlm(relative)
        if self.dataset is not None:
            mapped = getattr(self.lm, self.dataset)(mapped)
        return mapped.reshape(1)


def load_mdtvsfa_head(path: str | Path, dataset: str | None = None) -> MDTVSFAHead:
    """A :class:`MDTVSFAHead` with the parameters of a released ``MDTVSFA.pt``, loaded strictly."""
    return load_head(MDTVSFAHead(dataset=dataset), path)


@metric(SPEC)
def build_mdtvsfa(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
    return build_video_metric(spec, MDTVSFAHead, MDTVSFA_FILE, MDTVSFA_URLS, weights_dir, random)
