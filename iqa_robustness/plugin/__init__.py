"""The pytest plugin of the robustness suite: options, markers, the grid, session fixtures, reporting.

``pytest -m uap --metric linearity`` runs the universal attacks on LinearityIQA. The grid is
metric x attack x dataset (x train set x amplitude for universal attacks), built from the
registries in :func:`pytest_generate_tests`. Each case writes its :class:`~iqa_robustness.scores.results.CaseResult`
as JSON under ``--results-dir``; at the end of the session the controller process (the only one,
also under pytest-xdist) writes the MSU-format CSVs, the summary and the MLflow runs, and prints
a compact table.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from iqa_robustness.conventions import AMPLITUDES, CPU_MAX_QUERIES, CPU_UAP_MAX_STEPS, DEFAULT_EXPERIMENT

from .rooting import reroot

DEFAULT_METRICS = "cnniqa-live,niqe,brisque,paq2piq"
DEFAULT_DATASETS = ("sample",)
MARKERS = {
    "iterative": "FGSM-family attacks (fgsm, ifgsm, mifgsm, amifgsm)",
    "perceptual": "perceptually constrained attacks (korhonen, madc)",
    "blackbox": "query-based attacks that use scores only and run on every metric "
    "(square, parsimonious, onepixel, patch-rs, nes, square-uap)",
    "uap": "universal perturbations, trained once per metric (uap, cumulative-uap, generative-uap, cnn)",
    "learned": "attacks with a learned generator (generative-uap, cnn)",
    "video": "cases on a video metric or a video dataset (clips, or their frames for an image metric)",
    "gpu": "cases impractically slow without a GPU",
    "weights": "cases that need real (pretrained) metric weights",
    "slow": "cases that train a perturbation or run a heavy metric",
    "certify": "median-smoothing certificates against L2 perturbations (--certify, or --attack certify(...))",
}
STASH_SUITE = pytest.StashKey["object"]()
STASH_SESSION = pytest.StashKey[str]()
STASH_CONTROLLER = pytest.StashKey["object"]()  # the controller process's SessionController
STASH_EMPTY_GRIDS = pytest.StashKey[set]()  # node ids of grid tests that got no case
STASH_ATTACK_MARKERS = pytest.StashKey[bool]()  # the per-attack markers are registered

log = logging.getLogger("iqa_robustness")


def pytest_addoption(parser: pytest.Parser) -> None:
    cpu_cap = f"at most {CPU_UAP_MAX_STEPS} steps"
    amplitudes = ",".join(f"{a:g}" for a in AMPLITUDES)
    g = parser.getgroup("iqa-robustness", "adversarial robustness grid (iqa-robustness)")
    g.addoption(
        "--metric",
        default=DEFAULT_METRICS,
        help="metrics: comma list, globs or 'all' of registered names, any pyiqa metric name, the name of an "
        "installed 'iqa_robustness.metrics' entry point, or module:Name (a Metric subclass, a Metric, or a "
        f"function returning one, imported from the current folder or sys.path) (default: {DEFAULT_METRICS})",
    )
    g.addoption(
        "--attack",
        default="all",
        help="attacks: comma list, globs or 'all', each name optionally with hyperparameters, "
        "e.g. 'ifgsm(eps=4/255,iters=20),mifgsm' (ints, floats, a/b, true/false, strings; default: all)",
    )
    g.addoption(
        "--eps",
        default=None,
        help="L-inf budgets, comma list of fractions or numbers (e.g. 2/255,4/255,8/255,16/255): every attack "
        "with an L-inf bound runs once per budget, its bound (and step) derived from it, case ids ifgsm-eps4-...; "
        "summary gains a budget column and budgets.csv the areas under gain and R against budget "
        "(default: no budget axis, the benchmark's hyperparameters)",
    )
    g.addoption(
        "--certify",
        action="store_true",
        help="add the certify case kind: per metric and dataset, each image's median-smoothing certificate against "
        "L2 perturbations, beside what the session's image attacks and an L2 PGD on the smoothed metric achieve "
        "(parameters: --attack 'certify(sigma=0.12,n=1000,eps=0.05,alpha=0.001)'; docs/certify.md)",
    )
    g.addoption(
        "--dataset",
        action="append",
        default=None,
        help="test dataset by name (sample, msu5, ...) or folder path; repeatable (default: sample)",
    )
    g.addoption(
        "--train-dataset",
        action="append",
        default=None,
        help="training set for universal attacks, name or folder; repeatable (default: sample)",
    )
    g.addoption(
        "--amplitude",
        default=amplitudes,
        help=f"amplitudes for universal perturbations, comma list (default: {amplitudes})",
    )
    g.addoption("--device", default="auto", help="torch device; auto = cuda when present (default: auto)")
    g.addoption(
        "--batch-size",
        type=_batch_size,
        default=0,
        help="images per attack batch, or 'auto' (default): 32 on a GPU, 8 on the CPU; on CUDA out-of-memory "
        "batches are split in halves and the smaller size is kept for the metric",
    )
    g.addoption(
        "--weights-dir",
        default=os.environ.get("IQA_ROBUSTNESS_WEIGHTS"),
        help="folder searched first for parameter files (default: $IQA_ROBUSTNESS_WEIGHTS)",
    )
    g.addoption(
        "--random-weights",
        action="store_true",
        help="smoke mode: random weights, no downloads; results are labelled, never benchmark numbers",
    )
    g.addoption("--max-images", type=int, default=None, help="use the first N images (clips of a video set)")
    g.addoption("--max-frames", type=int, default=None, help="use the first N frames of each clip of a video set")
    g.addoption(
        "--image-size",
        type=int,
        default=None,
        help="resize images so the longer side is N px (fast CPU runs; default: native size)",
    )
    g.addoption(
        "--on-bad-image",
        choices=["skip", "fail"],
        default="skip",
        help="an image the metric cannot take (smaller than its minimum side, unreadable, a NaN clean score): "
        "'skip' (default) records it as a skipped row with its reason and scores the rest (a case fails only "
        "when nothing is left); 'fail' raises the error and the case fails",
    )
    g.addoption("--seed", type=int, default=0, help="base random seed (default: 0)")
    g.addoption(
        "--uap-steps",
        type=_uap_steps,
        default="auto",
        help="universal training: N optimisation steps, 'epochs' (the attacks' full epochs, as the benchmark), or "
        f"'auto' (default): full epochs on a GPU, {cpu_cap} on the CPU",
    )
    g.addoption(
        "--queries",
        type=_queries,
        default="auto",
        help="query budget per image of the black-box attacks: N queries, or 'auto' (default): each attack's own "
        f"budget on a GPU (10000 for most), at most {CPU_MAX_QUERIES} on the CPU; the case's params record it as "
        "queries and query_limit",
    )
    g.addoption(
        "--jpeg-quality",
        default=None,
        help="attack JPEG copies of the test images at these qualities (comma list, e.g. 30,70), rows named "
        "<image>-jpeg<q>: the distorted inputs of full-reference metrics (default for them: 80), and for "
        "no-reference metrics the JPEG instead of the clean image (default for them: none)",
    )
    g.addoption(
        "--jpeg-colour",
        choices=["code", "rgb"],
        default="code",
        help="code: the benchmark's JPEG (OpenCV reading RGB as BGR, default); rgb: a correct RGB JPEG",
    )
    g.addoption(
        "--mos",
        default=None,
        help="subjective scores (CSV image_name,mos) of the test images: every case adds SROCC/PLCC/KROCC before "
        "and after the attack (default: a test set's own mos.csv beside its images)",
    )
    g.addoption(
        "--uap-file",
        default=None,
        help="apply this published perturbation (MSU .npy or CVIU .png) instead of training",
    )
    g.addoption(
        "--transfer-to",
        default=None,
        help="also score every case's adversarial images (image attacks and universal perturbations) with these "
        "metrics (comma list or globs, as --metric): per source x target the normalised absolute gain and R on the "
        "target, in transfer.csv; `iqa-robustness transfer` draws the matrix",
    )
    g.addoption(
        "--defence",
        default=None,
        help="put these defences in front of every selected metric (comma list: jpeg(q=50),median(k=3),resize, ...; "
        "`none` keeps the undefended metric): metric m becomes jpeg50+m, median3+m, ...; each is attacked "
        "adaptively (BPDA through non-differentiable steps, EoT over random ones) and non-adaptively (the "
        "images made against m, then defended); `iqa-robustness list defences` lists them",
    )
    g.addoption(
        "--eot",
        type=int,
        default=None,
        help="draws averaged per gradient of a random defence (expectation over transformation; default: 8), and "
        "of a metric whose scores are draws (its random-metric check; default: none; docs/verdict.md)",
    )
    g.addoption(
        "--fooled-gain",
        type=_fooled_gain,
        default=None,
        help="the verdict's threshold: a metric is fooled at a budget when an attack's normalised absolute gain "
        "reaches this (default: 0.2; docs/verdict.md)",
    )
    g.addoption("--clamp-uap", action="store_true", help="clamp perturbed images to [0,1] (MSU code does not)")
    g.addoption(
        "--mlflow-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current folder)",
    )
    g.addoption("--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment (default: {DEFAULT_EXPERIMENT})")
    g.addoption(
        "--amp",
        choices=["fp16", "bf16"],
        default=None,
        help="run metrics under autocast (faster on GPUs; scores change: `iqa-robustness bench --amp` says how much)",
    )
    g.addoption("--channels-last", action="store_true", help="channels-last memory layout for metrics and inputs")
    g.addoption("--no-mlflow", action="store_true", help="do not log to MLflow")
    g.addoption("--results-dir", default="results", help="per-image CSVs, summary, artefacts (default: ./results)")
    g.addoption(
        "--resume",
        action="store_true",
        help="skip every case whose result is already in --results-dir for the same case fingerprint (metric and "
        "weights checksum, attack and hyperparameters, data content, image size, seed, suite version)",
    )
    g.addoption(
        "--shard",
        type=_shard,
        default=None,
        help="K/N: run shard K of N (1-based) of the grid's cases; the N shards together are the grid, "
        "`iqa-robustness merge` combines their results folders",
    )
    g.addoption(
        "--shard-images",
        type=_shard,
        default=None,
        help="K/N: every case runs on image shard K of N (every N-th image from the K-th); "
        "`iqa-robustness merge` joins the shards' rows and scores the union",
    )
    g.addoption(
        "--train-only",
        action="store_true",
        help="only train the universal perturbations of the grid (into --results-dir/perturbations), "
        "for shards to load; evaluates nothing",
    )
    g.addoption(
        "--baseline",
        default=None,
        help="CSV of thresholds (metric,attack,score,min,max; globs allowed); cases outside fail",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Markers, the session id, xdist grouping; names are checked when the grid's options are given.

    The plugin is loaded in every pytest run of an environment that has the package installed, so
    nothing here imports torch unless the robustness options are on the command line: a project's
    own unrelated tests start as fast as without the plugin. The per-attack markers are registered
    when the grid is generated (and for ``pytest --markers``).
    """
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    if _grid_options_given(config) or config.getoption("markers", False):  # `pytest --markers` lists them all
        _register_attack_markers(config)
    if _grid_options_given(config):
        _check_names(config)
    _group_metrics_in_workers(config)
    if not hasattr(config, "workerinput"):
        config.stash[STASH_SESSION] = uuid.uuid4().hex[:12]
        from iqa_robustness.plugin.session import SessionController

        controller = SessionController(config, config.stash[STASH_SESSION])
        if _grid_options_given(config) or config.getoption("--results-dir") != "results":
            controller.check_results_dir()
        config.stash[STASH_CONTROLLER] = controller
        config.pluginmanager.register(controller, "iqa-robustness-session")
    else:
        config.stash[STASH_SESSION] = config.workerinput["iqa_session"]


