"""The robustness grid as a GitLab child pipeline: per metric, train -> evaluate shards -> merge -> gate.

``iqa-robustness pipeline`` writes it; the parent pipeline (``.gitlab-ci.yml``) runs it with
``trigger: include: artifact:``. What a metric's chain looks like comes from the metric registry:

- every selected metric gets a GPU chain (``tags: [gpu]``, the CUDA image's own torch, full
  training epochs on the benchmark's datasets, checked against ``baselines/default.csv``);
- a video metric (``kind: nr-video``) runs on Vimeo-90k's clips, with perturbations trained on
  its train list;
- a metric with weight files keeps them in a cache of its own, filled by its training job, whose
  first step checks that the adapter still reproduces the published values;
- the CPU chain (one metric, small and offline on the 5 msu5 images) runs wherever the runners
  have the reference folder (``IQA_ROBUSTNESS_SHARED``); a metric that needs a GPU or is a video
  metric cannot be it, and its image size is at least the metric's smallest accepted side.

The jobs are written out whole (a hidden job per install recipe is all they extend), so the file
reads as what runs. ``docs/ci.md`` describes the pipeline; tests/test_pipeline.py checks it.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from iqa_robustness.metrics.base import MetricSpec

#: the CUDA image whose own torch the GPU jobs use; it must satisfy pyproject.toml's torch and
#: torchvision and pyiqa's dependencies (transformers 5 needs torch>=2.6, bitsandbytes torch>=2.4)
GPU_IMAGE = "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime"
PYTHON_IMAGE = "python:3.11-slim"
STAGES = ("plan", "train", "evaluate", "merge", "gate", "deploy")
STEPS = ("train", "evaluate", "merge", "gate")
CPU_CHAIN = "cpu"
GPU_SHARDS = 4
CPU_SHARDS = 2
PUBLISHED_VALUES = "tests/test_published_values.py"
JUNIT = "reports/junit-$CI_JOB_NAME_SLUG.xml"
GATE_PATH = "reports/gate/"

VARIABLES = {
    "PIP_CACHE_DIR": "$CI_PROJECT_DIR/.cache/pip",
    # Weights are cached inside the project so GitLab's cache can keep them between jobs.
    "TORCH_HOME": "$CI_PROJECT_DIR/.cache/torch",
    "HF_HOME": "$CI_PROJECT_DIR/.cache/huggingface",
    "PYTHON": "python3",
    # One experiment for every branch: sessions carry their branch and commit as tags, so a merge
    # request's gate finds the target branch's latest session of the same metric there.
    "EXPERIMENT": "iqa-robustness",
}

# A plain virtual environment: torch and everything else from PyPI.
INSTALL = {
    "before_script": [
        "$PYTHON -m venv .venv",
        ".venv/bin/pip install --quiet --upgrade pip",
        '.venv/bin/pip install --quiet -e ".[dev,pyiqa]"',
    ]
}

# The CUDA image's own torch, never a second one: the venv sees the image's site-packages, a
# constraints file pins torch and torchvision to the image's versions while pip resolves the rest,
# and the last line fails the job if a dependency installed another torch into the venv anyway.
IMAGE_TORCH = {
    "image": GPU_IMAGE,
    "before_script": [
        "nvidia-smi || true",
        "$PYTHON -m venv --system-site-packages .venv",
        '$PYTHON -c \'import importlib.metadata as md; print("\\n".join(f"{d}=={md.version(d)}" '
        'for d in ("torch", "torchvision")))\' > /tmp/image-torch.txt',
        ".venv/bin/pip install --quiet --upgrade pip",
        '.venv/bin/pip install --quiet --constraint /tmp/image-torch.txt -e ".[dev,pyiqa]"',
        "test \"$(.venv/bin/python -c 'import torch; print(torch.__file__)')\" = "
        "\"$($PYTHON -c 'import torch; print(torch.__file__)')\" "
        '|| { echo "the venv has a torch of its own instead of the image\'s $(cat /tmp/image-torch.txt)"; exit 1; }',
    ],
}


def pytest_option(name: str) -> str:
    """The suite's pytest option called ``name`` (``train_only`` -> ``--iqa-train-only``).

    The one place the generated jobs spell the plugin's option names: the prefixed flags, which no
    other plugin or ``conftest.py`` of the project can have taken (docs/options.md).
    """
    from iqa_robustness.runner.options import flag

    return flag(name)


def suite_args(**options: str | bool) -> str:
    """Plugin options as one shell fragment: ``True`` is a flag, a string the option's value.

    Values are shell words as written (``'"$METRIC"'`` keeps the quotes); ``False`` leaves the
    option out.
    """
    words = []
    for name, value in options.items():
        if value is True:
            words.append(pytest_option(name))
        elif value is not False:
            words.append(f"{pytest_option(name)} {value}")
    return " ".join(words)


def grid_command() -> str:
    """The script line that runs the grid: the job's phase (training or a shard) and its settings."""
    settings = suite_args(
        resume=True,
        experiment='"$EXPERIMENT"',
        metric='"$METRIC"',
        dataset='"$DATASET"',
        train_dataset='"$TRAIN_DATASET"',
    )
    out = suite_args(results_dir='"$RESULTS_DIR"')
    return f'.venv/bin/pytest robustness_tests $PHASE {settings} $SUITE_ARGS {out} --junitxml "{JUNIT}"'


