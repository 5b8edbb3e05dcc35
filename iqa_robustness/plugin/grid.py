"""The grid as pytest cases: markers, name checks, parametrisation, shards, and xdist grouping.

The grid is metric x attack x dataset (x train set x amplitude for universal attacks), built from
the registries in :func:`pytest_generate_tests`; what the options leave out the grid fills in
(:func:`~iqa_robustness.runner.options.grid_values`: the quick grid on the CPU). Each case's marks
(family, ``uap``, ``gpu``, ``weights``, ``xdist_group(metric)``, ...) are attached inside its
``pytest.param``, where pytest-xdist's ``loadgroup`` sees them.
"""

from __future__ import annotations

from typing import Any

import pytest

from iqa_robustness.runner.options import DEFAULT_DATASET, DEFAULT_METRICS

from .options import SHORT_NAMES, taken_short_names, value, values

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
    "certify": "median-smoothing certificates against L2 perturbations (--iqa-certify, or --iqa-attack certify(...))",
}
#: the grid's test fixtures, and the kind of case each one takes (:func:`iqa_robustness.runner.grid.case_kind`)
KIND_FIXTURES = {"image_case": "image", "universal_case": "universal", "certify_case": "certify"}
STASH_EMPTY_GRIDS = pytest.StashKey[set]()  # node ids of grid tests that got no case
STASH_ATTACK_MARKERS = pytest.StashKey[bool]()  # the per-attack markers are registered
STASH_GRID = pytest.StashKey[dict]()  # the options with what the grid filled in (grid_values)


def register_markers(config: pytest.Config) -> None:
    """The family markers always; the per-attack ones when the grid's options are given or for ``--markers``.

    The plugin is loaded in every pytest run of an environment that has the package installed, so
    nothing here imports torch unless the robustness options are on the command line: a project's
    own unrelated tests start as fast as without the plugin. The per-attack markers are registered
    when the grid is generated otherwise.
    """
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    if grid_options_given(config) or config.getoption("markers", False):  # `pytest --markers` lists them all
        _register_attack_markers(config)
    if grid_options_given(config):
        check_names(config)


def grid_options_given(config: pytest.Config) -> bool:
    return (
        value(config, "metric") != DEFAULT_METRICS
        or value(config, "attack") != "all"
        or value(config, "eps") is not None
        or value(config, "defence") is not None
        or value(config, "transfer_to") is not None
        or value(config, "certify")
    )


def _register_attack_markers(config: pytest.Config) -> None:
    if config.stash.get(STASH_ATTACK_MARKERS, False):
        return
    from iqa_robustness.attacks import list_attacks

    for name in list_attacks():
        config.addinivalue_line("markers", f"{_marker(name)}: the {name} attack")
    config.stash[STASH_ATTACK_MARKERS] = True


def _marker(attack: str) -> str:
    return attack.replace("-", "_")


def grid_options(config: pytest.Config) -> dict[str, Any]:
    """The session's options with what the grid fills in (``grid`` resolved on this machine; imports torch)."""
    if STASH_GRID not in config.stash:
        from iqa_robustness.runner.config import resolve_device
        from iqa_robustness.runner.options import grid_values

        on_cuda = resolve_device(value(config, "device")).type == "cuda"
        config.stash[STASH_GRID] = grid_values(values(config), on_cuda)
    return config.stash[STASH_GRID]


def grid_metrics(config: pytest.Config) -> list[str]:
    """The metrics of the grid: ``--iqa-metric``, each behind every defence (registered here, in every process).

    Without a defence the selected metrics; with ``--iqa-defence``, ``none`` keeps a metric and every
    other defence adds ``<label>+<metric>`` (:func:`iqa_robustness.defences.register_defended`).
    """
    from iqa_robustness.defences import DEFAULT_EOT, parse_defences, register_defended
    from iqa_robustness.metrics import list_metrics

    metrics = list_metrics(value(config, "metric"))
    defences = parse_defences(value(config, "defence"))
    if not defences:
        return metrics
    eot = value(config, "eot") or DEFAULT_EOT
    return [m if d is None else register_defended(d, m, eot) for m in metrics for d in defences]