def pytest_unconfigure(config: pytest.Config) -> None:
    controller = config.stash.get(STASH_CONTROLLER, None)
    if controller is not None:
        controller.restore_signal_handlers()


def _grid_options_given(config: pytest.Config) -> bool:
    return (
        config.getoption("--metric") != DEFAULT_METRICS
        or config.getoption("--attack") != "all"
        or config.getoption("--eps") is not None
        or config.getoption("--defence") is not None
        or config.getoption("--certify")
    )


def budgets_option(config: pytest.Config) -> tuple[float, ...] | None:
    """The budgets of ``--eps``, or ``None`` without it.

    Raises:
        pytest.UsageError: a value that is no budget, with the form expected.
    """
    from iqa_robustness.conventions import parse_budgets

    text = config.getoption("--eps")
    if text is None:
        return None
    try:
        return parse_budgets(text)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _register_attack_markers(config: pytest.Config) -> None:
    if config.stash.get(STASH_ATTACK_MARKERS, False):
        return
    from iqa_robustness.attacks import list_attacks

    for name in list_attacks():
        config.addinivalue_line("markers", f"{_marker(name)}: the {name} attack")
    config.stash[STASH_ATTACK_MARKERS] = True


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """``pytest --dataset /abs/path`` from a checkout: root the session in the checkout, not in the dataset."""
    reroot(early_config, args)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # pytest-xdist hook (controller side)
    node.workerinput["iqa_session"] = node.config.stash[STASH_SESSION]
    node.workerinput["iqa_loadgroup"] = node.config.getoption("dist", "no") == "loadgroup"


