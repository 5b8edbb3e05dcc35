"""The adapter behind the metrics of permissively licensed libraries (piq, torchmetrics).

A family file (``metrics/piq_metrics.py``, ``metrics/torchmetrics_metrics.py``) registers one line
per metric with :func:`register_library_metric`: its facts as data and a factory that builds the
library's scorer when the metric is built, so registering imports neither library. The scorer is a
``torch.nn.Module`` mapping ``(distorted[, reference])`` to one raw score per image; a library
function becomes one through :class:`Function`.

Inputs are clamped to [0, 1] before the library sees them: piq refuses any other value (an
``assert`` in its input check) and torchmetrics' LPIPS raises, while the suite feeds unclamped
universal perturbations by default (docs/methodology.md). The clamp is part of the metric: the
score and its gradient are those of the clamped image, as a display shows it.

Files a scorer loads through torch.hub (the library's own weights, torchvision's ImageNet
backbones) follow the suite's weight rules (:func:`metrics.weights.place_in_torch_hub`); such a
metric has no random-weights build.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import Metric, MetricSpec
from .registry import register_metric
from .weights import MissingWeightsError, place_in_torch_hub

#: torchvision's ImageNet backbones, as torch.hub caches them (``torchvision.models.*_Weights.IMAGENET1K_V1``)
TORCHVISION = "https://download.pytorch.org/models/"
ALEXNET = "alexnet-owt-7be5be79.pth"
VGG16 = "vgg16-397923af.pth"


class LibraryMetric(Metric):
    """A library's scorer behind the suite's :class:`~metrics.base.Metric` interface.

    A full-reference one hands the scorer ``(distorted, reference)`` while its reference is bound
    (:meth:`~metrics.base.Metric.reference`).
    """

    def __init__(self, spec: MetricSpec, scorer: nn.Module) -> None:
        super().__init__(spec)
        self.scorer = scorer

    def score(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        images = (x, self.bound_reference(x)) if self.spec.is_full_reference else (x,)
        out = self.scorer(*(image.clamp(0.0, 1.0) for image in images))
        if out.numel() != n:
            raise RuntimeError(f"{self.name}: the library returned {out.numel()} scores for {n} images")
        return out.reshape(n).to(x.dtype)


class Function(nn.Module):
    """A library function ``fn(*images, **options) -> (N,)`` as a scorer.

    Args:
        fn: the function.
        dtype: the floating type the images are converted to first, if not the caller's.
        **options: keyword arguments passed on every call (``data_range``, ``reduction``, ...).
    """

    def __init__(self, fn: Callable[..., torch.Tensor], dtype: torch.dtype | None = None, **options: Any) -> None:
        super().__init__()
        self.fn = fn
        self.dtype = dtype
        self.options = options

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        if self.dtype is not None:
            images = tuple(image.to(self.dtype) for image in images)
        return self.fn(*images, **self.options)

    def extra_repr(self) -> str:
        return f"{getattr(self.fn, '__module__', '')}.{getattr(self.fn, '__name__', self.fn)}, {self.options}"


def register_library_metric(
    source: str,
    name: str,
    bounds: tuple[float, float],
    scorer: Callable[[], nn.Module],
    *,
    weights: Mapping[str, str] | None = None,
    **facts: Any,
) -> None:
    """Register one metric of a library.

    Args:
        source: the library (``piq``, ``torchmetrics``): the spec's ``source``, which
            :mod:`metrics._libraries` maps to the package and its install command.
        name: the registry name (``piq-ssim``).
        bounds: (low, high) of the raw scores.
        scorer: builds the scorer, importing the library (called once per build).
        weights: the files the scorer loads through torch.hub, file name -> download URL.
        **facts: further :class:`~metrics.base.MetricSpec` fields (``kind``, ``lower_better``,
            ``min_side``, ``description``, ...).
    """
    files = dict(weights or {})
    spec = MetricSpec(
        name=name, bounds=(float(bounds[0]), float(bounds[1])), weight_files=tuple(files), source=source, **facts
    )

    def build(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
        if files and random:
            raise MissingWeightsError(
                f"{spec.name}: no random-weights build; it needs its files ({', '.join(files)}): leave it out of "
                "the smoke run or run it with real weights"
            )
        for filename, url in files.items():
            try:
                place_in_torch_hub(filename, url, weights_dir)
            except MissingWeightsError as exc:
                raise MissingWeightsError(f"{spec.name}: {exc}") from exc
        return LibraryMetric(spec, scorer())

    build.__module__ = scorer.__module__  # the family file is the metric's code (iqa_robustness.ci.changes)
    register_metric(spec, build)
