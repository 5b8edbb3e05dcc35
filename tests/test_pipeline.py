"""The GitLab pipeline's shape: per metric a training job, parallel evaluation shards, a merge and a gate.

The parent pipeline (``.gitlab-ci.yml``) lints, tests, and runs the grid as a child pipeline that
``iqa-robustness pipeline`` generates; these tests read the child pipeline generated for every
registered metric (``--metric all``), with ``extends:`` resolved as GitLab does (mappings merged
deeply, everything else replaced), and its commands with the job's own variables substituted.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from iqa_robustness.ci import gitlab
from iqa_robustness.ci.gitlab import pytest_option

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("train", "evaluate", "merge", "gate")
GRID = "pytest robustness_tests"  # the script line that runs the grid
PUBLISHED_VALUES = "tests/test_published_values.py"
GENERATOR = "grid-pipeline"  # the parent's job that writes the child pipeline
CHILD = "child-pipeline.yml"
_VARIABLE = re.compile(r"\$\{(\w+)(?::-[^}]*)?\}|\$(\w+)")


def _merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolved(config: dict, name: str) -> dict:
    job = config[name]
    parents = job.get("extends", [])
    base: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        base = _merged(base, _resolved(config, parent))
    return _merged(base, {k: v for k, v in job.items() if k != "extends"})


def resolved_jobs(config: dict) -> dict[str, dict]:
    """The pipeline's jobs (not its hidden templates or keywords), each with its ``extends`` resolved."""
    return {
        name: _resolved(config, name)
        for name, body in config.items()
        if not name.startswith(".") and isinstance(body, dict) and {"script", "extends", "trigger"} & set(body)
    }


def generate(out: Path, *args: str) -> dict:
    """``iqa-robustness pipeline *args --out out``, run in this process; the YAML it wrote."""
    from iqa_robustness.cli.main import main

    assert main(["pipeline", *args, "--out", str(out)]) == 0
    return yaml.safe_load(out.read_text())


@pytest.fixture(scope="module")
def child_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The child pipeline of every registered metric, as the parent's job writes it."""
    out = tmp_path_factory.mktemp("child") / CHILD
    generate(out, "--metric", "all")
    return out


@pytest.fixture(scope="module")
def child(child_file: Path) -> dict:
    return yaml.safe_load(child_file.read_text())


@pytest.fixture(scope="module")
def parent() -> dict:
    return yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())


@pytest.fixture(scope="module")
def jobs(child: dict) -> dict[str, dict]:
    return resolved_jobs(child)


