"""A video metric seen as an image metric: each image of a batch is scored as a one-frame clip.

Image datasets and universal-perturbation training feed batches of independent images; a video
metric (VSFA, MDTVSFA) would read such a batch as one clip. :class:`FramesAsClips` scores each
image on its own, so every image gets its own score and gradient, and batching changes nothing.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import Metric


class FramesAsClips(Metric):
    """A video metric scoring an image batch (N, 3, H, W) as N one-frame clips."""

    def __init__(self, video_metric: Metric) -> None:
        spec = dataclasses.replace(video_metric.spec, kind="nr-image")
        super().__init__(spec, video_metric.weights_mode)
        self.video_metric = video_metric

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.video_metric.score(frame) for frame in x.split(1)])


def as_image_metric(metric: Metric) -> Metric:
    """``metric`` itself for an image metric; a :class:`FramesAsClips` view of a video metric."""
    return FramesAsClips(metric) if metric.spec.is_video else metric
