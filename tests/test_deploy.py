"""The grid's train -> shards -> merge chain as a Slurm job array and a Kubernetes Indexed Job.

One script (``deploy/grid.sh``) runs each step. Here it runs as the schedulers would run it: once
per array task with ``SLURM_ARRAY_TASK_ID`` set (through the ``.sbatch`` files themselves), once
per completion index with ``JOB_COMPLETION_INDEX`` set; the merged shards must give the scores
of one unsharded session (NIQE x FGSM, I-FGSM and UAP on the 5 msu5 images at 96 px, no MLflow).
The Kubernetes manifests are checked against the Kubernetes schema (``kubernetes-validate``,
strict) and for what makes the shards an Indexed Job.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_sessions import assert_same_summary, summary_rows

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SCRIPT = DEPLOY / "grid.sh"
SLURM = DEPLOY / "slurm"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
GRID = "--metric niqe --attack fgsm,ifgsm,uap --dataset msu5 --train-dataset msu5 --image-size 96 --uap-steps 2"
SETTINGS = "--amplitude 0.2 --device cpu --no-mlflow"
SHARDS = 2


@pytest.fixture(scope="module")
def env(shared_dir: Path, torch_home: Path) -> dict[str, str]:
    """The tasks' environment: the grid's settings, offline, no scheduler's variables of this machine."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "SLURM_", "JOB_COMPLETION_INDEX", "SHARD_", "MLFLOW_"))
    }
    out.update(
        GRID_ARGS=f"{GRID} {SETTINGS} --weights-dir {shared_dir / 'weights'}",
        PYTEST=str(BIN / "pytest"),
        IQA_ROBUSTNESS=str(BIN / "iqa-robustness"),
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(torch_home),
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
    )
    return out


