"""Which GPU chains a change runs: each metric's chain on its own files, every chain on shared ones.

Two halves. The lists in ``.gitlab-ci.yml`` are checked against the code: every file under
``metrics/`` is some metric's own file or in ``.rules:every-metric``, and each GPU chain's rules
name the files its metric is built from (the module that registers it and the private helpers
that module imports). Then gitlab-ci-local, in a scratch copy of the project with a bare
``origin`` holding ``main``, says which jobs a pipeline would run after a commit on a branch.

gitlab-ci-local (4.x, ``src/utils.js`` ``evaluateRuleChanges``) evaluates ``rules:changes`` as
``git diff --name-only origin/<default branch>`` in its working directory, the default branch
being what ``refs/remotes/origin/HEAD`` points to; it ignores ``compare_to``, so every case
compares with ``main`` as GitLab does for a branch pipeline with ``compare_to:
refs/heads/$CI_DEFAULT_BRANCH`` and for a merge request into ``main``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from test_pipeline import ROOT, STEPS, _resolved

EVERY_METRIC = ".rules:every-metric"
ALWAYS = {"lint", "unit-tests"}
PYIQA_METRICS = {"paq2piq", "nima", "maniqa", "musiq", "dbcnn", "hyperiqa"}


# -- the lists, read from the YAML -------------------------------------------------------------
def _changes(rules: Iterable[dict]) -> set[str]:
    """Every path the rules' ``changes`` name (a list, or ``paths:`` with ``compare_to:``)."""
    out: set[str] = set()
    for rule in rules:
        changes = rule.get("changes", [])
        out.update(changes["paths"] if isinstance(changes, dict) else changes)
    return out


def _glob(pattern: str) -> re.Pattern[str]:
    """A ``rules:changes`` glob as a regex: ``**/`` any folders, ``*`` anything but ``/``."""
    parts = re.split(r"(\*\*/|\*)", pattern)
    table = {"**/": "(?:.*/)?", "*": "[^/]*"}
    return re.compile("".join(table.get(p, re.escape(p)) for p in parts))


def _matched(path: str, patterns: Iterable[str]) -> bool:
    return any(_glob(p).fullmatch(path) for p in patterns)


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())


@pytest.fixture(scope="module")
def shared(config: dict) -> set[str]:
    return _changes(config[EVERY_METRIC]["rules"])


@pytest.fixture(scope="module")
def gpu_chains(config: dict) -> dict[str, dict[str, dict]]:
    """GPU chain (= its METRIC) -> step -> resolved job."""
    out: dict[str, dict[str, dict]] = {}
    for name in config:
        step, _, chain = name.partition(":")
        if step in STEPS and not name.startswith("."):
            job = _resolved(config, name)
            if "gpu" in _resolved(config, f"train:{chain}").get("tags", []):
                out.setdefault(chain, {})[step] = job
    return out


def _own(job: dict, shared: set[str]) -> set[str]:
    return _changes(job.get("rules", [])) - shared


