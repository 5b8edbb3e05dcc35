"""The suite's options, as one table: each option's flag, parser, default, help, ``SuiteConfig`` field and record.

Every option of the pytest plugin is one :class:`Option` row of :data:`OPTIONS`, and everything
else is derived from the table: the plugin's ``addoption`` calls (flag ``--iqa-<name>`` in one
option group, also accepted as ``--<name>`` where no other plugin or ``conftest.py`` declares that
name), :meth:`~iqa_robustness.runner.config.SuiteConfig.from_options`, the settings a session
records (and ``iqa-robustness merge`` checks to agree), command lines built by code (:func:`flag`),
and the option reference ``docs/options.md`` (:func:`reference_page`; regenerate it with
``python -m iqa_robustness.runner.options docs/options.md``).

What the options leave out the grid fills in (``--iqa-grid``, :func:`grid_values`): the main job's
grid on a CPU is the quick grid, which finishes in minutes on a laptop (docs/options.md).

Plain Python (no torch): the plugin reads this table in every pytest run of an environment that
has the package installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from iqa_robustness.conventions import (
    AMPLITUDES,
    CPU_MAX_QUERIES,
    CPU_UAP_MAX_STEPS,
    DEFAULT_EOT,
    DEFAULT_EXPERIMENT,
    QUICK_IMAGE_SIZE,
    QUICK_MAX_IMAGES,
    QUICK_MAX_QUERIES,
    QUICK_TORCH_THREADS,
    QUICK_UAP_MAX_STEPS,
    parse_budgets,
)

#: the prefix every option of the suite has on the pytest command line
PREFIX = "--iqa-"
#: the metrics of the main job
DEFAULT_METRICS = "cnniqa-live,niqe,brisque,paq2piq"
#: the test set (and training set of universal attacks) when none is given
DEFAULT_DATASET = "sample"
#: the group ``pytest --help`` lists the options under
GROUP = ("iqa-robustness", "adversarial robustness grid (iqa-robustness)")
GRIDS = ("auto", "quick", "full")


# -- parsers: text of the command line -> value; a bad value is a usage error saying what to give --------------
@dataclasses.dataclass(frozen=True)
class AutoOr:
    """``auto`` (or another of ``words``) or a positive integer: the one parser of the "auto or N" options.

    Args:
        unit: what the number counts, for the error message (``images per batch``).
        words: the words accepted besides numbers, returned lower-case.
    """

    unit: str
    words: tuple[str, ...] = ("auto",)

    def __call__(self, text: str) -> int | str:
        word = str(text).strip().lower()
        if word in self.words:
            return word
        try:
            number = int(word)
        except ValueError:
            number = 0
        if number < 1:
            raise argparse.ArgumentTypeError(f"give a positive number of {self.unit} or {self.expected}, got {text!r}")
        return number

    @property
    def expected(self) -> str:
        words = [f"'{w}'" for w in self.words]
        return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


@dataclasses.dataclass(frozen=True)
class Positive:
    """A positive integer (``unit`` names it in the error message)."""

    unit: str

    def __call__(self, text: str) -> int:
        try:
            number = int(str(text).strip())
        except ValueError:
            number = 0
        if number < 1:
            raise argparse.ArgumentTypeError(f"give a positive number of {self.unit}, got {text!r}")
        return number


def shard(text: str) -> str:
    """``K/N`` with 1 <= K <= N, kept as text (``"2/4"``)."""
    try:
        k, n = (int(part) for part in str(text).split("/"))
        check_shard(k, n)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"give K/N (shard K of N, 1-based), e.g. 1/4; got {text!r}: {exc}") from None
    return f"{k}/{n}"


def check_shard(k: int, n: int, option: str = PREFIX + "shard") -> None:
    """Shard ``k`` of ``n`` exists (1-based).

    Raises:
        ValueError: ``k`` outside 1..n.
    """
    if not 1 <= k <= n:
        raise ValueError(f"{option} {k}/{n}: K must be between 1 and N (shards are 1-based)")


def shard_pair(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` -> ``(2, 4)`` (an already checked :func:`shard`); ``None`` stays ``None``."""
    return None if text is None else tuple(int(part) for part in text.split("/"))  # type: ignore[return-value]