def run(command: list[str], env: dict[str, str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env={**env, **extra}, capture_output=True, text=True, timeout=900)
    return done


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """One session of the whole grid: its results folder."""
    work = tmp_path_factory.mktemp("unsharded")
    args = [env["PYTEST"], "--pyargs", "iqa_robustness.robustness_tests", *shlex.split(env["GRID_ARGS"])]
    done = run([*args, "--results-dir", "results", "-p", "no:cacheprovider"], env, work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work / "results"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """The training step, run once: the results folder holding ``train/perturbations``."""
    work = tmp_path_factory.mktemp("trained")
    done = run(["bash", str(SCRIPT), "train"], env, work, GRID_RESULTS=str(work / "results"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert any((work / "results" / "train" / "perturbations").iterdir())
    return work / "results"


def _results_with_training(trained: Path, folder: Path) -> Path:
    shutil.copytree(trained / "train", folder / "train")
    return folder


def _cases(folder: Path) -> set[str]:
    return set(summary_rows(folder / "summary.csv"))


def test_a_slurm_array_task_per_shard_then_the_merge_job_give_the_unsharded_sessions_scores(
    tmp_path, env, unsharded, trained
):
    results = _results_with_training(trained, tmp_path / "results")
    array = {"SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": str(SHARDS), "SLURM_SUBMIT_DIR": str(ROOT)}
    for task in range(1, SHARDS + 1):  # as `sbatch --array=1-2 deploy/slurm/shards.sbatch` runs them
        done = run(
            ["bash", str(SLURM / "shards.sbatch")],
            env,
            tmp_path,
            GRID_RESULTS=str(results),
            SLURM_ARRAY_TASK_ID=str(task),
            SLURM_ARRAY_JOB_ID="77",
            **array,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shards = [_cases(results / f"shard-{k}") for k in range(1, SHARDS + 1)]
    assert not shards[0] & shards[1], "the shards must be disjoint"
    trained_files = {p.name: p.stat().st_mtime_ns for p in (trained / "train" / "perturbations").iterdir()}
    for k in range(1, SHARDS + 1):  # copied with their times from the training step's folder, not trained again
        loaded = results / f"shard-{k}" / "perturbations"
        assert {p.name: p.stat().st_mtime_ns for p in loaded.iterdir()} == trained_files
    merge = ["bash", str(SLURM / "merge.sbatch")]
    done = run(merge, env, tmp_path, GRID_RESULTS=str(results), SLURM_SUBMIT_DIR=str(ROOT))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_same_summary(summary_rows(results / "merged" / "summary.csv"), summary_rows(unsharded / "summary.csv"))


def test_a_kubernetes_indexed_jobs_pods_then_the_merge_job_give_the_unsharded_sessions_scores(
    tmp_path, env, unsharded, trained
):
    results = _results_with_training(trained, tmp_path / "results")
    for index in range(SHARDS):  # as an Indexed Job with completions: 2 runs its pods
        done = run(
            ["bash", str(SCRIPT), "shard"],
            env,
            tmp_path,
            GRID_RESULTS=str(results),
            JOB_COMPLETION_INDEX=str(index),
            SHARD_COUNT=str(SHARDS),
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in results.iterdir()} == {"train", *(f"shard-{k}" for k in range(1, SHARDS + 1))}
    done = run(["bash", str(SCRIPT), "merge"], env, tmp_path, GRID_RESULTS=str(results))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_same_summary(summary_rows(results / "merged" / "summary.csv"), summary_rows(unsharded / "summary.csv"))


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"SHARD_COUNT": "2"}, "no shard index"),
        ({"JOB_COMPLETION_INDEX": "0"}, "no shard count: set SHARD_COUNT"),
        ({"JOB_COMPLETION_INDEX": "2", "SHARD_COUNT": "2"}, "shard 3 is not one of 1..2"),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, None),
    ],
)
def test_the_shard_script_says_what_is_missing_before_it_runs_anything(tmp_path, variables, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION_INDEX", "SHARD_"))}
    env.update(PYTEST="echo", GRID_RESULTS=str(tmp_path), **variables)  # `echo`: the command it would run
    done = subprocess.run(["bash", str(SCRIPT), "shard"], env=env, capture_output=True, text=True, timeout=60)
    if message is None:  # array 0-3: task 4 is out of range, task 3 is the last shard
        assert done.returncode == 2
        assert "shard 5 is not one of 1..4" in done.stderr
        env["SLURM_ARRAY_TASK_ID"] = "3"
        done = subprocess.run(["bash", str(SCRIPT), "shard"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "--iqa-shard 4/4" in done.stdout
        assert f"--iqa-results-dir {tmp_path}/shard-4" in done.stdout
        return
    assert done.returncode == 2
    assert message in done.stderr


# -- the schedulers' files -----------------------------------------------------------------------------
def test_the_slurm_files_run_the_shared_script_as_an_array_after_the_training_and_before_the_merge():
    steps = {"train.sbatch": "train", "shards.sbatch": "shard", "merge.sbatch": "merge"}
    for name, step in steps.items():
        text = (SLURM / name).read_text()
        assert re.search(rf"^exec deploy/grid\.sh {step}$", text, flags=re.M), name
        assert 'cd "${SLURM_SUBMIT_DIR:-.}"' in text, f"{name} must run where it was submitted from"
    assert re.search(r"^#SBATCH --array=1-\d+$", (SLURM / "shards.sbatch").read_text(), flags=re.M)
    assert "--gres=gpu:1" in (SLURM / "shards.sbatch").read_text()
    submit = (SLURM / "submit.sh").read_text()
    assert re.search(r'--dependency="afterok:\$train" "\$here/shards.sbatch"', submit)
    assert re.search(r'--dependency="afterok:\$shards" "\$here/merge.sbatch"', submit)
    done = subprocess.run(["bash", "-n", *map(str, [SCRIPT, *SLURM.iterdir()])], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _manifests() -> dict[str, list[dict]]:
    return {path.name: [d for d in yaml.safe_load_all(path.read_text()) if d] for path in sorted(K8S.glob("*.yaml"))}


def test_the_kubernetes_manifests_are_valid_for_the_kubernetes_schema():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    for documents in _manifests().values():
        for document in documents:
            for version in ("1.30.0", kubernetes_validate.latest_version()):
                kubernetes_validate.validate(document, version, strict=True)  # raises on an unknown or wrong field
    broken = _manifests()["shards.yaml"][0]
    broken["spec"]["completionMod"] = broken["spec"].pop("completionMode")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_shards_are_an_indexed_job_whose_pods_run_the_shared_script_on_the_shared_volume():
    manifests = _manifests()
    (settings,) = [d for d in manifests["settings.yaml"] if d["kind"] == "ConfigMap"]
    jobs = {name.removesuffix(".yaml"): docs[0] for name, docs in manifests.items() if docs[0]["kind"] == "Job"}
    assert set(jobs) == {"train", "shards", "merge"}
    shards = jobs["shards"]["spec"]
    assert shards["completionMode"] == "Indexed"
    assert shards["completions"] >= 2
    for step, job in jobs.items():
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (container,) = pod["containers"]
        assert container["command"][-1].endswith(f"/opt/iqa-robustness/grid.sh {'shard' if step == 'shards' else step}")
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["results"] == settings["data"]["GRID_RESULTS"]
        assert mounts["script"] == "/opt/iqa-robustness"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["script"]["configMap"]["name"] == "iqa-robustness-script"
        assert volumes["results"]["persistentVolumeClaim"]["claimName"] == "iqa-robustness-results"
        assert {"configMapRef": {"name": settings["metadata"]["name"]}} in container["envFrom"]
        gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        assert (gpus == 1) == (step != "merge"), step
    (container,) = jobs["shards"]["spec"]["template"]["spec"]["containers"]
    count = {e["name"]: e["value"] for e in container["env"]}["SHARD_COUNT"]
    assert count == str(shards["completions"]), "SHARD_COUNT must be the Job's completions"
