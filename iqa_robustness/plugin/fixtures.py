"""The session fixtures the grid's tests use: the suite, the baseline, and where a case writes its result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iqa_robustness.conventions import QUICK_TORCH_THREADS

from .grid import grid_options
from .options import value
from .session import STASH_SESSION, stop_on_sigterm


@pytest.fixture(scope="session")
def suite(request: pytest.FixtureRequest):
    """The session's :class:`~iqa_robustness.runner.suite.Suite`: metrics, datasets, clean scores, perturbations."""
    from iqa_robustness.runner.config import SuiteConfig
    from iqa_robustness.runner.suite import Suite

    config = request.config
    if hasattr(config, "workerinput"):
        _pin_worker_resources(config)
        stop_on_sigterm(Path(value(config, "results_dir")), config.stash[STASH_SESSION])
    try:
        # the device as this process runs it (a worker may have been given its own GPU just now)
        suite_config = SuiteConfig.from_options({**grid_options(config), "device": value(config, "device")})
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if suite_config.grid == "quick" and not hasattr(config, "workerinput") and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(QUICK_TORCH_THREADS)
    return Suite(suite_config)


def _pin_worker_resources(config: pytest.Config) -> None:
    """Split CPU threads between xdist workers; give each worker its own GPU when there are several."""
    import torch

    workers = int(config.workerinput.get("workercount", 1))
    index = int(config.workerinput["workerid"].lstrip("gw") or 0)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    if value(config, "device") == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        config.option.iqa_device = f"cuda:{index % torch.cuda.device_count()}"


@pytest.fixture(scope="session")
def baseline(request: pytest.FixtureRequest):
    """Thresholds from ``--iqa-baseline`` (None without one: cases then record and pass)."""
    from iqa_robustness.report.baseline import Baseline

    path = value(request.config, "baseline")
    return Baseline.load(path) if path else None


@pytest.fixture
def case_results_dir(request: pytest.FixtureRequest) -> Path:
    """Where this session's per-case JSON files go (shared by all xdist workers)."""
    session = request.config.stash[STASH_SESSION]
    path = Path(value(request.config, "results_dir")) / "cases" / session
    path.mkdir(parents=True, exist_ok=True)
    return path
