"""The suite's conventions, each stated once: score orientation, amplitudes, names, where results go.

Everything here is plain Python (no torch, no MLflow), so the pytest plugin can read these facts
at start-up without importing the heavy layers, and every layer can import this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: The amplitudes the benchmark applies a universal perturbation with (Antsiferova et al., AAAI 2024).
AMPLITUDES: tuple[float, ...] = (0.2, 0.4, 0.8)

#: On the CPU, universal training stops after this many optimisation steps unless ``--uap-steps
#: epochs`` asks for the attacks' full epochs (cnn's 200 epochs alone take hours per metric on a
#: CPU). The benchmark's numbers come from full epochs: the GPU pipeline runs them.
CPU_UAP_MAX_STEPS = 40

#: The MLflow experiment sessions are logged to, and that ``compare``/``leaderboard`` read, by default.
DEFAULT_EXPERIMENT = "iqa-robustness"

#: The file name of the default MLflow store, a SQLite database in the current folder.
DEFAULT_STORE_FILE = "mlflow.db"

#: The environment variable that overrides the default store (MLflow's own).
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def orient(scores: T, lower_better: bool) -> T:
    """Raw metric scores -> quality, higher is better (NIQE, BRISQUE and DMOS-like scores are negated).

    Works on floats, numpy arrays and torch tensors alike; every layer orients through this.
    """
    return -scores if lower_better else scores  # type: ignore[operator,return-value]


def dataset_slug(dataset: str | os.PathLike[str]) -> str:
    """A short readable name for a dataset given by name or by path (its last folder name)."""
    text = str(dataset)
    return Path(text).name if ("/" in text or "\\" in text) else text


def default_tracking_uri(folder: str | os.PathLike[str] | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else the SQLite store ``mlflow.db`` in ``folder``.

    Args:
        folder: where the default store lives (default: the current folder); its artefacts go to
            ``mlartifacts/`` beside it. The pytest plugin and the CLI both use the current folder.

    Returns:
        A tracking URI, e.g. ``sqlite:////home/me/project/mlflow.db``.
    """
    env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if env:
        return env
    base = Path(folder) if folder is not None else Path.cwd()
    return "sqlite:///" + (base.expanduser().resolve() / DEFAULT_STORE_FILE).as_posix()
