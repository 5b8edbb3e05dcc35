"""Quality metrics by name: ``create_metric("paq2piq")``, ``list_metrics("nima*")``.

Every module in this package registers its metrics on import, so a new metric is one new file.
Metrics from elsewhere come by name too: ``module:Name`` (a Metric subclass, a Metric such as
:func:`from_module` returns, or a function returning one), an installed package's entry point in
the group ``iqa_robustness.metrics``, or any pyiqa metric by its pyiqa name.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._targets import entry_point_names, load_entry_point, load_entry_points, resolve_target
from .base import Metric, MetricSpec, metric_identity
from .module_metric import ModuleMetric, from_module
from .pyiqa_names import register_pyiqa_name
from .registry import (
    MetricNotInstalledError,
    MetricTargetError,
    Resolver,
    UnknownMetricError,
    add_resolver,
    create_metric,
    get_spec,
    list_metrics,
    metric,
    register_metric,
)
from .weights import MissingWeightsError, resolve_weight_file

# The routes by which a name not registered yet becomes a metric, in the order they are tried (the
# registry imports none of them: the modules of this package import one way, registry <- routes).
add_resolver(Resolver(resolve_target))
add_resolver(Resolver(load_entry_point, candidates=entry_point_names, load_all=load_entry_points))
add_resolver(Resolver(register_pyiqa_name))

_INTERNAL = {"base", "module_metric", "registry", "weights"}
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in _INTERNAL and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "Metric",
    "MetricNotInstalledError",
    "MetricSpec",
    "MetricTargetError",
    "MissingWeightsError",
    "ModuleMetric",
    "UnknownMetricError",
    "create_metric",
    "from_module",
    "get_spec",
    "list_metrics",
    "metric",
    "metric_identity",
    "register_metric",
    "resolve_weight_file",
]
