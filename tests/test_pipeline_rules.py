"""Which GPU chains a change runs: each metric's chain on its own files, every chain on shared ones.

Two halves. What a metric is built from is read from the code (:mod:`iqa_robustness.ci.changes`):
every file under ``metrics/`` is some metric's own file or shared, and a metric's own files are
the module registering it and the private helpers that module imports. Then, in a scratch copy
of the project with a bare ``origin`` holding ``main``, the parent pipeline's generating job runs
its ``iqa-robustness pipeline`` command line after a commit, with the predefined variables GitLab
sets for that kind of pipeline, and gitlab-ci-local lists the jobs of the child pipeline it wrote.

The selection is made in the generating job, not by ``rules: changes`` in the child pipeline:
GitLab evaluates ``changes`` of a child pipeline against its merge request in a merge request
pipeline, but as always true in a child of a branch pipeline (no push event); docs/ci.md.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_pipeline import CHILD, GENERATOR, ROOT, STEPS, resolved_jobs

from iqa_robustness.ci.changes import EVERY_METRIC, built_from, is_shared
from iqa_robustness.metrics import get_spec, list_metrics
from iqa_robustness.metrics.registry import metric_module


# -- what a metric is built from, read from the code ---------------------------------------------
def _metric_files() -> list[str]:
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "metrics").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


def test_every_file_under_metrics_is_shared_or_some_metrics_own():
    own = set().union(*(built_from(metric) for metric in list_metrics("all")))
    loose = [f for f in _metric_files() if not is_shared(f) and f not in own]
    assert not loose, (
        f"{loose} run no chain when changed: add them to EVERY_METRIC in iqa_robustness/ci/changes.py (every "
        "metric depends on them), or make the metrics built from them import them"
    )
    assert not is_shared("metrics/a_new_adapter.py"), "EVERY_METRIC must name metrics/ files one by one"


def test_every_shared_path_exists_in_the_repository():
    missing = [entry for entry in EVERY_METRIC if not (ROOT / entry).exists()]
    assert not missing, f"EVERY_METRIC names {missing}, which the repository does not have"


def test_a_metric_is_built_from_the_module_registering_it_and_the_private_helpers_it_imports():
    for metric in list_metrics("all"):
        module = Path(metric_module(metric).replace("iqa_robustness.", "", 1).replace(".", "/") + ".py")
        own = built_from(metric)
        assert is_shared(module.as_posix()) or module.as_posix() in own, (metric, sorted(own))
        assert all(path.startswith("metrics/") for path in own), (metric, sorted(own))
    assert built_from("cnniqa-live") == {"metrics/cnniqa_live.py"}
    assert built_from("vsfa") == {"metrics/vsfa.py", "metrics/_video_features.py"}
    pyiqa = next(m for m in list_metrics("all") if get_spec(m).source == "pyiqa")
    assert built_from(pyiqa) == {"metrics/pyiqa_metrics.py", "metrics/_pyiqa_loading.py"}


# -- the same selection, made by the generating job in a git repository, listed by gitlab-ci-local ----------
class Scratch:
    """A copy of the project's tracked files in a git repository whose ``origin`` holds ``main``."""

    def __init__(self, folder: Path) -> None:
        self.repo = folder / "project"
        home = folder / "home"
        home.mkdir()
        # An empty HOME and no system config: no user's gitlab-ci-local variables or git settings apply.
        self.env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "NO_COLOR": "1"}
        self.env.pop("IQA_ROBUSTNESS_SHARED", None)  # the CPU chain's rule is tested with and without it
        self.env.update(GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@example.com")
        self.env.update(GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@example.com")
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True)
        for name in tracked.stdout.split("\0"):
            if name and (ROOT / name).is_file():  # the working tree's version: uncommitted edits are tested too
                (self.repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, self.repo / name)
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "the project")
        self.git("init", "-q", "--bare", str(folder / "origin.git"), cwd=folder)
        self.git("remote", "add", "origin", str(folder / "origin.git"))
        # gitlab-ci-local reads the project's group and name from this remote (origin's is a bare path)
        self.git("remote", "add", "gcl-origin", "https://gitlab.example.com/group/iqa-robustness.git")
        self.git("push", "-q", "origin", "main")
        self.git("remote", "set-head", "origin", "main")

    def git(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(["git", *args], cwd=cwd or self.repo, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def commit(self, branch: str, *files: str, start: str = "origin/main") -> None:
        """A branch from ``start`` with one commit appending a comment line to each file."""
        self.git("checkout", "-q", "-B", branch, start)
        for name in files:
            with (self.repo / name).open("a") as f:
                f.write("\n# a change\n")
        self.git("commit", "-q", "-a", "-m", f"change {', '.join(files)}", *(["--allow-empty"] if not files else []))

    def generate(self, monkeypatch: pytest.MonkeyPatch, argv: list[str], **gitlab: str) -> Path:
        """The generating job's command, run here with GitLab's predefined variables ``gitlab``."""
        from iqa_robustness.cli.main import main

        for key in [k for k in os.environ if k.startswith(("CI_", "GITLAB_"))]:
            monkeypatch.delenv(key)
        for key, value in {"CI_DEFAULT_BRANCH": "main", **gitlab}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
        monkeypatch.chdir(self.repo)
        (self.repo / CHILD).unlink(missing_ok=True)
        assert main(argv) == 0
        return self.repo / CHILD

    def jobs(self, *variables: str) -> set[str]:
        """The jobs of the generated child pipeline, as gitlab-ci-local lists them (parallel jobs once)."""
        return self.listed("--file", CHILD, *(arg for v in variables for arg in ("--variable", v)))

    def listed(self, *args: str) -> set[str]:
        # Into a file, not a pipe: node may exit before a long write to a pipe is flushed.
        with (self.repo.parent / "jobs.csv").open("w+") as out:
            done = subprocess.run(
                ["gitlab-ci-local", "--list-csv", *args],
                cwd=self.repo,
                env=self.env,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                timeout=300,
            )
            out.seek(0)
            listed = out.read()
        assert done.returncode == 0, listed + done.stderr
        rows = listed[listed.index("name;description;") :].splitlines()[1:]
        return {re.sub(r":? \[\d+/\d+\]$", "", row.split(";")[0]) for row in rows if row}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    for tool in ("git", "gitlab-ci-local"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (npm install -g gitlab-ci-local@4.60.0)")
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout: no tracked files to copy")
    return Scratch(tmp_path_factory.mktemp("pipeline-rules"))


@pytest.fixture(scope="module")
def parent() -> dict:
    return yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())


@pytest.fixture(scope="module")
def argv(parent: dict) -> list[str]:
    """The generating job's ``iqa-robustness`` command line, with the pipeline's variables substituted."""
    job = resolved_jobs(parent)[GENERATOR]
    (line,) = [line for line in job["script"] if "iqa-robustness" in line]
    for key, value in {**parent["variables"], **job.get("variables", {})}.items():
        line = line.replace(f'"${key}"', shlex.quote(str(value))).replace(f"${key}", str(value))
    words = shlex.split(line)
    return words[words.index("pipeline") :]


@pytest.fixture(scope="module")
def grid_metrics(parent: dict) -> list[str]:
    return list_metrics(parent["variables"]["GRID_METRICS"])


def _chains(*metrics: str) -> set[str]:
    return {f"{step}:{metric}" for metric in metrics for step in STEPS}


def _gpu(jobs: set[str], grid_metrics: list[str]) -> set[str]:
    assert "plan" in jobs, f"the child pipeline must always have its plan job: {sorted(jobs)}"
    return jobs & _chains(*grid_metrics)


def test_the_parent_runs_the_generator_and_the_trigger_in_branch_merge_request_schedule_and_manual_pipelines(scratch):
    scratch.commit("readme", "README.md")
    for source in ("push", "merge_request_event", "schedule", "web"):
        assert {GENERATOR, "grid"} <= scratch.listed("--variable", f"CI_PIPELINE_SOURCE={source}"), source


def test_a_change_to_one_metrics_adapter_runs_that_metrics_chain_only(scratch, monkeypatch, argv, grid_metrics):
    scratch.commit("cnniqa", "metrics/cnniqa_live.py")
    scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="cnniqa")
    assert _gpu(scratch.jobs(), grid_metrics) == _chains("cnniqa-live")


def test_a_change_to_an_attack_runs_every_metrics_chain(scratch, monkeypatch, argv, grid_metrics):
    scratch.commit("attack", "attacks/ifgsm.py")
    scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="attack")
    assert _gpu(scratch.jobs(), grid_metrics) == _chains(*grid_metrics)