@pytest.fixture(scope="module")
def chains(jobs: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Jobs by chain (the part after 'train:', 'evaluate:', 'merge:', 'gate:') and step."""
    out: dict[str, dict[str, dict]] = {}
    for name, job in jobs.items():
        step, _, chain = name.partition(":")
        if step in STEPS:
            out.setdefault(chain, {})[step] = job
    return out


def expand(job: dict, text: str) -> str:
    """``text`` with the job's own variables substituted (predefined CI_* variables are left as they are)."""
    variables = {k: str(v) for k, v in job.get("variables", {}).items()}
    for _ in range(5):
        text = _VARIABLE.sub(lambda m: variables.get(m[1] or m[2], m[0]), text)
    return text


def command(job: dict, program: str) -> str:
    """The job's script line that runs ``program``, expanded."""
    lines = [line for line in job["script"] if program in line]
    assert len(lines) == 1, f"expected one line running {program!r} in {job['script']}"
    return expand(job, lines[0])


def option(cmd: str, name: str) -> str:
    words = shlex.split(cmd)
    assert name in words, f"{name} missing from {cmd!r}"
    return words[words.index(name) + 1]


def results_dir(job: dict) -> str:
    return expand(job, job["variables"]["RESULTS_DIR"])


def is_gpu(job: dict) -> bool:
    return "gpu" in job.get("tags", [])


def needs(job: dict) -> dict[str, bool]:
    """Needed job -> whether its artefacts are downloaded."""
    entries = [n if isinstance(n, dict) else {"job": n} for n in job.get("needs", [])]
    return {n["job"]: n.get("artifacts", True) for n in entries}


def instances(jobs: dict[str, dict]) -> int:
    """How many jobs GitLab creates: a ``parallel: N`` job counts N times."""
    return sum(job.get("parallel", 1) for job in jobs.values())


# -- the parent pipeline ----------------------------------------------------------------------------------
def test_the_parent_generates_the_child_pipeline_and_triggers_it_taking_its_status(parent):
    jobs = resolved_jobs(parent)
    generator, trigger = jobs[GENERATOR], jobs["grid"]
    cmd = command(generator, "iqa-robustness")
    assert option(cmd, "--metric") == "$GRID_METRICS"
    assert option(cmd, "--changed-since") == "auto"
    assert option(cmd, "--out") == CHILD
    assert generator["artifacts"]["paths"] == [CHILD]
    assert option(command(generator, "check-jsonschema"), "--builtin-schema") == "vendor.gitlab-ci"
    assert generator["variables"]["GIT_DEPTH"] == "0", "a shallow clone cannot find the merge base"
    assert trigger["trigger"] == {"include": [{"artifact": CHILD, "job": GENERATOR}], "strategy": "depend"}
    stages = parent["stages"]
    assert stages.index(trigger["stage"]) > stages.index(generator["stage"]), "the trigger must follow the generator"
    assert trigger["rules"] == generator["rules"]
    assert {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'} in trigger["rules"]
    metrics = [m for m in parent["variables"]["GRID_METRICS"].split(",") if m]
    assert metrics, "GRID_METRICS selects no metric"


def test_the_parent_pipeline_has_no_hand_written_chain_and_no_rules_on_changes(parent):
    assert not any(name.partition(":")[0] in STEPS for name in parent), "chains belong in the generated pipeline"
    assert "changes:" not in (ROOT / ".gitlab-ci.yml").read_text()


# -- the generated child pipeline --------------------------------------------------------------------------
def test_the_parent_and_the_generated_child_pipeline_are_valid_gitlab_ci(child_file):
    checker = Path(sys.executable).parent / "check-jsonschema"
    if not checker.exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    schema = ["--builtin-schema", "vendor.gitlab-ci", "--data-transform", "gitlab-ci"]
    done = subprocess.run(
        [str(checker), *schema, str(ROOT / ".gitlab-ci.yml"), str(child_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_selected_metric_gets_a_chain_and_the_pipeline_counts_seven_jobs_per_metric(chains, jobs):
    from iqa_robustness.metrics import list_metrics

    metrics = list_metrics("all")
    gpu = {chain for chain, steps in chains.items() if is_gpu(steps["train"])}
    assert gpu == set(metrics)
    assert set(chains) == gpu | {gitlab.CPU_CHAIN}
    per_metric = 3 + gitlab.GPU_SHARDS  # train, the shards, merge, gate
    cpu = 3 + gitlab.CPU_SHARDS
    assert instances(jobs) == 1 + cpu + per_metric * len(metrics) + 1  # plan ... pages
    assert len(jobs) == 1 + 4 * (len(metrics) + 1) + 1


def test_every_chain_has_a_training_an_evaluation_a_merge_and_a_gate_job(chains):
    assert len(chains) > 1
    for chain, steps in chains.items():
        assert set(steps) == set(STEPS), f"chain {chain!r} has only {sorted(steps)}"
        metrics = {steps[step]["variables"]["METRIC"] for step in STEPS}
        assert len(metrics) == 1, f"chain {chain!r} mixes metrics {metrics}"
        if is_gpu(steps["train"]):
            assert metrics == {chain}, f"GPU chain {chain!r} runs {metrics}"


def test_evaluation_jobs_run_shards_in_parallel_each_into_its_own_folder(chains):
    for chain, steps in chains.items():
        evaluate = steps["evaluate"]
        assert isinstance(evaluate.get("parallel"), int), f"evaluate:{chain} has no parallel: N"
        assert evaluate["parallel"] >= 2
        assert option(command(evaluate, GRID), pytest_option("shard")) == "$CI_NODE_INDEX/$CI_NODE_TOTAL"
        assert "$CI_NODE_INDEX" in results_dir(evaluate)
        assert option(command(evaluate, GRID), pytest_option("results_dir")) == results_dir(evaluate)


def test_shards_read_the_training_jobs_perturbations_from_their_own_results_folder(chains):
    for chain, steps in chains.items():
        train, evaluate = steps["train"], steps["evaluate"]
        assert pytest_option("train_only") in shlex.split(command(train, GRID))
        assert option(command(train, GRID), pytest_option("results_dir")) == results_dir(train)
        assert needs(evaluate).get(f"train:{chain}"), f"evaluate:{chain} does not get train:{chain}'s artefacts"
        copy = command(evaluate, "cp -r")
        assert f'"{results_dir(train)}/perturbations" "{results_dir(evaluate)}/"' in copy, copy


def test_every_training_job_checks_its_metrics_published_values_before_the_grid(chains):
    for chain, steps in chains.items():
        train = steps["train"]
        script = [expand(train, line) for line in train["script"]]
        check = command(train, PUBLISHED_VALUES)
        assert script.index(check) < script.index(command(train, GRID)), f"train:{chain} checks after its grid"
        assert option(check, "-m") == "weights"
        assert option(check, "-k") == f"[{train['variables']['METRIC']}]", check
        assert 'elif [ "$rc" -ne 0 ]; then exit "$rc"' in check, f"train:{chain} would not fail on a drift"


def test_a_metrics_selection_of_published_values_is_that_metric_only():
    """``-k "[paq2piq]"`` selects paq2piq's case, not musiq-paq2piq's."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", PUBLISHED_VALUES, "-m", "weights", "-k", "[paq2piq]", "--collect-only", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line for line in out.splitlines() if "::" in line] == [
        f"{PUBLISHED_VALUES}::test_pyiqa_metric_reproduces_pyiqas_calibration_table[paq2piq]"
    ]


def test_training_and_evaluation_select_the_same_grid(chains):
    """Same selection, same perturbation cache keys: the shards find what the training job trained."""

    def selection(job: dict) -> list[str]:
        words = shlex.split(command(job, GRID))
        for flag in (pytest_option("shard"), pytest_option("results_dir"), "--junitxml"):
            if flag in words:
                del words[words.index(flag) : words.index(flag) + 2]
        return [w for w in words if w != pytest_option("train_only")]

    for steps in chains.values():
        assert selection(steps["train"]) == selection(steps["evaluate"])


def test_merge_job_merges_every_shard_and_runs_where_its_chain_runs(chains):
    for chain, steps in chains.items():
        merge, evaluate = steps["merge"], steps["evaluate"]
        assert needs(merge).get(f"evaluate:{chain}"), f"merge:{chain} does not get the shards' artefacts"
        cmd = command(merge, "iqa-robustness merge").replace('"', "")
        assert results_dir(evaluate).replace("$CI_NODE_INDEX", "*") in cmd, cmd
        assert option(cmd, "--out") == results_dir(merge)
        assert merge.get("rules") == evaluate.get("rules") == steps["train"].get("rules")


def test_every_pytest_job_resumes_from_a_results_folder_cached_per_job(chains):
    for steps in chains.values():
        for step in ("train", "evaluate"):
            job = steps[step]
            assert pytest_option("resume") in shlex.split(command(job, GRID))
            cached = [c for c in job["cache"] if c.get("when") == "always"]
            assert any(
                results_dir(job) in [expand(job, p) for p in c["paths"]] and "$CI_JOB_NAME_SLUG" in c["key"]
                for c in cached
            ), f"no per-job cache of {results_dir(job)} saved when the job fails: {job['cache']}"
            assert job["artifacts"]["when"] == "always"
            assert results_dir(job) in [expand(job, p) for p in job["artifacts"]["paths"]]
            junit = option(command(job, GRID), "--junitxml")
            assert expand(job, job["artifacts"]["reports"]["junit"]) == junit


def test_a_metric_with_weight_files_keeps_them_in_a_cache_of_its_own_filled_by_its_training_job(chains):
    from iqa_robustness.metrics import get_spec

    for chain, steps in chains.items():
        spec = get_spec(steps["train"]["variables"]["METRIC"])
        for step, job in steps.items():
            weights = [c for c in job["cache"] if ".cache/torch" in c["paths"]]
            if not spec.weight_files:
                assert not weights, f"{step}:{chain}: {spec.name} has no weight files to cache"
                continue
            assert [c["key"] for c in weights] == ["weights-$METRIC"], f"{step}:{chain}"
            assert weights[0].get("policy", "pull-push") == ("pull-push" if step == "train" else "pull")


def test_video_metrics_run_on_video_clips_and_image_metrics_on_the_benchmarks_images(chains):
    from iqa_robustness.metrics import get_spec

    gpu = {chain: steps for chain, steps in chains.items() if is_gpu(steps["train"])}
    assert any(get_spec(chain).is_video for chain in gpu)
    assert not all(get_spec(chain).is_video for chain in gpu)
    for chain, steps in gpu.items():
        expected = ("vimeo", "vimeo-train") if get_spec(chain).is_video else ("$NIPS2017_DIR", "$COCO_DIR")
        for job in steps.values():
            assert (job["variables"]["DATASET"], job["variables"]["TRAIN_DATASET"]) == expected, chain


def test_gpu_jobs_use_the_images_torch_in_a_venv_that_sees_it(jobs):
    requirements = [Requirement(r) for r in importlib.metadata.requires("iqa-robustness")]
    torch_spec = next(r.specifier for r in requirements if r.name == "torch")
    images = [job for job in jobs.values() if "pytorch/pytorch" in str(job.get("image", ""))]
    assert any(is_gpu(job) for job in images)
    assert all(job in images for job in jobs.values() if is_gpu(job))
    for job in images:
        install = "\n".join(job["before_script"])
        assert "venv --system-site-packages" in install
        assert re.search(r"pip install .*(--constraint|-c) \S+ .*-e", install), install
        assert "torch.__file__" in install, "no check that the venv's torch is the image's"
        tag = re.search(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda", str(job["image"]))
        assert tag, f"unpinned image {job['image']}"
        assert torch_spec.contains(Version(tag[1])), f"the image's torch {tag[1]} does not satisfy torch{torch_spec}"


def test_gpu_evaluation_runs_on_cuda_against_the_default_baseline(chains):
    gpu = [steps["evaluate"] for steps in chains.values() if is_gpu(steps["evaluate"])]
    assert gpu
    for evaluate in gpu:
        cmd = command(evaluate, GRID)
        assert option(cmd, pytest_option("device")) == "cuda"
        assert option(cmd, pytest_option("baseline")) == "baselines/default.csv"


def test_the_cpu_chain_runs_small_offline_and_only_where_the_reference_folder_is(chains):
    cpu = chains[gitlab.CPU_CHAIN]
    for step, job in cpu.items():
        assert job["rules"] == [{"if": "$IQA_ROBUSTNESS_SHARED"}], step
        assert job["variables"]["IQA_ROBUSTNESS_OFFLINE"] == "1"
        if step in ("train", "evaluate"):
            cmd = command(job, GRID)
            assert option(cmd, pytest_option("device")) == "cpu"
            assert option(cmd, pytest_option("dataset")) == "msu5"
            assert option(cmd, pytest_option("baseline")) == "baselines/ci-cpu-chain.csv"


def test_the_cpu_chain_takes_a_metric_that_runs_on_images_without_a_gpu_at_its_smallest_side():
    from iqa_robustness.metrics import get_spec, list_metrics

    gpu_only = next(name for name in list_metrics("all") if get_spec(name).needs_gpu)
    video = next(name for name in list_metrics("all") if get_spec(name).is_video)
    for name, why in ((gpu_only, "needs a GPU"), (video, "scores videos")):
        with pytest.raises(ValueError, match=f"{why}.*another --cpu-metric"):
            gitlab.cpu_template(get_spec(name))
    large = next(n for n in list_metrics("all") if (get_spec(n).min_side or 0) > 64 and not get_spec(n).needs_gpu)
    args = gitlab.cpu_template(get_spec(large))["variables"]["SUITE_ARGS"]
    assert option(args, pytest_option("image_size")) == str(get_spec(large).min_side)


def test_ci_run_runs_the_parent_jobs_and_the_generated_cpu_chain_under_gitlab_ci_local(chains, parent):
    cpu = {chain: steps for chain, steps in chains.items() if not is_gpu(steps["train"])}
    assert list(cpu) == [gitlab.CPU_CHAIN]
    script = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    runs = [shlex.split(line) for line in script.splitlines() if line.startswith("gitlab-ci-local ")]
    assert len(runs) == 2, "expected two gitlab-ci-local runs in .ci/run: the parent's jobs, then the child's"
    parent_run, child_run = runs
    assert "--file" not in parent_run
    for name in ["lint", "unit-tests", GENERATOR]:
        assert name in parent_run, f".ci/run's gitlab-ci-local run leaves out {name}"
    assert "GRID_METRICS=all" in parent_run, ".ci/run generates the child pipeline of every metric"
    assert option(shlex.join(child_run), "--file") == CHILD
    for name in (f"{step}:{chain}" for chain in cpu for step in STEPS):
        assert name in child_run, f".ci/run's run of the child pipeline leaves out {name}"


def test_each_gate_compares_its_merged_session_with_the_target_branch_and_fails_on_regression(chains):
    for chain, steps in chains.items():
        gate, merge = steps["gate"], steps["merge"]
        assert needs(gate) == {f"merge:{chain}": True}, chain
        cmd = command(gate, "iqa-robustness compare")
        words = shlex.split(cmd)
        assert words[2:4] == ["branch:$TARGET", results_dir(merge)], cmd
        assert option(cmd, "--metric") == gate["variables"]["METRIC"]
        assert option(cmd, "--experiment") == "$EXPERIMENT"
        assert "--fail-on-regression" in words
        assert gate["artifacts"]["expose_as"]
        assert gate["artifacts"]["paths"] == ["reports/gate/"]  # expose_as needs a fixed path (a folder: a slash)
        assert option(cmd, "--out") == "reports/gate"
        assert gate.get("rules") == merge.get("rules"), f"gate:{chain} must run where merge:{chain} runs"


def test_every_session_of_the_pipeline_logs_to_one_experiment(jobs, child, parent):
    assert child["variables"]["EXPERIMENT"] == parent["variables"]["EXPERIMENT"]
    for name, job in jobs.items():
        for line in job.get("script", []):
            if "--experiment" in line:
                assert option(line, "--experiment") == "$EXPERIMENT", name


def test_pages_publishes_the_reports_of_every_gpu_metric_on_the_default_branch(jobs, chains, child):
    pages = jobs["pages"]
    gpu_merges = {f"merge:{c}" for c, steps in chains.items() if is_gpu(steps["train"])}
    assert set(pages["dependencies"]) == gpu_merges
    assert "needs" not in pages, "GitLab caps needs at 50 jobs; --metric all has more merge jobs"
    assert child["stages"].index(pages["stage"]) > child["stages"].index("merge")
    assert pages["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]
    assert pages["artifacts"]["paths"] == ["public"]
    assert any("results/*/merged/report" in line for line in pages["script"])


def test_the_generated_jobs_spell_the_suites_options_in_one_place(monkeypatch, tmp_path):
    """Switching to prefixed option names is one function: every plugin option of every job follows it."""
    monkeypatch.setattr(gitlab, "pytest_option", lambda name: "--iqa-" + name.replace("_", "-"))
    config = gitlab.child_pipeline({"vsfa": "test", "niqe": "test"}, "cnniqa-live", ["test"])
    for name, job in resolved_jobs(config).items():
        for line in job.get("script", []):
            if GRID not in line:
                continue
            words = shlex.split(expand(job, line))
            options = [w for w in words if w.startswith("--") and w != "--junitxml"]
            assert options, (name, line)
            assert all(w.startswith("--iqa-") for w in options), (name, options)