def grid_metrics(config: pytest.Config) -> list[str]:
    """The metrics of the grid: ``--metric``, each behind every ``--defence`` (registered here, in every process).

    Without ``--defence`` the selected metrics; with it, ``none`` keeps a metric and every other
    defence adds ``<label>+<metric>`` (:func:`iqa_robustness.defences.register_defended`).
    """
    from iqa_robustness.defences import DEFAULT_EOT, parse_defences, register_defended
    from iqa_robustness.metrics import list_metrics

    metrics = list_metrics(config.getoption("--metric"))
    defences = parse_defences(config.getoption("--defence"))
    if not defences:
        return metrics
    eot = config.getoption("--eot") or DEFAULT_EOT
    return [m if d is None else register_defended(d, m, eot) for m in metrics for d in defences]


def _check_names(config: pytest.Config) -> None:
    """Unknown metric or attack names, and bad attack specs, stop the session with one line (and a "did you mean").

    Resolving the metric names also registers those given as ``module:Name``, entry-point or
    pyiqa names, in the controller and again in every pytest-xdist worker (each runs this hook
    with the same options), so cases, CSVs and MLflow all get the metric's spec name.
    """
    from iqa_robustness.metrics import list_metrics
    from iqa_robustness.runner.grid import budgets_of, grid_attacks

    budgets = budgets_option(config)
    try:
        list_metrics(config.getoption("--metric"))
        grid_metrics(config)
        for spec in grid_attacks(config.getoption("--attack"), config.getoption("--certify")):
            if budgets is not None:
                budgets_of(spec, budgets)  # a spec giving the value --eps sets stops the session here
    except (KeyError, ValueError) as exc:
        raise pytest.UsageError(str(exc).strip("'\"")) from None