# -- what a metric is built from, read from the code ---------------------------------------------
def _built_from(metric: str, shared: set[str]) -> set[str]:
    """The file registering ``metric`` and, transitively, the ``metrics/`` files it imports.

    Imports of shared files are not followed: a change to one runs every chain anyway, and the
    registry's lazy imports (``module:Name`` targets, pyiqa names) lead everywhere.
    """
    from metrics.registry import _METRICS

    module = _METRICS[metric].builder.__module__
    assert module.startswith("metrics."), f"{metric} is built outside metrics/: {module}"
    todo, seen = [module.removeprefix("metrics.")], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if _matched(f"metrics/{name}.py", shared):
            continue
        tree = ast.parse((ROOT / "metrics" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo.extend([node.module] if node.module else [a.name for a in node.names])
    return {f"metrics/{name}.py" for name in seen}


def _metric_files() -> list[str]:
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "metrics").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


def test_every_file_under_metrics_is_shared_or_some_metrics_own(gpu_chains, shared):
    own = set().union(*(_own(steps["train"], shared) for steps in gpu_chains.values()))
    loose = [f for f in _metric_files() if not _matched(f, shared | own)]
    assert not loose, (
        f"{loose} run no GPU chain when changed: add them to the changes of {EVERY_METRIC} (every metric "
        "depends on them) or of the .rules:METRIC of the metrics built from them, in .gitlab-ci.yml"
    )
    assert not _matched("metrics/a_new_adapter.py", shared), f"{EVERY_METRIC} must name metrics/ files one by one"


def test_each_gpu_chain_runs_on_changes_to_the_files_its_metric_is_built_from(gpu_chains, shared):
    assert set(gpu_chains) >= PYIQA_METRICS | {"cnniqa-live", "linearity", "vsfa", "mdtvsfa"}
    for chain, steps in gpu_chains.items():
        built_from = _built_from(chain, shared)
        own = _own(steps["train"], shared)
        missing = [f for f in sorted(built_from) if not _matched(f, shared | own)]
        assert not missing, f"a change to {missing} does not run {chain}'s chain; list them in its .rules:{chain}"
        assert own, f"{chain}'s chain has no rules on its own files (extend .rules:{chain} last)"
        foreign = sorted(own - built_from)
        assert not foreign, f"{chain}'s chain runs on {foreign}, which {chain} is not built from"
        for step in STEPS:
            assert steps[step].get("rules") == steps["train"]["rules"], f"{step}:{chain} has other rules"


def test_each_gpu_chain_runs_on_schedules_and_manual_runs_and_compares_branches_with_the_default(gpu_chains):
    for chain, steps in gpu_chains.items():
        rules = steps["train"]["rules"]
        assert rules[0] == {"if": '$CI_PIPELINE_SOURCE == "schedule" || $CI_PIPELINE_SOURCE == "web"'}, chain
        compared = [r["changes"] for r in rules if isinstance(r.get("changes"), dict)]
        assert compared, f"{chain}: no rule compares a branch with the default branch"
        assert all(c["compare_to"] == "refs/heads/$CI_DEFAULT_BRANCH" for c in compared), compared
        assert all("changes" in r for r in rules[1:]), f"{chain}: a rule without changes runs it on every push"


# -- the same rules, evaluated by gitlab-ci-local ----------------------------------------------------------
class Scratch:
    """A copy of the project's tracked files in a git repository whose ``origin`` holds ``main``."""

    def __init__(self, folder: Path) -> None:
        self.repo = folder / "project"
        home = folder / "home"
        home.mkdir()
        # An empty HOME and no system config: no user's gitlab-ci-local variables or git settings apply.
        self.env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "NO_COLOR": "1"}
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
        return done.stdout

    def commit(self, branch: str, *files: str) -> None:
        """A branch from origin's main with one commit appending a comment line to each file."""
        self.git("checkout", "-q", "-B", branch, "origin/main")
        for name in files:
            with (self.repo / name).open("a") as f:
                f.write("\n# a change\n")
        self.git("commit", "-q", "-a", "-m", f"change {', '.join(files)}", *(["--allow-empty"] if not files else []))

    def jobs(self, *variables: str) -> set[str]:
        """The jobs the pipeline would run (parallel jobs once, by their base name)."""
        args = [arg for v in variables for arg in ("--variable", v)]
        # Into a file, not a pipe: node may exit before a long write to a pipe is flushed.
        with (self.repo.parent / "jobs.csv").open("w+") as out:
            done = subprocess.run(
                ["gitlab-ci-local", "--list-csv", *args],
                cwd=self.repo,
                env=self.env,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
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


def _chains(*metrics: str) -> set[str]:
    return {f"{step}:{metric}" for metric in metrics for step in STEPS}


@pytest.fixture(scope="module")
def every_chain(gpu_chains) -> set[str]:
    return _chains(*gpu_chains)


def _gpu(jobs: set[str], every_chain: set[str]) -> set[str]:
    assert jobs >= ALWAYS, f"lint and unit-tests must always run: {sorted(jobs)}"
    return jobs & every_chain


def test_a_change_to_one_metrics_adapter_runs_that_metrics_chain_only(scratch, every_chain):
    scratch.commit("cnniqa", "metrics/cnniqa_live.py")
    assert _gpu(scratch.jobs(), every_chain) == _chains("cnniqa-live")


def test_a_change_to_an_attack_runs_every_metrics_chain(scratch, every_chain):
    scratch.commit("attack", "attacks/ifgsm.py")
    assert _gpu(scratch.jobs(), every_chain) == every_chain


def test_a_schedule_runs_every_chain_without_a_change(scratch, every_chain):
    scratch.commit("nothing")
    assert _gpu(scratch.jobs(), every_chain) == set()
    assert _gpu(scratch.jobs("CI_PIPELINE_SOURCE=schedule"), every_chain) == every_chain


def test_a_change_to_the_pyiqa_adapter_runs_the_pyiqa_metrics_chains_only(scratch, every_chain):
    scratch.commit("pyiqa", "metrics/pyiqa_metrics.py")
    assert _gpu(scratch.jobs(), every_chain) == _chains(*PYIQA_METRICS)


def test_a_change_to_the_readme_runs_no_gpu_chain(scratch, every_chain):
    scratch.commit("readme", "README.md")
    assert _gpu(scratch.jobs(), every_chain) == set()


def test_a_merge_request_changing_the_video_features_runs_both_video_metrics(scratch, every_chain):
    scratch.commit("video", "metrics/_video_features.py")
    mr = ("CI_PIPELINE_SOURCE=merge_request_event", "CI_COMMIT_BRANCH=")
    assert _gpu(scratch.jobs(*mr), every_chain) == _chains("vsfa", "mdtvsfa")


def test_a_push_to_main_compares_with_what_main_was(scratch, every_chain):
    scratch.commit("main", "metrics/linearity.py")  # main one commit ahead of origin's: the push's new commit
    assert _gpu(scratch.jobs(), every_chain) == _chains("linearity")