def budgets(text: str) -> tuple[float, ...]:
    """L-inf budgets, ``"2/255,8/255"`` -> ``(2/255, 8/255)`` (:func:`~iqa_robustness.conventions.parse_budgets`)."""
    try:
        return parse_budgets(text, option=PREFIX + "eps")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fooled_gain(text: str) -> float:
    """The verdict's threshold: a normalised absolute gain >= 0 (:func:`~.scores.verdict.parse_fooled_gain`)."""
    from iqa_robustness.scores.verdict import parse_fooled_gain

    try:
        return parse_fooled_gain(text, option=PREFIX + "fooled-gain")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def qualities(text: str) -> tuple[int, ...]:
    """JPEG qualities, ``"30,70"`` -> ``(30, 70)``, each from 1 to 100."""
    try:
        values = tuple(int(q) for q in str(text).split(",") if q.strip())
    except ValueError:
        values = ()
    if not values or any(not 1 <= q <= 100 for q in values):
        raise argparse.ArgumentTypeError(f"give integers from 1 to 100, e.g. 30,70; got {text!r}")
    return values


def amplitudes(text: str) -> tuple[float, ...]:
    """Amplitudes of universal perturbations, ``"0.2,0.8"`` -> ``(0.2, 0.8)``."""
    try:
        values = tuple(float(a) for a in str(text).split(",") if a.strip())
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"give numbers, e.g. 0.2,0.4,0.8; got {text!r}")
    return values


# -- the table ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Option:
    """One option of the suite.

    Attributes:
        name: ``batch_size``: flag ``--iqa-batch-size``, short name ``--batch-size``, ``config.option.iqa_batch_size``.
        help: the ``--help`` text and the reference's description.
        default: the value when the option is not given (after ``parse``, as argparse applies it to text).
        parse: text -> value; raises ``argparse.ArgumentTypeError`` saying what to give.
        action: ``store_true`` for a switch, ``append`` for a repeatable option, else one value.
        choices: the values allowed, if a fixed set.
        metavar: the value's name in ``--help``.
        field: the :class:`~iqa_robustness.runner.config.SuiteConfig` field(s) it sets (a tuple: ``to_field``
            returns one value per field).
        to_field: option value -> field value(s) (default: the value as parsed).
        setting: the session records it (``sessions/<id>.json``; shards to merge must agree on it).
        record_as: the name it is recorded under when that is not ``name``.
        shown_default: the default as the reference shows it (default: ``default``).
    """

    name: str
    help: str
    default: Any = None
    parse: Callable[[str], Any] | None = None
    action: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    field: str | tuple[str, ...] | None = None
    to_field: Callable[[Any], Any] | None = None
    setting: bool = False
    record_as: str | None = None
    shown_default: str | None = None

    def __post_init__(self) -> None:
        if self.action == "store_true" and self.default is None:
            object.__setattr__(self, "default", False)  # a switch left off is False, as argparse has it

    @property
    def flag(self) -> str:
        """``--iqa-batch-size``: the option's flag, accepted in every pytest run."""
        return PREFIX + self.name.replace("_", "-")

    @property
    def short(self) -> str:
        """``--batch-size``: the short name, accepted where no other plugin or conftest.py declares it."""
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """``iqa_batch_size``: the attribute of ``config.option`` that holds the value."""
        return "iqa_" + self.name

    @property
    def takes_value(self) -> bool:
        return self.action != "store_true"

    def argparse_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``addoption`` for :attr:`flag`."""
        shown = "" if self.action == "store_true" else f" (default: {self.default_text().replace('`', '')})"
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help + shown, "default": self.default}
        if self.action is not None:
            kwargs["action"] = self.action
        if self.takes_value and not self.choices:
            kwargs["metavar"] = self.metavar or self.name.upper()
        if self.choices is not None:
            kwargs["choices"] = self.choices
        if self.parse is not None:
            kwargs["type"] = self.parse
        return kwargs

    def fields(self, value: Any) -> dict[str, Any]:
        """``{SuiteConfig field: value}`` for this option's value (empty for an option that sets none)."""
        if self.field is None:
            return {}
        converted = self.to_field(value) if self.to_field is not None else value
        if isinstance(self.field, tuple):
            return dict(zip(self.field, converted, strict=True))
        return {self.field: converted}

    def record(self, value: Any) -> Any:
        """The value as a session record (JSON) holds it."""
        if value is None or isinstance(value, (bool, int, float, str, list)):
            return value
        if isinstance(value, tuple):
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        return str(value)

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.action == "store_true":
            return "off"
        if self.default is None:
            return "—"
        return str(self.default)


