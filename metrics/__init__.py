"""Quality metrics by name: ``create_metric("paq2piq")``, ``list_metrics("nima*")``.

Every module in this package registers its metrics on import, so a new metric is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Metric, MetricSpec
from .registry import UnknownMetricError, create_metric, get_spec, list_metrics, metric, register_metric
from .weights import MissingWeightsError, resolve_weight_file

_INTERNAL = {"base", "registry", "weights"}
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in _INTERNAL and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "Metric",
    "MetricSpec",
    "MissingWeightsError",
    "UnknownMetricError",
    "create_metric",
    "get_spec",
    "list_metrics",
    "metric",
    "register_metric",
    "resolve_weight_file",
]