def _group_metrics_in_workers(config: pytest.Config) -> None:
    """Under ``-n N`` without an explicit ``--dist``, keep each metric's cases in one worker.

    The cases carry ``xdist_group(metric)`` marks, which pytest-xdist honours only with
    ``--dist loadgroup``; a model then loads once per worker, not once per case's worker, and a universal
    perturbation trains once, not once in each worker that runs one of its amplitudes. A worker parses the
    command line again (``-n`` without ``--dist``: no grouping) before this hook, so the controller's choice
    travels in ``workerinput``: the worker's collection then tags the cases with their group, which the
    controller's scheduler needs.
    """
    if hasattr(config, "workerinput"):
        if config.workerinput.get("iqa_loadgroup"):
            config.option.loadgroup = True
        return
    args = config.invocation_params.args
    explicit = any(a == "--dist" or a.startswith("--dist=") or a.startswith("-d") for a in args)
    if getattr(config.option, "dist", "no") == "load" and not explicit:
        config.option.dist = "loadgroup"


def _pin_worker_resources(config: pytest.Config) -> None:
    """Split CPU threads between xdist workers; give each worker its own GPU when there are several."""
    import torch

    workers = int(config.workerinput.get("workercount", 1))
    index = int(config.workerinput["workerid"].lstrip("gw") or 0)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    if config.getoption("--device") == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        config.option.device = f"cuda:{index % torch.cuda.device_count()}"