def _uap_steps_fields(value: int | str) -> tuple[int | None, bool]:
    return (value if isinstance(value, int) else None, value == "epochs")


def transfer_targets(text: str | None) -> tuple[str, ...] | None:
    """``--iqa-transfer-to`` resolved to metric names, as ``--iqa-metric`` resolves its list."""
    if not text:
        return None
    from iqa_robustness.metrics import list_metrics

    try:
        names = tuple(list_metrics(text))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{flag('transfer_to')} {text!r}: {str(exc).strip(chr(34) + chr(39))}") from None
    if not names:
        raise ValueError(f"{flag('transfer_to')} {text!r} names no metric; give a comma list, e.g. niqe,brisque")
    return names


def _weights_folder(folder: str | None) -> str | None:
    if folder:
        return folder
    from iqa_robustness.metrics.weights import ENV_VAR

    return os.environ.get(ENV_VAR) or None


_AMPLITUDES = ",".join(f"{a:g}" for a in AMPLITUDES)
OPTIONS: tuple[Option, ...] = (
    # -- the grid
    Option(
        "metric",
        "metrics: comma list, globs or 'all' of registered names, any pyiqa metric name, the name of an installed "
        "'iqa_robustness.metrics' entry point, or module:Name (a Metric subclass, a Metric, or a function returning "
        "one, imported from the current folder or sys.path)",
        default=DEFAULT_METRICS,
        metavar="METRICS",
        setting=True,
    ),
    Option(
        "attack",
        "attacks: comma list, globs or 'all', each name optionally with hyperparameters, e.g. "
        "'ifgsm(eps=4/255,iters=20),mifgsm' (ints, floats, a/b, true/false, strings)",
        default="all",
        metavar="ATTACKS",
        setting=True,
    ),
    Option(
        "grid",
        "what the options left out make: 'auto': 'quick' for the main job on the CPU (no GPU, and neither "
        f"{PREFIX}metric nor {PREFIX}attack given), else 'full'; 'quick': without {PREFIX}dataset the first "
        f"{QUICK_MAX_IMAGES} sample images at {QUICK_IMAGE_SIZE} px (unless {PREFIX}max-images / {PREFIX}image-size "
        f"say otherwise), black-box attacks at most {QUICK_MAX_QUERIES} queries per image and universal training at "
        f"most {QUICK_UAP_MAX_STEPS} steps ({PREFIX}queries auto / {PREFIX}uap-steps auto), every attack and metric "
        f"as on the full grid, torch on {QUICK_TORCH_THREADS} thread unless OMP_NUM_THREADS says; 'full': every "
        "image at native size, with the CPU's caps of "
        f"{PREFIX}queries auto / {PREFIX}uap-steps auto on a CPU; each case's params record it as suite_grid",
        default="auto",
        choices=GRIDS,
        setting=True,
        field="grid",
    ),
    Option(
        "eps",
        "L-inf budgets, comma list of fractions or numbers (e.g. 2/255,4/255,8/255,16/255): every attack with an "
        "L-inf bound runs once per budget, its bound (and step) derived from it, case ids ifgsm-eps4-...; the summary "
        "gains a budget column and budgets.csv the areas under gain and R against budget",
        parse=budgets,
        shown_default="no budget axis: the benchmark's hyperparameters",
        metavar="BUDGETS",
        field="budgets",
        setting=True,
    ),
    Option(
        "dataset",
        "test dataset by name (sample, msu5, ...) or folder path; repeatable",
        action="append",
        setting=True,
        shown_default=f"{DEFAULT_DATASET} (quick grid: its first {QUICK_MAX_IMAGES} images at {QUICK_IMAGE_SIZE} px)",
    ),
    Option(
        "train_dataset",
        "training set for universal attacks, name or folder; repeatable",
        action="append",
        metavar="DATASET",
        setting=True,
        shown_default=DEFAULT_DATASET,
    ),
    Option(
        "amplitude",
        "amplitudes for universal perturbations, comma list",
        default=_AMPLITUDES,
        parse=amplitudes,
        metavar="AMPLITUDES",
        setting=True,
    ),
    Option(
        "defence",
        "put these defences in front of every selected metric (comma list: jpeg(q=50),median(k=3),resize, ...; "
        "'none' keeps the undefended metric): metric m becomes jpeg50+m, median3+m, ...; each is attacked adaptively "
        "(BPDA through non-differentiable steps, EoT over random ones) and non-adaptively (the images made against m, "
        "then defended); `iqa-robustness list defences` lists them",
        metavar="DEFENCES",
        setting=True,
    ),
    Option(
        "eot",
        "draws averaged per gradient of a random defence (expectation over transformation; default: "
        f"{DEFAULT_EOT}), and of a metric whose scores are draws (its random-metric check; default: none; "
        "docs/verdict.md)",
        parse=Positive("draws"),
        field="eot",
        setting=True,
        shown_default=f"{DEFAULT_EOT} for a random defence, none for a random metric",
    ),
    Option(
        "certify",
        "add the certify case kind: per metric and dataset, each image's median-smoothing certificate against L2 "
        "perturbations, beside what the session's image attacks and an L2 PGD on the smoothed metric achieve "
        f"(parameters: {PREFIX}attack 'certify(sigma=0.12,n=1000,eps=0.05,alpha=0.001)'; docs/certify.md)",
        action="store_true",
        setting=True,
    ),
    Option(
        "fooled_gain",
        "the verdict's threshold: a metric is fooled at a budget when an attack's normalised absolute gain reaches "
        "this (docs/verdict.md)",
        parse=fooled_gain,
        metavar="GAIN",
        setting=True,
        shown_default="0.2",
    ),
    Option(
        "transfer_to",
        "also score every case's adversarial images (image attacks and universal perturbations) with these metrics "
        f"(comma list or globs, as {PREFIX}metric): per source x target the normalised absolute gain and R on the "
        "target, in transfer.csv; `iqa-robustness transfer` draws the matrix",
        metavar="METRICS",
        field="transfer_to",
        to_field=transfer_targets,
        setting=True,
    ),
    # -- data
    Option(
        "max_images",
        "use the first N images (clips of a video set)",
        parse=Positive("images"),
        metavar="N",
        field="max_images",
        setting=True,
        shown_default=f"all (quick grid: {QUICK_MAX_IMAGES} of the sample set)",
    ),
    Option(
        "max_frames",
        "use the first N frames of each clip of a video set",
        parse=Positive("frames"),
        metavar="N",
        field="max_frames",
        setting=True,
        shown_default="all",
    ),
    Option(
        "image_size",
        "resize images so the longer side is N px (fast CPU runs)",
        parse=Positive("pixels"),
        metavar="N",
        field="image_size",
        setting=True,
        shown_default=f"native (quick grid: {QUICK_IMAGE_SIZE} for the sample set)",
    ),
    Option(
        "on_bad_image",
        "an image the metric cannot take (smaller than its minimum side, unreadable, a NaN clean score): 'skip' "
        "records it as a skipped row with its reason and scores the rest (a case fails only when nothing is left); "
        "'fail' raises the error and the case fails",
        default="skip",
        choices=("skip", "fail"),
        field="on_bad_image",
        setting=True,
    ),
    Option(
        "mos",
        "subjective scores (CSV image_name,mos) of the test images: every case adds SROCC/PLCC/KROCC before and "
        "after the attack",
        metavar="CSV",
        field="mos_file",
        setting=True,
        shown_default="a test set's own mos.csv beside its images",
    ),
    Option(
        "jpeg_quality",
        "attack JPEG copies of the test images at these qualities (comma list, e.g. 30,70), rows named "
        "<image>-jpeg<q>: the distorted inputs of full-reference metrics, and for no-reference metrics the JPEG "
        "instead of the clean image",
        parse=qualities,
        metavar="QUALITIES",
        field="jpeg_quality",
        setting=True,
        shown_default="80 for full-reference metrics, none for no-reference ones",
    ),
    Option(
        "jpeg_colour",
        "code: the benchmark's JPEG (OpenCV reading RGB as BGR); rgb: a correct RGB JPEG",
        default="code",
        choices=("code", "rgb"),
        field="jpeg_colour",
        setting=True,
    ),
    # -- attacks' budgets
    Option(
        "queries",
        "query budget per image of the black-box attacks: N queries, or 'auto': each attack's own budget on a GPU "
        f"(10000 for most), at most {CPU_MAX_QUERIES} on the CPU ({QUICK_MAX_QUERIES} on the quick grid); the case's "
        "params record it as queries and query_limit",
        default="auto",
        parse=AutoOr("queries per image"),
        metavar="N",
        field="queries",
        to_field=lambda v: v if isinstance(v, int) else None,
        setting=True,
    ),
    Option(
        "uap_steps",
        "universal training: N optimisation steps, 'epochs' (the attacks' full epochs, as the benchmark), or "
        f"'auto': full epochs on a GPU, at most {CPU_UAP_MAX_STEPS} steps on the CPU ({QUICK_UAP_MAX_STEPS} on the "
        "quick grid); the rows record train_steps and full_epochs",
        default="auto",
        parse=AutoOr("steps", ("auto", "epochs")),
        metavar="N",
        field=("uap_steps", "uap_full_epochs"),
        to_field=_uap_steps_fields,
        setting=True,
    ),
    Option(
        "uap_file",
        "apply this published perturbation (MSU .npy or CVIU .png) instead of training",
        metavar="FILE",
        field="uap_file",
        setting=True,
    ),
    Option(
        "clamp_uap",
        "clamp perturbed images to [0,1] (MSU code does not)",
        action="store_true",
        field="clamp_uap",
        setting=True,
    ),
    # -- the machine
    Option("device", "torch device; auto = cuda when present", default="auto", field="device", setting=True),
    Option(
        "batch_size",
        "images per attack batch, or 'auto': 32 on a GPU, 8 on the CPU; on CUDA out-of-memory batches are split in "
        "halves and the smaller size is kept for the metric",
        default="auto",
        parse=AutoOr("images per batch"),
        metavar="N",
        field="batch_size",
        to_field=lambda v: v if isinstance(v, int) else 0,
        setting=True,
    ),
    Option(
        "amp",
        "run metrics under autocast (faster on GPUs; scores change: `iqa-robustness bench --amp` says how much)",
        choices=("fp16", "bf16"),
        field="amp",
        setting=True,
    ),
    Option(
        "channels_last",
        "channels-last memory layout for metrics and inputs",
        action="store_true",
        field="channels_last",
        setting=True,
    ),
    Option("seed", "base random seed", default=0, parse=int, metavar="N", field="seed", setting=True),
    # -- weights
    Option(
        "weights_dir",
        "folder searched first for parameter files",
        metavar="DIR",
        field="weights_dir",
        to_field=_weights_folder,
        shown_default="$IQA_ROBUSTNESS_WEIGHTS",
    ),
    Option(
        "random_weights",
        "smoke mode: random weights, no downloads; results are labelled, never benchmark numbers",
        action="store_true",
        field="random_weights",
        setting=True,
    ),
    # -- results and tracking
    Option(
        "results_dir",
        "per-image CSVs, summary, artefacts",
        default="results",
        metavar="DIR",
        field="results_dir",
        to_field=Path,
        setting=True,
    ),
    Option(
        "mlflow_uri",
        "MLflow tracking URI",
        metavar="URI",
        shown_default="$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current folder",
    ),
    Option("experiment", "MLflow experiment", default=DEFAULT_EXPERIMENT, metavar="NAME"),
    Option("no_mlflow", "do not log to MLflow", action="store_true"),
    Option(
        "baseline",
        "CSV of thresholds (metric,attack,score,min,max; globs allowed); cases outside fail",
        metavar="CSV",
        setting=True,
    ),
    # -- long runs
    Option(
        "resume",
        f"skip every case whose result is already in {PREFIX}results-dir for the same case fingerprint (metric and "
        "weights checksum, attack and hyperparameters, data content, image size, seed, suite version)",
        action="store_true",
        field="resume",
        setting=True,
    ),
    Option(
        "shard",
        "K/N: run shard K of N (1-based) of the grid's cases; the N shards together are the grid, "
        "`iqa-robustness merge` combines their results folders",
        parse=shard,
        metavar="K/N",
        setting=True,
    ),
    Option(
        "shard_images",
        "K/N: every case runs on image shard K of N (every N-th image from the K-th); `iqa-robustness merge` joins "
        "the shards' rows and scores the union",
        parse=shard,
        metavar="K/N",
        field="image_shard",
        to_field=shard_pair,
        setting=True,
        record_as="image_shard",
    ),
    Option(
        "train_only",
        f"only train the universal perturbations of the grid (into {PREFIX}results-dir/perturbations), for shards "
        "to load; evaluates nothing",
        action="store_true",
    ),
)

