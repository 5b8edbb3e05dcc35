"""One registry of metrics: name -> (MetricSpec, builder). Files register themselves on import."""

from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .base import Metric, MetricSpec

log = logging.getLogger(__name__)

#: builder(spec, device, weights_dir, random) -> Metric
Builder = Callable[[MetricSpec, torch.device, "Path | None", bool], Metric]


@dataclass(frozen=True)
class _Entry:
    spec: MetricSpec
    builder: Builder


_REGISTRY: dict[str, _Entry] = {}
_ALIASES: dict[str, str] = {}


class UnknownMetricError(ValueError):
    """Raised for a metric name the registry does not know; the message suggests close matches."""


def register_metric(spec: MetricSpec, builder: Builder) -> None:
    """Add a metric. Re-registering a name replaces it (latest definition wins, with a debug log)."""
    if spec.name in _REGISTRY:
        log.debug("metric %s registered again; replacing the earlier entry", spec.name)
    _REGISTRY[spec.name] = _Entry(spec, builder)
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name


def metric(spec: MetricSpec) -> Callable[[Builder], Builder]:
    """Decorator form of :func:`register_metric` for a builder function."""

    def deco(builder: Builder) -> Builder:
        register_metric(spec, builder)
        return builder

    return deco


def _canonical(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return key
    close = difflib.get_close_matches(key, list(_REGISTRY) + list(_ALIASES), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownMetricError(
        f"unknown metric {name!r}{hint} (`iqa-robustness list metrics` shows all {len(_REGISTRY)})"
    )


def get_spec(name: str) -> MetricSpec:
    """The declared facts of a metric, without building it."""
    return _REGISTRY[_canonical(name)].spec


def select_names(patterns: str | Iterable[str] | None, names: list[str], canonical: Callable[[str], str]) -> list[str]:
    """Expand ``all``, globs and comma lists against ``names``; exact names go through ``canonical``."""
    if patterns is None:
        return names
    if isinstance(patterns, str):
        patterns = [patterns]
    wanted: list[str] = []
    for chunk in patterns:
        for pat in (p.strip() for p in chunk.split(",")):
            if pat == "all":
                wanted.extend(names)
            elif any(ch in pat for ch in "*?["):
                wanted.extend(fnmatch.filter(names, pat.lower()))
            elif pat:
                wanted.append(canonical(pat))
    return sorted(set(wanted))


def list_metrics(patterns: str | Iterable[str] | None = None, **facts: object) -> list[str]:
    """Registered metric names, sorted, optionally filtered.

    Args:
        patterns: ``None``/``"all"`` for everything, a glob (``nima*``), a comma list, or an iterable
            of those. Exact names and aliases are validated (a typo raises with suggestions).
        **facts: keep only metrics whose spec attribute equals the value, e.g. ``kind="nr-image"``,
            ``differentiable=True``.
    """
    names = select_names(patterns, sorted(_REGISTRY), _canonical)
    for key, value in facts.items():
        names = [n for n in names if getattr(_REGISTRY[n].spec, key) == value]
    return names


def create_metric(
    name: str,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
) -> Metric:
    """Build a metric by name, frozen and in eval mode, on ``device``.

    Args:
        name: registry name or alias (case-insensitive).
        device: torch device.
        weights: ``None`` or ``"pretrained"`` resolves real weights (``IQA_ROBUSTNESS_WEIGHTS``,
            then pyiqa's cache, then the normal download); a folder path puts that folder first;
            ``"random"`` builds the architecture with random weights and never downloads
            (smoke mode: results are labelled and never benchmark numbers).
    """
    entry = _REGISTRY[_canonical(name)]
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