# First the metric's adapter must still reproduce the values its authors or pyiqa publish: a drift
# fails the job before any GPU time goes into the grid. A metric with no published value selects
# no test (pytest's exit status 5) and goes on to the grid.
PUBLISHED_VALUES_CHECK = (
    'rc=0; HF_HUB_OFFLINE=0 IQA_ROBUSTNESS_WEIGHTS="${IQA_ROBUSTNESS_WEIGHTS:-$TORCH_HOME/hub/pyiqa}" '
    f'.venv/bin/pytest {PUBLISHED_VALUES} -m weights -k "[$METRIC]" || rc=$?; '
    'if [ "$rc" -eq 5 ]; then echo "no published value of $METRIC to check"; '
    'elif [ "$rc" -ne 0 ]; then exit "$rc"; fi'
)


# The regression gate: the merged session (with every per-image row) against the target branch's
# latest session of the same metric in MLflow; it fails when a shared case became less robust beyond
# noise (`iqa-robustness compare --fail-on-regression`). Cases in one session only are listed, not
# failed; a target branch that never ran the metric passes with a note; the default branch's own
# pipelines have no target to gate against and pass.
GATE_SCRIPT = [
    "mkdir -p reports/gate",
    'if [ -d "$RESULTS_DIR/report" ]; then cp -r "$RESULTS_DIR/report" "reports/gate/report-$METRIC"; fi',
    'TARGET="${CI_MERGE_REQUEST_TARGET_BRANCH_NAME:-$CI_DEFAULT_BRANCH}"',
    'if [ -z "$CI_MERGE_REQUEST_TARGET_BRANCH_NAME" ] && [ "$CI_COMMIT_BRANCH" = "$CI_DEFAULT_BRANCH" ]; then '
    'echo "a pipeline of the default branch: no target branch to gate against"; exit 0; fi',
    '.venv/bin/iqa-robustness compare "branch:$TARGET" "$RESULTS_DIR" --metric "$METRIC" --experiment "$EXPERIMENT" '
    "--fail-on-regression --missing-ok --out reports/gate $MERGE_ARGS",
]

RESULTS = "results/$METRIC"
TRAINED = f"{RESULTS}/train/perturbations"


def _weights_cache(step: str, weights: bool = True) -> dict:
    """The metric's weights (and pip's downloads), filled by its training job and only read by the others.

    A metric without weight files shares one cache of pip's downloads instead.
    """
    cache = {"key": "weights-$METRIC", "paths": [".cache/torch", ".cache/huggingface", ".cache/pip"]}
    if not weights:
        cache = {"key": "pip-grid", "paths": [".cache/pip"]}
    return cache if step == "train" else {**cache, "policy": "pull"}


def _caches(step: str, weights: bool = True) -> list[dict]:
    """A step's caches. A pytest step's results folder is cached per job, shard and commit, saved even
    when the job fails or runs out of time, so a retry with ``--resume`` skips what is done."""
    if step in ("merge", "gate"):
        return [_weights_cache(step, weights)]
    results = {"key": "results-$CI_JOB_NAME_SLUG-$CI_COMMIT_SHORT_SHA", "paths": ["$RESULTS_DIR"], "when": "always"}
    return [_weights_cache(step, weights), results]