def _marker(attack: str) -> str:
    return attack.replace("-", "_")


def _batch_size(value: str) -> int:
    """``auto`` -> 0 (chosen by the suite), else a positive int."""
    if value.strip().lower() == "auto":
        return 0
    size = int(value)
    if size < 1:
        raise ValueError(f"--batch-size must be a positive number of images or 'auto', got {value}")
    return size


def _uap_steps(value: str) -> int | str:
    """``auto``, ``epochs`` or a positive number of steps."""
    word = value.strip().lower()
    if word in ("auto", "epochs"):
        return word
    steps = int(value)
    if steps < 1:
        raise ValueError(f"--uap-steps must be a positive number of steps, 'epochs' or 'auto', got {value}")
    return steps


def _fooled_gain(value: str) -> float:
    from iqa_robustness.scores.verdict import parse_fooled_gain

    return parse_fooled_gain(value)


def _queries(value: str) -> int | str:
    """``auto`` or a positive number of queries."""
    if value.strip().lower() == "auto":
        return "auto"
    queries = int(value)
    if queries < 1:
        raise ValueError(f"--queries must be a positive number of queries per image or 'auto', got {value}")
    return queries


def _shard(value: str) -> str:
    """``K/N`` checked (1 <= K <= N), kept as text."""
    from iqa_robustness.runner.config import parse_shard

    k, n = parse_shard(value)
    return f"{k}/{n}"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