#: the options by name
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    """The row of ``name`` (``batch_size`` or ``batch-size``).

    Raises:
        KeyError: no such option, naming the closest ones.
    """
    key = name.removeprefix(PREFIX).removeprefix("--").replace("-", "_")
    if key not in BY_NAME:
        import difflib

        close = difflib.get_close_matches(key, BY_NAME, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no option {name!r}{hint}")
    return BY_NAME[key]


def flag(name: str) -> str:
    """``flag("results_dir")`` -> ``--iqa-results-dir``: for code that writes pytest command lines (works anywhere)."""
    return option(name).flag


def defaults() -> dict[str, Any]:
    """Every option at its default, as parsed (what a run that gives none gets)."""
    return {
        o.name: (o.parse(o.default) if o.parse is not None and isinstance(o.default, str) else o.default)
        for o in OPTIONS
    }


# -- the quick grid ------------------------------------------------------------------------------------------------
def resolve_grid(values: Mapping[str, Any], on_cuda: bool) -> str:
    """The grid a session runs: ``quick`` or ``full``.

    ``auto`` is ``quick`` for the main job on the CPU (no GPU, and neither ``--iqa-metric`` nor
    ``--iqa-attack`` given: the default grid), ``full`` otherwise; ``quick`` and ``full`` as given.
    """
    grid = str(values.get("grid") or "auto")
    if grid not in GRIDS:
        raise ValueError(f"{flag('grid')} takes one of {', '.join(GRIDS)}; got {grid!r}")
    if grid != "auto":
        return grid
    selected = values.get("metric", DEFAULT_METRICS) != DEFAULT_METRICS or values.get("attack", "all") != "all"
    return "full" if on_cuda or selected else "quick"


def grid_values(values: Mapping[str, Any], on_cuda: bool) -> dict[str, Any]:
    """The options with what the grid fills in for those left out (``grid`` resolved to ``quick`` or ``full``).

    On the quick grid, without ``dataset``, the sample set is cut to its first
    :data:`~iqa_robustness.conventions.QUICK_MAX_IMAGES` images at
    :data:`~iqa_robustness.conventions.QUICK_IMAGE_SIZE` px (each unless given). The query and step caps of
    ``auto`` follow the resolved grid in :class:`~iqa_robustness.runner.config.SuiteConfig`.
    """
    out = dict(values)
    out["grid"] = resolve_grid(values, on_cuda)
    if out["grid"] == "quick" and not out.get("dataset"):
        if out.get("max_images") is None:
            out["max_images"] = QUICK_MAX_IMAGES
        if out.get("image_size") is None:
            out["image_size"] = QUICK_IMAGE_SIZE
    return out


def settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options a session records (``SessionRecord.settings``), as JSON values, under their record names."""
    return {o.record_as or o.name: o.record(values.get(o.name)) for o in OPTIONS if o.setting}


def config_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """``SuiteConfig`` keyword arguments from option values (:meth:`SuiteConfig.from_options`).

    Raises:
        ValueError: a value that converts to no field value (``--iqa-transfer-to`` naming no metric).
    """
    fields: dict[str, Any] = {}
    for o in OPTIONS:
        fields.update(o.fields(values.get(o.name, o.default)))
    return fields


# -- the reference page ----------------------------------------------------------------------------------------------
REFERENCE_COMMAND = "python -m iqa_robustness.runner.options docs/options.md"


def reference_page() -> str:
    """``docs/options.md``: every option, generated from :data:`OPTIONS`."""
    lines = [
        "# Options of the pytest plugin",
        "",
        f"<!-- generated from iqa_robustness/runner/options.py by `{REFERENCE_COMMAND}`; do not edit -->",
        "",
        f"Every option has the prefix `{PREFIX}` and is listed by `pytest --help` under "
        f'"{GROUP[1]}". Each is also accepted by its short name without the prefix (`--metric`, '
        "`--attack`, `--device`, ...) wherever no other pytest plugin or `conftest.py` of the run declares that "
        "name: in a project whose `conftest.py` has its own `--device`, `--device` is that project's and "
        f"`{PREFIX}device` the suite's. Code that writes command lines (CI jobs, scripts) should use the "
        "prefixed names, which work in any environment.",
        "",
        "## The quick grid and the full grid",
        "",
        f"`{PREFIX}grid` decides what the options left out make. The main job (`pytest` in the checkout: the "
        "default metrics and every attack on the built-in `sample` photographs) is the quick grid where the "
        f"metrics run on the CPU (`{PREFIX}grid auto` without a GPU, and neither `{PREFIX}metric` nor "
        f"`{PREFIX}attack` given), so that a laptop shows results in minutes: every attack and metric of the "
        f"full grid, on the first {QUICK_MAX_IMAGES} sample images at {QUICK_IMAGE_SIZE} px on the longer side, "
        f"black-box attacks at most {QUICK_MAX_QUERIES} queries per image and universal perturbations trained "
        f"for at most {QUICK_UAP_MAX_STEPS} steps, with torch on {QUICK_TORCH_THREADS} thread unless "
        "`OMP_NUM_THREADS` says otherwise (batches of a few small images gain little from more threads, and on "
        "a CPU that other programs share, more threads wait on each other). "
        f"`{PREFIX}grid full` runs the full grid on the CPU too: every "
        f"sample image at native size, with the CPU's caps of {CPU_MAX_QUERIES} queries and {CPU_UAP_MAX_STEPS} "
        f"steps (`{PREFIX}queries N`, `{PREFIX}uap-steps epochs` lift them); on a GPU the full grid is the "
        "default, with each attack's own query budget and epochs. An option given on the command line is used "
        "as given (`--iqa-max-images 8` on the quick grid tests 8 images). Each case's params record what it "
        "ran with: `suite_grid`, `image_size`, `max_images`, `query_limit` (the rule that set the query budget), "
        "`train_steps` and `full_epochs`.",
        "",
        "## Options",
        "",
        "| option | short name | default | session setting | `SuiteConfig` field | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for o in OPTIONS:
        value = "" if not o.takes_value else f" {o.metavar or o.name.upper()}"
        if o.choices:
            value = " {" + ",".join(o.choices) + "}"
        fields = ", ".join(o.field) if isinstance(o.field, tuple) else (o.field or "")
        cells = [
            f"`{o.flag}{value}`",
            f"`{o.short}`",
            o.default_text().replace("|", "\\|"),
            (o.record_as or o.name) if o.setting else "",
            f"`{fields}`" if fields else "",
            o.help.replace("|", "\\|").replace("<", "&lt;"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "A session setting is recorded in the results folder's `sessions/<id>.json`; "
        "`iqa-robustness merge` refuses shards whose settings differ (but for the shard, device, batch size, "
        "resume and results folder).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m iqa_robustness.runner.options [FILE]``: write the reference page to FILE (or print it)."""
    args = sys.argv[1:] if argv is None else argv
    page = reference_page()
    if args:
        Path(args[0]).write_text(page, encoding="utf-8")
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