def test_a_schedule_runs_every_chain_without_a_change(scratch, monkeypatch, argv, grid_metrics):
    scratch.commit("nothing")
    scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="nothing")
    assert _gpu(scratch.jobs(), grid_metrics) == set()
    scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="schedule", CI_COMMIT_BRANCH="nothing")
    assert _gpu(scratch.jobs(), grid_metrics) == _chains(*grid_metrics)


def test_a_change_to_the_pyiqa_adapter_runs_the_pyiqa_metrics_chains_only(scratch, monkeypatch, argv, grid_metrics):
    scratch.commit("pyiqa", "metrics/pyiqa_metrics.py")
    scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="pyiqa")
    pyiqa = [m for m in grid_metrics if get_spec(m).source == "pyiqa"]
    assert pyiqa
    assert _gpu(scratch.jobs(), grid_metrics) == _chains(*pyiqa)


def test_a_change_to_the_readme_runs_no_gpu_chain_and_the_cpu_chain_where_its_folder_is(
    scratch, monkeypatch, argv, grid_metrics
):
    scratch.commit("readme", "README.md")
    scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="readme")
    jobs = scratch.jobs()
    assert _gpu(jobs, grid_metrics) == set()
    assert jobs == {"plan"}, "without IQA_ROBUSTNESS_SHARED the CPU chain does not run"
    assert scratch.jobs("IQA_ROBUSTNESS_SHARED=/shared") == {"plan", *_chains("cpu")}