def check_names(config: pytest.Config) -> None:
    """Unknown metric or attack names, and bad attack specs, stop the session with one line (and a "did you mean").

    Resolving the metric names also registers those given as ``module:Name``, entry-point or
    pyiqa names, in the controller and again in every pytest-xdist worker (each runs this hook
    with the same options), so cases, CSVs and MLflow all get the metric's spec name.
    """
    from iqa_robustness.metrics import list_metrics
    from iqa_robustness.runner.grid import budgets_of, grid_attacks
    from iqa_robustness.runner.options import transfer_targets

    budgets = value(config, "eps")
    try:
        list_metrics(value(config, "metric"))
        grid_metrics(config)
        for spec in grid_attacks(value(config, "attack"), value(config, "certify")):
            if budgets is not None:
                budgets_of(spec, budgets)  # a spec giving the value --iqa-eps sets stops the session here
        transfer_targets(value(config, "transfer_to"))
    except (KeyError, ValueError) as exc:
        raise pytest.UsageError(str(exc).strip("'\"")) from None


def group_metrics_in_workers(config: pytest.Config) -> None:
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    fixture = next((f for f in KIND_FIXTURES if f in metafunc.fixturenames), None)
    if fixture is None:
        return
    from iqa_robustness.data.registry import is_video_dataset
    from iqa_robustness.metrics import get_spec
    from iqa_robustness.runner.grid import build_grid, case_kind, grid_attacks, skip_reason

    config = metafunc.config
    _register_attack_markers(config)
    opts = grid_options(config)
    specs = grid_attacks(opts["attack"], opts["certify"])
    budgets = opts["eps"]
    grid = build_grid(
        metrics=grid_metrics(config),
        attacks=[a for a in specs if case_kind(a) == KIND_FIXTURES[fixture]],
        datasets=opts["dataset"] or [DEFAULT_DATASET],
        amplitudes=opts["amplitude"],
        # a published perturbation names its own provenance: its file stands in for the training set
        train_datasets=[opts["uap_file"]] if opts["uap_file"] else opts["train_dataset"] or [DEFAULT_DATASET],
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
        if not opts["random_weights"]:
            marks.append(pytest.mark.weights)
        if budgets is not None and (reason := skip_reason(case, budgets)):  # no value --iqa-eps could set
            marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param(case, id=case.id, marks=marks))
    if not params:
        config.stash.setdefault(STASH_EMPTY_GRIDS, set()).add(metafunc.definition.nodeid)
    metafunc.parametrize(fixture, params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tag grid cases for the controller; keep the shard's cases (``--iqa-shard``, ``--iqa-train-only``).

    A grid item carries its case id as a user property, so its reports tell the controller
    (also under pytest-xdist) which case began and ended. ``--iqa-train-only`` keeps one universal
    case per perturbation to train; ``--iqa-shard K/N`` keeps every N-th case of the grid from the
    K-th, in the grid's order, so the N shards are disjoint and together the grid. The
    placeholder pytest makes for a test whose grid is empty (``--iqa-attack ifgsm`` selects no
    universal case) is deselected too, so the summary counts cases only.
    """
    from iqa_robustness.plugin.session import CASE_FIELDS_PROPERTY, CASE_PROPERTY

    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    trained: set[tuple] = set()
    grid_index = 0
    shard = value(config, "shard")
    k, n = (int(part) for part in shard.split("/")) if shard else (1, 1)
    train_only = value(config, "train_only")
    for item in items:
        if _is_empty_grid_placeholder(item):
            dropped.append(item)
            continue
        case = case_of(item)
        if case is None:
            keep.append(item)
            continue
        if train_only:
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


def case_of(item: pytest.Item):
    """The grid case an item runs, or None for any other test."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return next((params[f] for f in KIND_FIXTURES if f in params), None)


def _is_empty_grid_placeholder(item: pytest.Item) -> bool:
    return item.nodeid.split("[", 1)[0] in item.config.stash.get(STASH_EMPTY_GRIDS, set())


def grid_description(config: pytest.Config) -> list[str]:
    """What the session's grid is, for the lines a session that runs it begins with (imports torch)."""
    from iqa_robustness.conventions import QUICK_MAX_QUERIES, QUICK_UAP_MAX_STEPS
    from iqa_robustness.runner.options import flag

    opts = grid_options(config)
    lines = []
    if opts["grid"] == "quick":
        why = "" if value(config, "grid") == "quick" else " (the main job without a GPU)"
        data = "" if opts["dataset"] else f" on the first {opts['max_images']} sample images at {opts['image_size']} px"
        lines.append(
            f"the quick grid{why}: every attack{data}, black-box attacks at most {QUICK_MAX_QUERIES} queries per "
            f"image, universal training at most {QUICK_UAP_MAX_STEPS} steps; {flag('grid')} full runs the full "
            "grid (docs/options.md)"
        )
    for name in taken_short_names(config):
        lines.append(f"{name} belongs to another plugin or conftest.py of this run; the suite's is {SHORT_NAMES[name]}")
    return lines
