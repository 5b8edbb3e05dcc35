"""Defences for quality metrics, by name: ``parse_defences("jpeg(q=50),median(k=3)")``; ``d + metric`` is a metric.

Every module in this package registers its defence on import, so a new defence is one new file
(docs/methodology.md, "Defences"). :func:`register_defended` makes ``<label>+<metric>`` (``jpeg50+niqe``) a
metric of the registry, which every attack then attacks adaptively (:class:`DefendedMetric`: BPDA
through a non-differentiable step, EoT over a random one).
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    DEFAULT_EOT,
    NONE,
    Defence,
    DefenceSpecError,
    DefendedMetric,
    ImageDraws,
    base_metric,
    defence_class,
    list_defences,
    parse_defence,
    parse_defences,
    register_defence,
    register_defended,
    split_defended,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base" and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "DEFAULT_EOT",
    "NONE",
    "Defence",
    "DefenceSpecError",
    "DefendedMetric",
    "ImageDraws",
    "base_metric",
    "defence_class",
    "list_defences",
    "parse_defence",
    "parse_defences",
    "register_defence",
    "register_defended",
    "split_defended",
]