def test_a_merge_request_changing_the_video_features_runs_both_video_metrics(scratch, monkeypatch, argv, grid_metrics):
    scratch.commit("video", "metrics/_video_features.py")
    base = scratch.git("merge-base", "origin/main", "HEAD")
    mr = {
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
        "CI_MERGE_REQUEST_DIFF_BASE_SHA": base,
    }
    scratch.generate(monkeypatch, argv, **mr)
    video = [m for m in grid_metrics if get_spec(m).is_video]
    assert len(video) == 2
    assert _gpu(scratch.jobs(), grid_metrics) == _chains(*video)


def test_a_push_to_main_compares_with_what_main_was(scratch, monkeypatch, argv, grid_metrics):
    scratch.commit("main", "metrics/linearity.py")  # main one commit ahead of origin's: the push's new commit
    before = scratch.git("rev-parse", "origin/main")
    scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="main", CI_COMMIT_BEFORE_SHA=before)
    assert _gpu(scratch.jobs(), grid_metrics) == _chains("linearity")
    scratch.generate(
        monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="main", CI_COMMIT_BEFORE_SHA="0" * 40
    )
    assert _gpu(scratch.jobs(), grid_metrics) == _chains(*grid_metrics), "a first push counts as everything"


def test_a_branch_behind_main_is_charged_with_its_own_changes_only_and_fetches_main_first(
    scratch, monkeypatch, argv, grid_metrics
):
    scratch.commit("behind", "metrics/cnniqa_live.py")
    scratch.commit("main-ahead", "metrics/spaq.py")
    scratch.git("push", "-q", "origin", "main-ahead:main")
    scratch.git("checkout", "-q", "behind")
    scratch.git("update-ref", "-d", "refs/remotes/origin/main")  # a CI clone holds its own branch only
    try:
        scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="behind")
        assert scratch.git("rev-parse", "origin/main") == scratch.git("rev-parse", "main-ahead")
        assert _gpu(scratch.jobs(), grid_metrics) == _chains("cnniqa-live")
    finally:
        scratch.git("push", "-q", "--force", "origin", "main-ahead~1:main")
        scratch.git("fetch", "-q", "origin")


def test_a_tag_runs_no_chain(scratch, monkeypatch, argv, grid_metrics):
    scratch.commit("tagged", "attacks/ifgsm.py")
    scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_TAG="v1.0")
    assert _gpu(scratch.jobs(), grid_metrics) == set()


def _sharpness(spec, device, weights_dir, random):  # pragma: no cover - never built here
    raise NotImplementedError


def test_a_new_metric_gets_its_chain_with_no_yaml_and_runs_on_changes_to_its_own_file(
    scratch, monkeypatch, restored_metric_registry
):
    """A metric registered by a file of the repository: ``--metric all`` writes its chain, its file selects it."""
    from iqa_robustness.metrics import MetricSpec, register_metric

    register_metric(MetricSpec(name="sharpness-of-this-test", bounds=(0.0, 1.0)), _sharpness)
    assert built_from("sharpness-of-this-test") == {"tests/test_pipeline_rules.py"}
    scratch.commit("new-metric", "tests/test_pipeline_rules.py")
    argv = ["pipeline", "--metric", "all", "--changed-since", "auto", "--out", CHILD]
    scratch.generate(monkeypatch, argv, CI_PIPELINE_SOURCE="push", CI_COMMIT_BRANCH="new-metric")
    jobs = resolved_jobs(yaml.safe_load((scratch.repo / CHILD).read_text()))
    assert set(jobs) == {"plan", "pages", *_chains("cpu", "sharpness-of-this-test")}
