"""A plain ``torch.nn.Module`` as a metric: ``from_module(net, name="mine", bounds=(0, 1))``.

The module maps an (N, 3, H, W) RGB batch in [0, 1] to (N,) raw scores; the wrapper adds the
facts the suite needs (name, bounds, direction, ...) as a :class:`~metrics.base.MetricSpec`. The
result is a :class:`~metrics.base.Metric`: attack it directly, register it (``register=True``),
or name it on the command line as ``--metric my_module:MINE`` when ``my_module.py`` assigns it
to ``MINE``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Metric, MetricSpec


class ModuleMetric(Metric):
    """An ``nn.Module`` scoring (N, 3, H, W) in [0, 1] as (N,), behind the Metric interface.

    The module is used as it is (not copied): building the metric moves it to the device and
    freezes its parameters.
    """

    def __init__(self, module: nn.Module, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.module = module

    def score(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self.name}: the module returned {type(out).__name__}; it must return a (N,) tensor")
        if out.numel() != x.shape[0]:
            raise ValueError(
                f"{self.name}: the module returned shape {tuple(out.shape)} for {x.shape[0]} images; it must map "
                "(N, 3, H, W) to (N,) scores, one per image"
            )
        return out.reshape(x.shape[0])


def from_module(
    module: nn.Module,
    *,
    name: str,
    bounds: tuple[float, float],
    lower_better: bool = False,
    register: bool = False,
    **facts: Any,
) -> ModuleMetric:
    """Wrap ``module`` as a metric.

    Args:
        module: maps an (N, 3, H, W) float batch, RGB in [0, 1], to (N,) raw scores.
        name: the registry name (case ids, per-image CSV names and MLflow use it).
        bounds: (low, high) of the raw scores; ``high - low`` scales the attack loss.
        lower_better: True when a lower raw score means better quality.
        register: also register it, so ``create_metric(name)`` and ``--metric name`` find it.
        **facts: further :class:`~metrics.base.MetricSpec` fields (``kind``, ``differentiable``,
            ``min_side``, ``description``, ...).

    Returns:
        The metric, usable as a ``module:Name`` target.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_module wraps a torch.nn.Module, got {type(module).__name__}")
    low, high = (float(b) for b in bounds)
    if not high > low:
        raise ValueError(f"{name}: bounds must be (low, high) with high > low, got {bounds}")
    cls = type(module)
    facts.setdefault("description", f"{cls.__name__} (a torch.nn.Module wrapped by from_module)")
    facts.setdefault("source", f"nn.Module:{cls.__module__}.{cls.__qualname__}")
    spec = MetricSpec(name=name, bounds=(low, high), lower_better=lower_better, **facts)
    metric = ModuleMetric(module, spec)
    if register:
        from ._targets import register_target

        register_target(metric, source=spec.source)
    return metric