def step_templates() -> dict[str, dict]:
    """The hidden jobs of the four steps; a chain's job extends a family (``.gpu``/``.grid``, ``.cpu``) and a step.

    Each job writes only its own results folder (``RESULTS_DIR``, under ``results/METRIC/``), so
    shards never collide, on GitLab or in one gitlab-ci-local checkout.
    """
    pytest_artefacts = {
        "when": "always",
        "expire_in": "30 days",
        "reports": {"junit": JUNIT},
        "paths": ["$RESULTS_DIR", JUNIT],
    }
    return {
        # Trains the universal perturbations of the metric's grid into results/METRIC/train/perturbations.
        ".train": {
            "stage": "train",
            "variables": {"RESULTS_DIR": f"{RESULTS}/train", "PHASE": pytest_option("train_only")},
            "cache": _caches("train"),
            "script": [PUBLISHED_VALUES_CHECK, grid_command()],
            "artifacts": pytest_artefacts,
        },
        # One of CI_NODE_TOTAL shards of the grid's cases. The training job's perturbations (its
        # artefacts, through needs:) are copied into the shard's results folder, where the suite
        # finds them under the same cache key instead of training again.
        ".evaluate": {
            "stage": "evaluate",
            "parallel": GPU_SHARDS,
            "variables": {
                "RESULTS_DIR": f"{RESULTS}/shard-$CI_NODE_INDEX",
                "PHASE": f"{pytest_option('shard')} $CI_NODE_INDEX/$CI_NODE_TOTAL",
            },
            "cache": _caches("evaluate"),
            "script": [
                'mkdir -p "$RESULTS_DIR"',
                f'if [ -d "{TRAINED}" ]; then cp -r "{TRAINED}" "$RESULTS_DIR/"; fi',
                grid_command(),
            ],
            "artifacts": pytest_artefacts,
        },
        # The shards' results folders merged into one, logged as the metric's one MLflow session (to
        # MLFLOW_TRACKING_URI unless MERGE_ARGS names a store): the session `compare` and the leaderboard read.
        ".merge": {
            "stage": "merge",
            "timeout": "30m",
            "variables": {"RESULTS_DIR": f"{RESULTS}/merged"},
            "cache": _caches("merge"),
            "script": [
                f'.venv/bin/iqa-robustness merge "{RESULTS}"/shard-* --out "$RESULTS_DIR" '
                '--experiment "$EXPERIMENT" $MERGE_ARGS'
            ],
            "artifacts": {"when": "always", "expire_in": "30 days", "paths": ["$RESULTS_DIR"]},
        },
        ".gate": {
            "stage": "gate",
            "timeout": "30m",
            "variables": {"RESULTS_DIR": f"{RESULTS}/merged"},
            "cache": _caches("gate"),
            "script": GATE_SCRIPT,
            # expose_as needs a fixed path; a folder needs its trailing slash
            "artifacts": {
                "when": "always",
                "expire_in": "30 days",
                "expose_as": "robustness gate",
                "paths": [GATE_PATH],
            },
        },
    }


def family_templates() -> dict[str, dict]:
    """Where a chain runs. ``.gpu``: the full grid on GPU runners on the benchmark's datasets, against
    the default baseline; ``.grid``: the same settings for the merge and gate jobs, on any runner;
    ``.video``: Vimeo-90k's clips, with perturbations trained on its train list's frames."""
    grid = {
        "DATASET": "$NIPS2017_DIR",
        "TRAIN_DATASET": "$COCO_DIR",
        "SUITE_ARGS": suite_args(device="cuda", baseline="baselines/default.csv"),
        "MERGE_ARGS": "",
    }
    return {
        ".grid": {"extends": ".image-torch", "variables": grid},
        # The script stops 20 minutes before the job's timeout, leaving time to save the results cache
        # and the artefacts, so a retry (automatic when the runner fails or the time runs out) resumes.
        ".gpu": {
            "extends": ".grid",
            "tags": ["gpu"],
            "timeout": "6h",
            "variables": {"RUNNER_SCRIPT_TIMEOUT": "5h40m"},
            "retry": {
                "max": 2,
                "when": ["runner_system_failure", "stuck_or_timeout_failure", "job_execution_timeout"],
            },
        },
        ".video": {"variables": {"DATASET": "vimeo", "TRAIN_DATASET": "vimeo-train"}},
    }


def cpu_template(spec: MetricSpec) -> dict:
    """The CPU family: the same chain on a shared runner, offline, small enough to run in minutes.

    FGSM, I-FGSM and UAP on the 5 msu5 images at 64 px (or the metric's smallest side), the
    weights from the reference folder, MLflow into a local SQLite store, held to
    ``baselines/ci-cpu-chain.csv``; it runs wherever ``IQA_ROBUSTNESS_SHARED`` is set.

    Raises:
        ValueError: the metric needs a GPU or scores videos.
    """
    if spec.needs_gpu or spec.is_video:
        why = "needs a GPU" if spec.needs_gpu else "scores videos, and the CPU chain runs on images"
        raise ValueError(f"{spec.name} {why}: choose another --cpu-metric (or 'none'); it still gets a GPU chain")
    store = "sqlite:///results/$METRIC/mlflow.db"  # a path relative to the job's folder
    return {
        "extends": ".install",
        "rules": [{"if": "$IQA_ROBUSTNESS_SHARED"}],
        "variables": {
            "METRIC": spec.name,
            "DATASET": "msu5",
            "TRAIN_DATASET": "msu5",
            "IQA_ROBUSTNESS_WEIGHTS": "$IQA_ROBUSTNESS_SHARED/weights",
            "IQA_ROBUSTNESS_OFFLINE": "1",
            "SUITE_ARGS": suite_args(
                attack="fgsm,ifgsm,uap",
                image_size=str(max(64, spec.min_side or 0)),
                uap_steps="4",
                amplitude="0.2,0.8",
                device="cpu",
                baseline="baselines/ci-cpu-chain.csv",
                mlflow_uri=store,
            ),
            "MERGE_ARGS": f"--tracking-uri {store}",
        },
    }