#: the grid's test fixtures, and the kind of case each one takes (:func:`iqa_robustness.runner.grid.case_kind`)
KIND_FIXTURES = {"image_case": "image", "universal_case": "universal", "certify_case": "certify"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    fixture = next((f for f in KIND_FIXTURES if f in metafunc.fixturenames), None)
    if fixture is None:
        return
    from iqa_robustness.data.registry import is_video_dataset
    from iqa_robustness.metrics import get_spec
    from iqa_robustness.runner.grid import build_grid, case_kind, grid_attacks, skip_reason

    _register_attack_markers(metafunc.config)
    opt = metafunc.config.getoption
    specs = grid_attacks(opt("--attack"), opt("--certify"))
    budgets = budgets_option(metafunc.config)
    grid = build_grid(
        metrics=grid_metrics(metafunc.config),
        attacks=[a for a in specs if case_kind(a) == KIND_FIXTURES[fixture]],
        datasets=opt("--dataset") or list(DEFAULT_DATASETS),
        amplitudes=[float(a) for a in _csv(opt("--amplitude"))],
        # a published perturbation names its own provenance: its file stands in for the training set
        train_datasets=[opt("--uap-file")] if opt("--uap-file") else opt("--train-dataset") or list(DEFAULT_DATASETS),
        budgets=budgets,
        companions=specs,
    )
    video_sets = {d for d in {case.dataset for case in grid} if is_video_dataset(d)}
    params = []
    for case in grid:
        spec, cls = get_spec(case.metric), case.attack_spec.cls
        # a defended metric's cases stay with the undefended metric's: the non-adaptive ones attack it
        marks = [getattr(pytest.mark, _marker(cls.name)), pytest.mark.xdist_group(case.base_metric)]
        if cls.family in ("iterative", "perceptual", "blackbox"):
            marks.append(getattr(pytest.mark, cls.family))
        if cls.learned or cls.family == "learned":
            marks.append(pytest.mark.learned)
        if cls.universal:
            marks += [pytest.mark.uap, pytest.mark.slow]
        if spec.is_video or case.dataset in video_sets:
            marks.append(pytest.mark.video)
        if spec.needs_gpu:
            marks.append(pytest.mark.gpu)
        if spec.heavy:
            marks.append(pytest.mark.slow)
        if not opt("--random-weights"):
            marks.append(pytest.mark.weights)
        if budgets is not None and (reason := skip_reason(case, budgets)):  # no value --eps could set
            marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param(case, id=case.id, marks=marks))
    if not params:
        metafunc.config.stash.setdefault(STASH_EMPTY_GRIDS, set()).add(metafunc.definition.nodeid)
    metafunc.parametrize(fixture, params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tag grid cases for the controller; keep the shard's cases (``--shard``, ``--train-only``).

    A grid item carries its case id as a user property, so its reports tell the controller
    (also under pytest-xdist) which case began and ended. ``--train-only`` keeps one universal
    case per perturbation to train; ``--shard K/N`` keeps every N-th case of the grid from the
    K-th, in the grid's order, so the N shards are disjoint and together the grid. The
    placeholder pytest makes for a test whose grid is empty (``--attack ifgsm`` selects no
    universal case) is deselected too, so the summary counts cases only.
    """
    from iqa_robustness.plugin.session import CASE_FIELDS_PROPERTY, CASE_PROPERTY

    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    trained: set[tuple] = set()
    grid_index = 0
    shard = config.getoption("--shard")
    k, n = (int(part) for part in shard.split("/")) if shard else (1, 1)
    for item in items:
        if _is_empty_grid_placeholder(item):
            dropped.append(item)
            continue
        case = _case_of(item)
        if case is None:
            keep.append(item)
            continue
        if config.getoption("--train-only"):
            key = (case.metric, case.attack, case.train_dataset)
            if not case.universal or key in trained:
                dropped.append(item)
                continue
            trained.add(key)
        mine = grid_index % n == k - 1
        grid_index += 1
        if not mine:
            dropped.append(item)
            continue
        fields = {
            "metric": case.metric,
            "attack": case.attack,
            "dataset": case.dataset,
            "amplitude": case.amplitude,
            "train_dataset": case.train_dataset,
            "budget": case.budget,
            "defence_mode": case.defence_mode,
            "params": dict(case.run_spec.kwargs),
        }
        item.user_properties += [(CASE_PROPERTY, case.id), (CASE_FIELDS_PROPERTY, fields)]
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _case_of(item: pytest.Item):
    """The grid case an item runs, or None for any other test."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return next((params[f] for f in KIND_FIXTURES if f in params), None)


def _is_empty_grid_placeholder(item: pytest.Item) -> bool:
    return item.nodeid.split("[", 1)[0] in item.config.stash.get(STASH_EMPTY_GRIDS, set())


@pytest.fixture(scope="session")
def suite(request: pytest.FixtureRequest):
    """The session's :class:`~iqa_robustness.runner.suite.Suite`: metrics, datasets, clean scores, perturbations."""
    from iqa_robustness.runner.config import SuiteConfig, parse_shard
    from iqa_robustness.runner.suite import Suite

    if hasattr(request.config, "workerinput"):
        from iqa_robustness.plugin.session import stop_on_sigterm

        _pin_worker_resources(request.config)
        stop_on_sigterm(Path(request.config.getoption("--results-dir")), request.config.stash[STASH_SESSION])

    opt = request.config.getoption
    uap_steps = opt("--uap-steps")
    config = SuiteConfig(
        device=opt("--device"),
        batch_size=opt("--batch-size"),
        weights_dir=opt("--weights-dir"),
        random_weights=opt("--random-weights"),
        max_images=opt("--max-images"),
        max_frames=opt("--max-frames"),
        image_size=opt("--image-size"),
        seed=opt("--seed"),
        results_dir=Path(opt("--results-dir")),
        uap_file=opt("--uap-file"),
        uap_steps=uap_steps if isinstance(uap_steps, int) else None,  # "auto" / "epochs" are words
        uap_full_epochs=uap_steps == "epochs",
        clamp_uap=opt("--clamp-uap"),
        amp=opt("--amp"),
        channels_last=opt("--channels-last"),
        resume=opt("--resume"),
        image_shard=parse_shard(opt("--shard-images"), "--shard-images") if opt("--shard-images") else None,
        on_bad_image=opt("--on-bad-image"),
        mos_file=opt("--mos"),
        jpeg_quality=parse_qualities(opt("--jpeg-quality")),
        jpeg_colour=opt("--jpeg-colour"),
        budgets=budgets_option(request.config),
        transfer_to=transfer_option(request.config),
        queries=opt("--queries") if isinstance(opt("--queries"), int) else None,  # "auto" is a word
        eot=opt("--eot"),
    )
    suite = Suite(config)
    request.config.stash[STASH_SUITE] = suite
    return suite


def transfer_option(config: pytest.Config) -> tuple[str, ...] | None:
    """``--transfer-to`` resolved to metric names (as ``--metric``); None without the option.

    Raises:
        pytest.UsageError: a name no registry knows (the message suggests the closest ones).
    """
    text = config.getoption("--transfer-to")
    if not text:
        return None
    from iqa_robustness.metrics import list_metrics

    try:
        names = tuple(list_metrics(text))
    except (KeyError, ValueError) as exc:
        raise pytest.UsageError(f"--transfer-to {text!r}: {exc}") from None
    if not names:
        raise pytest.UsageError(f"--transfer-to {text!r} names no metric; give a comma list, e.g. niqe,brisque")
    return names


def parse_qualities(text: str | None) -> tuple[int, ...] | None:
    """``"30,70"`` -> ``(30, 70)``; None without the option.

    Raises:
        pytest.UsageError: a quality that is not an integer from 1 to 100.
    """
    if not text:
        return None
    try:
        qualities = tuple(int(q) for q in text.split(",") if q.strip())
    except ValueError:
        raise pytest.UsageError(f"--jpeg-quality takes integers from 1 to 100, e.g. 30,70; got {text!r}") from None
    if not qualities or any(not 1 <= q <= 100 for q in qualities):
        raise pytest.UsageError(f"--jpeg-quality takes integers from 1 to 100, e.g. 30,70; got {text!r}")
    return qualities


@pytest.fixture(scope="session")
def baseline(request: pytest.FixtureRequest):
    """Thresholds from ``--baseline`` (None without one: cases then record and pass)."""
    from iqa_robustness.report.baseline import Baseline

    path = request.config.getoption("--baseline")
    return Baseline.load(path) if path else None


@pytest.fixture
def case_results_dir(request: pytest.FixtureRequest) -> Path:
    """Where this session's per-case JSON files go (shared by all xdist workers)."""
    session = request.config.stash[STASH_SESSION]
    path = Path(request.config.getoption("--results-dir")) / "cases" / session
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The controller writes the session's files and ends its MLflow run (also after SIGTERM or Ctrl-C)."""
    controller = config.stash.get(STASH_CONTROLLER, None)
    if controller is not None:
        controller.finish(exitstatus, terminalreporter.write_line)
