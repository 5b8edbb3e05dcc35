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

#: On the CPU, a query-based (black-box) attack makes at most this many queries per image unless
#: ``--queries`` gives a number (their budgets of 10 000 queries take hours per metric on a CPU). The
#: benchmark's numbers come from the full budgets: the GPU pipeline runs them.
CPU_MAX_QUERIES = 400

#: On the CPU, a ``certify`` case estimates each smoothed score from this many noise samples per image
#: unless its spec gives ``n`` (the source's 1000 on a GPU; docs/certify.md has the CPU's cost per image).
CPU_CERTIFY_SAMPLES = 100
#: On the CPU, one query of a query-based universal attack (square-uap) scores at most this many
#: training images; its own query is the mean over the whole training set, which the GPU pipeline runs.
CPU_QUERY_IMAGES = 8
#: The quick grid: what the main job runs where the metrics run on the CPU (``--iqa-grid auto``, or
#: ``--iqa-grid quick`` anywhere), so that a new user sees results in minutes on a laptop: every attack
#: and metric of the default grid, on the sample set's first images at a reduced size, with lower
#: query and step caps than :data:`CPU_MAX_QUERIES` and :data:`CPU_UAP_MAX_STEPS`. Options given on the
#: command line are used as given; ``--iqa-grid full`` (a GPU's default) runs the full grid. Each case's
#: params record what it ran with (docs/options.md).
QUICK_MAX_IMAGES = 4
QUICK_IMAGE_SIZE = 256
#: enough for every black-box attack's first step: Parsimonious's first mini-batch of 64 blocks takes 141
#: queries on the 256 grid, and a search stopped inside it returns the clean image (as its source does)
QUICK_MAX_QUERIES = 200
QUICK_UAP_MAX_STEPS = 10
#: The quick grid runs torch on this many threads (unless ``OMP_NUM_THREADS`` says): its batches of a few
#: small images gain little from more, and on a CPU that other programs share, two threads spend their
#: share waiting on each other (measured on a busy 2-core CPU: the main job took 22 min on two threads,
#: 5 min on one).
QUICK_TORCH_THREADS = 1

#: Draws averaged per gradient of a random defence (expectation over transformation) unless ``--iqa-eot`` says.
DEFAULT_EOT = 8

#: L-inf budgets (``--eps``) are named and plotted in units of one grey level of an 8-bit image.
BUDGET_UNIT = 1 / 255

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


def budget_slug(budget: float) -> str:
    """The budget as case ids name it: ``eps4`` for 4/255, ``eps0.5`` for 0.5/255 (units of 1/255, ``:g``)."""
    return f"eps{budget_in_units(budget):g}"


def budget_in_units(budget: float) -> float:
    """An L-inf budget in units of 1/255 (``4/255`` -> ``4.0``), rounded off float noise."""
    return round(budget / BUDGET_UNIT, 6)


def parse_budgets(text: str, option: str = "--eps") -> tuple[float, ...]:
    """``"2/255,8/255"`` -> ``(2/255, 8/255)``: distinct L-inf budgets, ascending, in [0, 1] pixel units.

    Each value is a fraction ``a/b`` or a number (``0.0157``, ``4e-3``).

    Raises:
        ValueError: an empty list, a value that is no number, one outside (0, 1], or two that are
            the same budget; the message shows the expected form.
    """
    expected = f"{option} takes L-inf budgets in pixel units, comma-separated fractions or numbers, e.g. 2/255,8/255"
    budgets: dict[str, float] = {}
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        numerator, slash, denominator = item.partition("/")
        try:
            value = float(numerator) / float(denominator) if slash else float(item)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{expected}; {item!r} is not one") from None
        if not 0 < value <= 1:
            raise ValueError(f"{expected}; {item} = {value:.6g} is outside (0, 1] (255/255 is every pixel's range)")
        if budget_slug(value) in budgets:
            raise ValueError(f"{expected}; {item} is the same budget ({budget_slug(value)}) as an earlier one")
        budgets[budget_slug(value)] = value
    if not budgets:
        raise ValueError(f"{expected}; got {text!r}")
    return tuple(sorted(budgets.values()))


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