def chain(spec: MetricSpec, *, cpu: bool = False) -> dict[str, dict]:
    """The four jobs of a metric's chain, ``STEP:CHAIN`` (the chain is the metric, or ``cpu``).

    A GPU chain trains and evaluates on GPU runners (``.gpu``) and merges and gates on any
    (``.grid``); a video metric's also extend ``.video``; the jobs of a metric without weight
    files carry a cache of pip's downloads only.
    """
    name = CPU_CHAIN if cpu else spec.name
    jobs = {}
    for step in STEPS:
        if cpu:
            family = [".cpu"]
        else:
            family = [".gpu" if step in ("train", "evaluate") else ".grid", *([".video"] if spec.is_video else [])]
        job: dict = {"extends": [*family, f".{step}"]}
        if not cpu:
            job["variables"] = {"METRIC": spec.name}
        if step == "evaluate" and cpu:
            job["parallel"] = CPU_SHARDS
        if step != "train":
            job["needs"] = [f"{STEPS[STEPS.index(step) - 1]}:{name}"]
        if not spec.weight_files:
            job["cache"] = _caches(step, weights=False)
        jobs[f"{step}:{name}"] = job
    return jobs


def pages(merge_jobs: list[str]) -> dict:
    """GitLab Pages on the default branch: each GPU chain's HTML report from its merge job, and an index.

    ``dependencies`` (artefacts of earlier stages), not ``needs``: GitLab caps ``needs`` at 50 jobs.
    """
    return {
        "stage": "deploy",
        "image": PYTHON_IMAGE,
        "rules": [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}],
        "dependencies": merge_jobs,
        "script": [
            "mkdir -p public",
            'for report in results/*/merged/report; do metric=$(basename "$(dirname "$(dirname "$report")")"); '
            'cp -r "$report" "public/$metric"; done',
            '{ echo \'<!doctype html><meta charset="utf-8"><title>iqa-robustness reports</title>'
            "<h1>Robustness reports</h1><ul>'; "
            'for page in public/*/index.html; do metric=$(basename "$(dirname "$page")"); '
            'echo "<li><a href=\\"$metric/\\">$metric</a></li>"; done; '
            'echo "</ul><p>commit $CI_COMMIT_SHORT_SHA, pipeline $CI_PIPELINE_ID</p>"; } > public/index.html',
        ],
        "artifacts": {"paths": ["public"]},
    }


def plan_job(lines: list[str]) -> dict:
    """The child pipeline's first job: why each chain runs. It also keeps a pipeline with no chain valid."""
    return {
        "stage": "plan",
        "variables": {"GIT_STRATEGY": "none", "PLAN": "\n".join(lines)},
        "script": ['echo "$PLAN"'],
    }


def child_pipeline(gpu: Mapping[str, str], cpu: str | None, plan: list[str]) -> dict:
    """The child pipeline: the plan, the CPU chain, a GPU chain per metric of ``gpu``, Pages.

    Args:
        gpu: metric name -> why its chain runs (the plan's line), in order.
        cpu: the CPU chain's metric, or ``None``.
        plan: the plan's opening lines (what was compared, how many chains).
    """
    from iqa_robustness.metrics import get_spec

    templates: dict[str, dict] = {".install": INSTALL, ".image-torch": IMAGE_TORCH}
    jobs: dict[str, dict] = {}
    lines = list(plan)
    if cpu is not None:
        spec = get_spec(cpu)
        templates[".cpu"] = cpu_template(spec)
        jobs.update(chain(spec, cpu=True))
        lines.append(f"cpu: {spec.name}, small and offline, where IQA_ROBUSTNESS_SHARED is set")
    if gpu:
        templates.update(family_templates())
    templates.update(step_templates())
    for name, reason in gpu.items():
        spec = get_spec(name)
        jobs.update(chain(spec))
        lines.append(f"{spec.name}: {reason}")
    merges = [f"merge:{get_spec(name).name}" for name in gpu]
    return {
        "stages": list(STAGES),
        "variables": dict(VARIABLES),
        "default": {"image": PYTHON_IMAGE, "interruptible": True},
        **templates,
        "plan": plan_job(lines),
        **jobs,
        **({"pages": pages(merges)} if merges else {}),
    }


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors, text of several lines as a literal block: the file reads as what runs."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _text)


def dump(pipeline: Mapping, header: str) -> str:
    """The pipeline as YAML, after ``header`` as comment lines."""
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = yaml.dump(dict(pipeline), Dumper=_Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)
    return comment + body
