"""The pytest plugin of the robustness suite (the ``pytest11`` entry point): options, grid, fixtures, reporting.

``pytest -m uap --iqa-metric linearity`` (or ``--metric linearity`` where no other plugin declares
``--metric``) runs the universal attacks on LinearityIQA. The plugin's parts:

- :mod:`.options`: every option as ``--iqa-<name>`` from the table in
  :mod:`iqa_robustness.runner.options`, and the short names where they are free;
- :mod:`.grid`: markers, the grid's cases (:func:`~.grid.pytest_generate_tests`), shards;
- :mod:`.fixtures`: the session's suite, baseline and case folder;
- :mod:`.session`: the controller process, which writes the MLflow runs and, at the end of the session,
  the MSU-format CSVs, the summary and a compact table (also under pytest-xdist), and prints a
  progress line per case.

Each case writes its :class:`~iqa_robustness.scores.results.CaseResult` as JSON under
``--iqa-results-dir``. Nothing here imports torch unless the session runs the grid.
"""

from __future__ import annotations

import uuid

import pytest

from .fixtures import baseline, case_results_dir, suite
from .grid import (
    grid_options_given,
    group_metrics_in_workers,
    pytest_collection_modifyitems,
    pytest_generate_tests,
    register_markers,
)
from .options import pytest_addoption, pytest_load_initial_conftests, value
from .session import STASH_CONTROLLER, STASH_SESSION, SessionController

__all__ = [
    "baseline",
    "case_results_dir",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_configure_node",
    "pytest_generate_tests",
    "pytest_load_initial_conftests",
    "pytest_terminal_summary",
    "pytest_unconfigure",
    "suite",
]


def pytest_configure(config: pytest.Config) -> None:
    """Markers, the session id, xdist grouping, and the controller (in the one process that is not a worker)."""
    register_markers(config)
    group_metrics_in_workers(config)
    if hasattr(config, "workerinput"):
        config.stash[STASH_SESSION] = config.workerinput["iqa_session"]
        return
    config.stash[STASH_SESSION] = uuid.uuid4().hex[:12]
    controller = SessionController(config, config.stash[STASH_SESSION])
    if grid_options_given(config) or value(config, "results_dir") != "results":
        controller.check_results_dir()  # a folder that cannot be written stops the run before any case
    config.stash[STASH_CONTROLLER] = controller
    config.pluginmanager.register(controller, "iqa-robustness-session")


def pytest_unconfigure(config: pytest.Config) -> None:
    controller = config.stash.get(STASH_CONTROLLER, None)
    if controller is not None:
        controller.restore_signal_handlers()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # pytest-xdist hook (controller side)
    node.workerinput["iqa_session"] = node.config.stash[STASH_SESSION]
    node.workerinput["iqa_loadgroup"] = node.config.getoption("dist", "no") == "loadgroup"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The controller writes the session's files and ends its MLflow run (also after SIGTERM or Ctrl-C)."""
    controller = config.stash.get(STASH_CONTROLLER, None)
    if controller is not None:
        controller.finish(exitstatus, terminalreporter.write_line)
