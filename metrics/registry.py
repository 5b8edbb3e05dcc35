"""One registry of metrics: name -> (MetricSpec, builder), on :class:`iqa_robustness.registry.Registry`.

Files of this package register their metrics on import (``@metric(SPEC)``). A name the registry
does not hold yet is resolved on demand by the :class:`Resolver` routes that ``metrics/__init__.py``
wires in, in this order:

1. ``package.module:Name``: a :class:`~metrics.base.Metric` subclass carrying its spec, a
   ``Metric`` instance (:func:`metrics.from_module`) or a callable returning a ``Metric``, imported
   from the current folder or ``sys.path``;
2. an installed entry point of the group ``iqa_robustness.metrics`` with that name;
3. a pyiqa metric by its pyiqa name, with the facts pyiqa's own configuration states (with pyiqa installed).

Whatever the route, a metric is registered under its spec's name (lower case), so case ids,
per-image CSV names and MLflow runs use that name; its spec's ``source`` says where it came from.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from iqa_robustness.registry import GLOB_CHARACTERS, Registry, split_commas

from ._libraries import missing_library, not_installed_message
from .base import Metric, MetricSpec

log = logging.getLogger(__name__)

#: builder(spec, device, weights_dir, random) -> Metric
Builder = Callable[[MetricSpec, torch.device, "Path | None", bool], Metric]

#: what a metric name may contain: it becomes part of case ids, file names and MLflow run names
_VALID_NAME = re.compile(r"[a-z0-9][a-z0-9._+-]*")


@dataclass(frozen=True)
class _Entry:
    spec: MetricSpec
    builder: Builder


class UnknownMetricError(ValueError):
    """Raised for a metric name the registry does not know; the message suggests close matches."""


class MetricNotInstalledError(UnknownMetricError):
    """A registered metric whose library is not installed; the message says what to install."""


class MetricTargetError(ValueError):
    """A ``module:Name`` or entry-point target that cannot become a metric; the message says what to do."""


@dataclass(frozen=True)
class Resolver:
    """One route by which a name the registry does not hold yet becomes a metric.

    The routes are wired, in order, in one place (``metrics/__init__.py``), so this module imports
    none of the modules that implement them.

    Attributes:
        resolve: registers the name (any spelling) and returns True, or returns False when this
            route does not know it; a name it knows but cannot turn into a metric raises
            :class:`MetricTargetError`.
        candidates: names this route knows without loading anything, offered as "did you mean".
        load_all: registers everything this route knows, before ``all`` and globs expand.
    """

    resolve: Callable[[str], bool]
    candidates: Callable[[], Iterable[str]] = tuple
    load_all: Callable[[], None] | None = None


_RESOLVERS: list[Resolver] = []


def add_resolver(resolver: Resolver) -> None:
    """Try ``resolver`` after the ones added before it for names the registry does not hold."""
    _RESOLVERS.append(resolver)


def _resolve_missing(name: str) -> bool:
    return any(resolver.resolve(name) for resolver in _RESOLVERS)


def _candidates() -> list[str]:
    return [name for resolver in _RESOLVERS for name in resolver.candidates()]


def _load_all() -> None:
    for resolver in _RESOLVERS:
        if resolver.load_all is not None:
            resolver.load_all()


def _hint() -> str:
    return (
        "`iqa-robustness list metrics` shows those installed; also accepted: any pyiqa metric name (with pyiqa), "
        "the name of an installed `iqa_robustness.metrics` entry point, or module:Name"
    )


_METRICS: Registry[_Entry] = Registry(
    "metric",
    error=UnknownMetricError,
    hint=_hint,
    resolve_missing=_resolve_missing,
    candidates=_candidates,
    load_all=_load_all,
)


def register_metric(spec: MetricSpec, builder: Builder) -> None:
    """Add a metric under its spec's name (lower case) and aliases.

    Re-registering a name replaces it (latest definition wins, with a debug log).

    Raises:
        ValueError: the name cannot serve as a case id and a file name.
    """
    name = spec.name.strip().lower()
    if not _VALID_NAME.fullmatch(name):
        raise ValueError(
            f"metric name {spec.name!r} cannot name cases and files; use letters, digits and . _ + - "
            "(starting with a letter or digit)"
        )
    if name != spec.name:
        spec = dataclasses.replace(spec, name=name)
    _METRICS.register(name, _Entry(spec, builder), aliases=spec.aliases)


def metric(spec: MetricSpec) -> Callable[[Builder], Builder]:
    """Decorator form of :func:`register_metric` for a builder function."""

    def deco(builder: Builder) -> Builder:
        register_metric(spec, builder)
        return builder

    return deco


def get_spec(name: str) -> MetricSpec:
    """The declared facts of a metric, without building it."""
    return _METRICS[name].spec


def metric_module(name: str) -> str:
    """The module whose builder makes the metric: where its code lives (``iqa_robustness.metrics.vsfa``).

    :mod:`iqa_robustness.ci.changes` reads it to tell which files a metric is built from.
    """
    return _METRICS[name].builder.__module__


def list_metrics(
    patterns: str | Iterable[str] | None = None, *, uninstalled: bool = False, **facts: object
) -> list[str]:
    """Registered metric names, sorted, optionally filtered.

    Args:
        patterns: ``None``/``"all"`` for everything, a glob (``nima*``), a comma list, or an iterable
            of those. Exact names and aliases are validated (a typo raises with suggestions); a name
            not registered yet is resolved (``module:Name``, an entry point, a pyiqa name). ``all``
            and globs first load every installed ``iqa_robustness.metrics`` entry point (once).
        uninstalled: also list metrics whose library is not installed (``all`` and globs leave
            them out by default; an exact name of one raises :class:`MetricNotInstalledError`).
        **facts: keep only metrics whose spec attribute equals the value, e.g. ``kind="nr-image"``,
            ``differentiable=True``.
    """
    known = _fact_names()
    for key in facts:
        if key not in known:
            raise TypeError(f"MetricSpec has no fact {key!r}; filter by one of {', '.join(known)}")
    if patterns is not None and not isinstance(patterns, str):
        patterns = list(patterns)  # read twice: selected, then its exact names checked
    names = _METRICS.select(patterns)
    if not uninstalled:
        for name in _exact_names(patterns):
            check_installed(name)
        names = [n for n in names if missing_library(_METRICS[n].spec.source) is None]
    for key, value in facts.items():
        names = [n for n in names if getattr(_METRICS[n].spec, key) == value]
    return names


def _exact_names(patterns: str | Iterable[str] | None) -> list[str]:
    """The names in ``patterns`` that are neither ``all`` nor a glob."""
    if patterns is None:
        return []
    chunks = [patterns] if isinstance(patterns, str) else list(patterns)
    return [
        p
        for chunk in chunks
        for p in split_commas(chunk)
        if p.lower() != "all" and not any(ch in p for ch in GLOB_CHARACTERS)
    ]


def check_installed(name: str) -> None:
    """Raise :class:`MetricNotInstalledError` when metric ``name``'s library is not installed.

    The message names the install command and the installed metrics of the same name from other
    libraries (``piq-ssim`` and ``tm-ssim`` for ``ssim``; docs/licences.md).
    """
    spec = _METRICS[name].spec
    library = missing_library(spec.source)
    if library is None:
        return
    alternatives = [
        other
        for other, entry in _METRICS.items()
        if other.endswith(f"-{spec.name}") and "+" not in other and missing_library(entry.spec.source) is None
    ]
    raise MetricNotInstalledError(not_installed_message(spec.name, library, alternatives))


def _fact_names() -> list[str]:
    return [*(f.name for f in dataclasses.fields(MetricSpec)), "is_video", "range"]


def create_metric(
    name: str,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
) -> Metric:
    """Build a metric by name, frozen and in eval mode, on ``device``.

    Args:
        name: registry name or alias (case-insensitive), or anything :func:`list_metrics` resolves
            (``module:Name``, an entry-point name, a pyiqa name).
        device: torch device.
        weights: ``None`` or ``"pretrained"`` resolves real weights (``IQA_ROBUSTNESS_WEIGHTS``,
            then pyiqa's cache, then the normal download); a folder path puts that folder first;
            ``"random"`` builds the architecture with random weights and never downloads
            (smoke mode: results are labelled and never benchmark numbers).

    Raises:
        UnknownMetricError: no metric of that name (the message suggests close ones).
        MetricNotInstalledError: the metric's library is not installed (the message says what to install).
    """
    check_installed(name)
    entry = _METRICS[name]
    random_mode = isinstance(weights, str) and weights == "random"
    weights_dir: Path | None = None
    if weights is not None and not random_mode and str(weights) != "pretrained":
        weights_dir = Path(weights).expanduser()
        if not weights_dir.is_dir():
            raise FileNotFoundError(
                f"weights folder {weights_dir} does not exist; pass an existing folder, 'pretrained' or 'random'"
            )
    dev = torch.device(device)
    model = entry.builder(entry.spec, dev, weights_dir, random_mode)
    model.weights_mode = "random" if random_mode else "pretrained"
    return model.to(dev).freeze()
