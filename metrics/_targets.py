"""Metrics from outside this package: ``module:Name`` targets and ``iqa_robustness.metrics`` entry points.

A target is one of

- a :class:`~metrics.base.Metric` subclass with a class attribute ``spec``: built as ``Name()``;
- a ``Metric`` instance (what :func:`metrics.from_module` returns): used as it is;
- a callable returning a ``Metric``: called once when it is resolved to read its spec (unless it
  carries a ``spec`` attribute itself), and again for every build;
- for entry points also a module that registers metrics on import with ``@metric(SPEC)``.

A constructor or callable that declares any of the keyword parameters ``device``, ``weights_dir``
and ``random`` gets them: the device the suite runs on, ``--weights-dir``, ``--random-weights``.

Entry points are read lazily: a name the registry does not hold loads the entry point of that
name; ``list_metrics()`` of everything (``all``, globs) loads them all once. Importing the package
or the pytest plugin loads none.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import logging
import os
import sys
import types
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import torch

from .base import Metric, MetricSpec
from .registry import _METRICS, Builder, MetricTargetError, register_metric

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "iqa_robustness.metrics"
#: the keyword arguments a target's constructor or callable may declare
BUILD_ARGUMENTS = ("device", "weights_dir", "random")

_loaded_entry_points: set[str] = set()
_all_entry_points_loaded = False


def resolve_target(name: str) -> bool:
    """Register ``name`` if it is a ``module:Name`` target.

    Returns:
        True when ``name`` is a ``module:Name`` target (registered afterwards), False for any other name.

    Raises:
        MetricTargetError: the target exists but cannot become a metric (the message says why).
    """
    if ":" not in name:
        return False
    register_target(load_target(name), source=f"module:{name}", alias=name, label=f"metric {name!r}")
    return True


# -- module:Name ---------------------------------------------------------------------------
def load_target(target: str) -> Any:
    """The object ``package.module:Name`` names, imported from the current folder or ``sys.path``."""
    module_name, _, attribute = (part.strip() for part in target.partition(":"))
    if not module_name or not attribute:
        raise MetricTargetError(f"metric {target!r}: write module:Name, e.g. my_metric:MyMetric")
    module = _import(module_name, target)
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise MetricTargetError(_missing_attribute_message(module, attribute, target))
        obj = getattr(obj, part)
    return obj


def _import(module_name: str, target: str) -> types.ModuleType:
    here = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == here for entry in sys.path):
        sys.path.insert(0, here)  # as `python -m` does; pytest's console script does not
    importlib.invalidate_caches()  # a module written after start-up is found too
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise MetricTargetError(
                f"metric {target!r}: no module {missing!r} in the current folder ({here}) or on sys.path; run "
                f"from the folder that holds {missing.replace('.', '/')}.py, add its folder to PYTHONPATH, or "
                "install the package that provides it"
            ) from None
        raise MetricTargetError(
            f"metric {target!r}: importing {module_name} failed: {exc}; install what it imports"
        ) from exc


def _missing_attribute_message(module: types.ModuleType, attribute: str, target: str) -> str:
    where = getattr(module, "__file__", None) or module.__name__
    metrics = sorted(name for name, value in vars(module).items() if _looks_like_metric(value))
    close = difflib.get_close_matches(attribute, list(vars(module)), n=1)
    hint = f"; did you mean {module.__name__}:{close[0]}?" if close else ""
    found = f" It defines {', '.join(metrics)}." if metrics else ""
    return f"metric {target!r}: module {module.__name__} ({where}) has no attribute {attribute!r}{hint}{found}"


def _looks_like_metric(value: object) -> bool:
    return isinstance(value, Metric) or (isinstance(value, type) and issubclass(value, Metric) and value is not Metric)


# -- registering a target ------------------------------------------------------------------
def register_target(obj: object, *, source: str, alias: str | None = None, label: str | None = None) -> str:
    """Register a Metric subclass, a Metric instance or a callable returning a Metric.

    Args:
        obj: the target.
        source: where it came from, kept as the spec's ``source`` (``module:mod:Name``).
        alias: another name it is found by (the ``module:Name`` text, an entry point's name).
        label: how messages name the target (default: ``source``).

    Returns:
        The name it is registered under: its spec's name, in lower case.
    """
    spec, builder = _spec_and_builder(obj, f"{label or source} ({_describe(obj)})")
    name = spec.name.strip().lower()
    aliases = (*spec.aliases, alias) if alias and alias.strip().lower() != name else spec.aliases
    spec = dataclasses.replace(spec, source=source, aliases=tuple(aliases))
    if name in _METRICS and _facts(_METRICS[name].spec) != _facts(spec):
        earlier = _METRICS[name].spec.source
        log.warning("metric %s from %s replaces the registered %s (%s)", name, source, name, earlier)
    register_metric(spec, builder)
    return name


def _facts(spec: MetricSpec) -> MetricSpec:
    """The spec without where it came from and the names it is found by."""
    return dataclasses.replace(spec, name=spec.name.lower(), source="", aliases=())


def _spec_and_builder(obj: object, what: str) -> tuple[MetricSpec, Builder]:
    if isinstance(obj, Metric):
        return obj.spec, _instance_builder(obj)
    if isinstance(obj, type) and issubclass(obj, Metric):
        spec = getattr(obj, "spec", None)
        if not isinstance(spec, MetricSpec):
            raise MetricTargetError(
                f"{what} is a Metric subclass without a spec; declare its facts as a class attribute "
                "`spec = MetricSpec(name=..., bounds=(low, high), lower_better=...)`"
            )
        return spec, _factory_builder(obj, what)
    if isinstance(obj, type) or not callable(obj):
        raise MetricTargetError(
            f"{what} is not a metric; name a Metric subclass with a `spec` class attribute, a Metric "
            "(e.g. iqa_robustness.metrics.from_module(module, name=..., bounds=...)), or a function returning one"
        )
    spec = getattr(obj, "spec", None)
    if not isinstance(spec, MetricSpec):
        spec = _checked(_call(obj, torch.device("cpu"), None, False), what).spec
    return spec, _factory_builder(obj, what)


def _instance_builder(model: Metric) -> Builder:
    def build(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
        model.spec = spec
        return model

    return build


def _factory_builder(factory: Callable[..., Any], what: str) -> Builder:
    def build(spec: MetricSpec, device: torch.device, weights_dir: Path | None, random: bool) -> Metric:
        model = _checked(_call(factory, device, weights_dir, random), what)
        model.spec = spec
        return model

    return build


def _call(factory: Callable[..., Any], device: torch.device, weights_dir: Path | None, random: bool) -> Any:
    """``factory(**the build arguments it declares)``."""
    available = {"device": device, "weights_dir": weights_dir, "random": random}
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        parameters = {}
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return factory(**{k: v for k, v in available.items() if k in parameters and parameters[k].kind in named})


def _checked(made: object, what: str) -> Metric:
    if not isinstance(made, Metric):
        raise MetricTargetError(
            f"{what} returned {_describe(made)}, not a Metric; return a Metric subclass instance or wrap a "
            "torch.nn.Module with iqa_robustness.metrics.from_module(module, name=..., bounds=...)"
        )
    return made


def _describe(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        return f"function {obj.__module__}.{obj.__qualname__}"
    kind = type(obj)
    if kind.__module__ == "builtins":
        return f"{kind.__name__} {obj!r:.40}"
    return f"a {kind.__module__}.{kind.__qualname__}"


# -- entry points --------------------------------------------------------------------------
def _entry_points() -> dict[str, EntryPoint]:
    """The group's entry points by lower-case name; the first of a name on ``sys.path`` wins."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name.strip().lower(), ep)
    return found


def entry_point_names() -> list[str]:
    """Names installed packages declare in the ``iqa_robustness.metrics`` group (nothing is imported)."""
    return sorted(_entry_points())


def load_entry_point(name: str) -> bool:
    """Load the entry point called ``name``; True when it registered a metric by that name."""
    ep = _entry_points().get(name.strip().lower())
    if ep is None:
        return False
    _register_entry_point(ep)
    return name in _METRICS


def load_entry_points() -> None:
    """Load every entry point of the group, once; a broken one is skipped with a warning."""
    global _all_entry_points_loaded
    if _all_entry_points_loaded:
        return
    _all_entry_points_loaded = True
    for key, ep in _entry_points().items():
        if key in _loaded_entry_points:
            continue
        try:
            _register_entry_point(ep)
        except Exception as exc:  # one broken package must not hide the others
            log.warning("skipping the %s entry point %s = %s: %s", ENTRY_POINT_GROUP, ep.name, ep.value, exc)


def _register_entry_point(ep: EntryPoint) -> None:
    key = ep.name.strip().lower()
    _loaded_entry_points.add(key)
    where = f"entry point {ep.name} = {ep.value!r} ({ENTRY_POINT_GROUP})"
    try:
        obj = ep.load()
    except (ImportError, AttributeError) as exc:
        raise MetricTargetError(f"{where} cannot be loaded: {exc}; reinstall the package that declares it") from exc
    if isinstance(obj, types.ModuleType):
        if key not in _METRICS:
            raise MetricTargetError(
                f"{where} imported module {obj.__name__}, which registered no metric named {ep.name!r}; "
                f"register it there with @metric(MetricSpec(name={ep.name!r}, ...)) or point the entry point "
                "at a Metric subclass (module:Name)"
            )
        return
    register_target(obj, source=f"entry-point:{ep.value}", alias=ep.name, label=where)
