"""Any pyiqa metric by its pyiqa name, with the facts pyiqa's own configuration states.

For a metric without a line in :mod:`iqa_robustness.metrics.pyiqa_metrics` (one newer than that
table): direction is pyiqa's ``lower_better`` and bounds its ``score_range`` (``DEFAULT_CONFIGS``
in ``pyiqa/default_model_configs.py``), the model is built through the table's
:class:`~iqa_robustness.metrics.pyiqa_metrics.PyiqaMetric` adapter, and a warning says that its
minimum input side and differentiability are unchecked.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import MetricSpec
from .pyiqa_metrics import LEFT_OUT, _builder
from .registry import MetricTargetError, register_metric

log = logging.getLogger(__name__)


def register_pyiqa_name(name: str) -> bool:
    """Register the pyiqa metric ``name`` (any case) from pyiqa's ``DEFAULT_CONFIGS``.

    A full-reference one (``metric_mode`` FR) is registered with ``kind="fr"``.

    Direction is pyiqa's ``lower_better``, bounds its ``score_range`` with the ``~`` "about" marks
    dropped. The minimum input side and differentiability are not known: a warning says so.

    Returns:
        False when pyiqa has no metric of that name (or pyiqa is not installed).

    Raises:
        MetricTargetError: pyiqa has it, but it does not score one image (or one pair) or its
            range is open (the suite needs both ends to scale the attack loss).
    """
    configs = {key.lower(): (key, config) for key, config in _pyiqa_default_configs().items()}
    found = configs.get(name.strip().lower())
    if found is None:
        return False
    pyiqa_name, config = found
    table = "add a line to metrics/pyiqa_metrics.py"
    mode = config.get("metric_mode")
    if mode not in ("NR", "FR"):
        raise MetricTargetError(
            f"pyiqa's {pyiqa_name} has metric_mode {mode!r}; the suite attacks per-image no-reference (NR) and "
            "full-reference (FR) metrics: choose one from pyiqa.list_models()"
        )
    if pyiqa_name.lower() in LEFT_OUT:
        raise MetricTargetError(f"the pyiqa metric {pyiqa_name} cannot be attacked per image: {LEFT_OUT[pyiqa_name]}")
    low, high = _score_range(str(config.get("score_range", "")))
    if low is None or high is None or high <= low:
        raise MetricTargetError(
            f"pyiqa states no closed score range for {pyiqa_name} ({config.get('score_range')!r}); the attack loss "
            f"is scaled by the range: {table} with the range its scores take"
        )
    lower_better = bool(config.get("lower_better", False))
    spec = MetricSpec(
        name=pyiqa_name.lower(),
        kind="fr" if mode == "FR" else "nr-image",
        lower_better=lower_better,
        bounds=(low, high),
        source="pyiqa",
        description=f"pyiqa {pyiqa_name}: direction and range from pyiqa's configuration; "
        "minimum side and differentiability unchecked",
    )
    log.warning(
        "%s: a pyiqa metric without a line in metrics/pyiqa_metrics.py; %s is better and its range %s come from "
        "pyiqa's configuration, its minimum input side and differentiability are unchecked (%s once measured)",
        pyiqa_name,
        "lower" if lower_better else "higher",
        spec.bounds,
        table,
    )
    register_metric(spec, _builder(pyiqa_name))
    return True


def _score_range(text: str) -> tuple[float | None, float | None]:
    """pyiqa's ``score_range`` (``'~0, ~100'``, ``'0, ~'``) -> numbers, None for an open or unreadable end."""
    ends = [end.strip().lstrip("~").strip() for end in text.split(",")]
    if len(ends) != 2:
        return None, None
    try:
        return tuple(float(end) if end else None for end in ends)  # type: ignore[return-value]
    except ValueError:
        return None, None


@functools.cache
def _pyiqa_default_configs() -> Mapping[str, Mapping[str, Any]]:
    """pyiqa's ``DEFAULT_CONFIGS``: metric name -> ``metric_mode``, ``lower_better``, ``score_range``, ...

    pyiqa keeps them in ``pyiqa/default_model_configs.py``, plain data (it imports only
    ``collections``). Importing it through ``pyiqa`` imports every architecture first (seconds);
    when pyiqa is not imported yet the file is read on its own, so a typo in ``--metric`` is
    answered at once. Empty when pyiqa is not installed.
    """
    module = sys.modules.get("pyiqa.default_model_configs")
    if module is None:
        found = importlib.util.find_spec("pyiqa")
        if found is None:
            return {}
        try:
            folder = next(iter(found.submodule_search_locations or ()))
            spec = importlib.util.spec_from_file_location(
                "_iqa_robustness_pyiqa_configs", Path(folder) / "default_model_configs.py"
            )
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:  # another layout: ask pyiqa itself
            log.debug("reading pyiqa's configuration file on its own failed (%s); importing pyiqa", exc)
            module = importlib.import_module("pyiqa.default_model_configs")
    return dict(module.DEFAULT_CONFIGS)
