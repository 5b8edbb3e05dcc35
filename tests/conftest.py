"""Fixtures for the project's own tests: offline model caches, the shared reference folder."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Offline by construction: hub look-ups fail at once instead of retrying, and nothing reaches the
# user's real caches. Set before anything imports pyiqa/timm/huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
_TORCH_HOME = Path(tempfile.mkdtemp(prefix="iqa-robustness-torch-home-"))
os.environ["TORCH_HOME"] = str(_TORCH_HOME)
os.environ.setdefault("MPLBACKEND", "Agg")

#: why a test that runs pyiqa's metrics skips where pyiqa is not installed (marker ``pyiqa``, fixture ``pyiqa_weights``)
NO_PYIQA = "needs pyiqa, an extra (PolyForm Noncommercial, docs/licences.md): pip install 'iqa-robustness[pyiqa]'"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference data and weights folder; tests needing it skip, saying why, when it is absent."""
    from iqa_robustness.data import shared_folder

    path = shared_folder()
    if not (path / "data").is_dir() and not (path / "weights").is_dir():
        pytest.skip(
            f"reference folder {path} not found: these tests need the benchmark's reference data and "
            "weights; set IQA_ROBUSTNESS_SHARED to its location"
        )
    return path


@pytest.fixture(scope="session")
def torch_home() -> Path:
    """The temporary TORCH_HOME of this test session (pyiqa's cache is ``hub/pyiqa`` inside it)."""
    return _TORCH_HOME


@pytest.fixture(scope="session")
def pyiqa_weights(shared_dir: Path, torch_home: Path) -> Path:
    """pyiqa's cache populated with the shared parameter files (NIQE, BRISQUE, IL-NIQE, DBCNN).

    The tests that use it run pyiqa's metrics: without pyiqa they skip, saying what to install.
    """
    if importlib.util.find_spec("pyiqa") is None:
        pytest.skip(NO_PYIQA)
    cache = torch_home / "hub" / "pyiqa"
    cache.mkdir(parents=True, exist_ok=True)
    for f in (shared_dir / "weights" / "pyiqa").iterdir():
        if not (cache / f.name).exists():
            shutil.copy2(f, cache / f.name)
    return cache


@pytest.fixture(scope="session")
def original_weights(shared_dir: Path) -> Path:
    """Folder of the original authors' released weights (VSFA.pt, MDTVSFA.pt, CNNIQA-LIVE.pth)."""
    return shared_dir / "weights" / "original"


@pytest.fixture(scope="session")
def msu_test_images(shared_dir: Path) -> Path:
    """The benchmark's 5-image test set (NIPS 2017 dev crops, 299x299)."""
    return shared_dir / "data" / "msu" / "test_images"


@pytest.fixture
def restored_metric_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metric registry, ``sys.path`` and the entry points loaded are as before once the test ends.

    For tests that register real metrics (``module:Name`` targets, entry points, pyiqa names).
    """
    from iqa_robustness.metrics import _targets, registry

    metrics = registry._METRICS
    monkeypatch.setattr(metrics, "_entries", dict(metrics._entries))
    monkeypatch.setattr(metrics, "_aliases", dict(metrics._aliases))
    monkeypatch.setattr(_targets, "_loaded_entry_points", set(_targets._loaded_entry_points))
    monkeypatch.setattr(_targets, "_all_entry_points_loaded", _targets._all_entry_points_loaded)
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``pyiqa`` skip, saying what to install, in an environment without pyiqa."""
    if item.get_closest_marker("pyiqa") is not None and importlib.util.find_spec("pyiqa") is None:
        pytest.skip(NO_PYIQA)


def pytest_configure(config: pytest.Config) -> None:
    """Under ``-n N`` each worker gets its share of the cores: competing OpenMP threads slow every test down."""
    if hasattr(config, "workerinput"):
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(config.workerinput.get("workercount", 1))))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_TORCH_HOME, ignore_errors=True)
