"""The GitLab pipeline's shape: per metric a training job, parallel evaluation shards, and a merge job.

The jobs are read from ``.gitlab-ci.yml`` with ``extends:`` resolved as GitLab does (mappings merged
deeply, everything else replaced), and their commands with the job's own variables substituted.
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

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("train", "evaluate", "merge", "gate")
GRID = "pytest robustness_tests"  # the script line that runs the grid
PUBLISHED_VALUES = "tests/test_published_values.py"
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


@pytest.fixture(scope="module")
def jobs() -> dict[str, dict]:
    config = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    return {
        name: _resolved(config, name)
        for name, body in config.items()
        if not name.startswith(".") and isinstance(body, dict) and ("script" in body or "extends" in body)
    }


@pytest.fixture(scope="module")
def chains(jobs: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Jobs by chain (the part after 'train:', 'evaluate:', 'merge:') and step."""
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


def test_every_chain_has_a_training_an_evaluation_and_a_merge_job(chains):
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
        assert option(command(evaluate, GRID), "--shard") == "$CI_NODE_INDEX/$CI_NODE_TOTAL"
        assert "$CI_NODE_INDEX" in results_dir(evaluate)
        assert option(command(evaluate, GRID), "--results-dir") == results_dir(evaluate)


def test_shards_read_the_training_jobs_perturbations_from_their_own_results_folder(chains):
    for chain, steps in chains.items():
        train, evaluate = steps["train"], steps["evaluate"]
        assert "--train-only" in shlex.split(command(train, GRID))
        assert option(command(train, GRID), "--results-dir") == results_dir(train)
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
        for flag in ("--shard", "--results-dir", "--junitxml"):
            if flag in words:
                del words[words.index(flag) : words.index(flag) + 2]
        return [w for w in words if w != "--train-only"]

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
            assert "--resume" in shlex.split(command(job, GRID))
            cached = [c for c in job["cache"] if c.get("when") == "always"]
            assert any(
                results_dir(job) in [expand(job, p) for p in c["paths"]] and "$CI_JOB_NAME_SLUG" in c["key"]
                for c in cached
            ), f"no per-job cache of {results_dir(job)} saved when the job fails: {job['cache']}"
            assert job["artifacts"]["when"] == "always"
            assert results_dir(job) in [expand(job, p) for p in job["artifacts"]["paths"]]
            junit = option(command(job, GRID), "--junitxml")
            assert expand(job, job["artifacts"]["reports"]["junit"]) == junit


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
        assert option(cmd, "--device") == "cuda"
        assert option(cmd, "--baseline") == "baselines/default.csv"


def test_ci_run_runs_the_cpu_chain_under_gitlab_ci_local(chains):
    cpu = {chain: steps for chain, steps in chains.items() if not is_gpu(steps["train"])}
    assert cpu, "no CPU chain"
    for steps in cpu.values():
        for step in ("train", "evaluate"):
            assert option(command(steps[step], GRID), "--device") == "cpu"
    script = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    runs = [shlex.split(line) for line in script.splitlines() if line.startswith("gitlab-ci-local ")]
    assert len(runs) == 1, "expected one gitlab-ci-local run in .ci/run"
    for name in ["lint", "unit-tests", *(f"{step}:{chain}" for chain in cpu for step in STEPS)]:
        assert name in runs[0], f".ci/run's gitlab-ci-local run leaves out {name}"


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


def test_every_session_of_the_pipeline_logs_to_one_experiment(jobs):
    for name, job in jobs.items():
        for line in job.get("script", []):
            if "--experiment" in line:
                assert option(line, "--experiment") == "$EXPERIMENT", name


def test_pages_publishes_the_reports_of_every_gpu_metric_on_the_default_branch(jobs, chains):
    pages = jobs["pages"]
    gpu_merges = {f"merge:{c}" for c, steps in chains.items() if is_gpu(steps["train"])}
    assert set(needs(pages)) == gpu_merges
    assert all(n.get("optional") for n in pages["needs"])
    assert pages["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]
    assert pages["artifacts"]["paths"] == ["public"]
    assert any("results/*/merged/report" in line for line in pages["script"])
