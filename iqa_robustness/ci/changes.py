"""Which metrics' chains a change runs: each metric on its own files, every metric on shared ones.

A metric is *built from* the module that registers it (its builder's module) and the private
helpers that module imports from its own package, followed transitively and stopping at the
files every metric depends on (:data:`EVERY_METRIC`). A change to a shared file runs every
selected chain; a change to a metric's own files runs that metric's chain; anything else
(the README, ``tests/``, ``docs/``) runs none. A metric whose code lives outside the repository
(an installed entry point) has no own files here: only shared changes and full runs select it.

The change is the difference between a base commit and the working tree (``git diff`` from the
merge base, so a branch behind its target is not charged with the target's own changes).
:func:`gitlab_comparison` picks the base from GitLab's predefined variables the way GitLab's own
``rules:changes`` does for a pipeline of the parent project (``docs/ci.md``, "Which chains a pipeline runs"):
GitLab evaluates ``rules:changes`` of a child pipeline differently (always true outside a merge
request), so the selection is made here, in the job that generates the child pipeline.
"""

from __future__ import annotations

import ast
import functools
import logging
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Files and folders (a trailing slash) every metric's chain depends on: the suite, the attacks and
#: defences, the baselines, the packaging and the parent pipeline, and the part of ``metrics/`` that
#: every metric is registered, resolved or loaded through. Each other file under ``metrics/`` is some
#: metric's own (tests/test_pipeline_rules.py checks that).
EVERY_METRIC = (
    "attacks/",
    "defences/",
    "iqa_robustness/",
    "robustness_tests/",
    "baselines/",
    "conftest.py",
    "pyproject.toml",
    ".gitlab-ci.yml",
    "metrics/__init__.py",
    "metrics/base.py",
    "metrics/registry.py",
    "metrics/weights.py",
    "metrics/module_metric.py",
    "metrics/frames.py",
    "metrics/pyiqa_names.py",
    "metrics/_targets.py",
    "metrics/_released.py",
    "metrics/_libraries.py",
    "metrics/draws.py",
)

#: what ``CI_COMMIT_BEFORE_SHA`` holds when a push has no previous commit (a new branch)
_NO_COMMIT = "0" * 40


class ChangesError(ValueError):
    """A comparison that cannot be made; the message says what to pass instead."""


def is_shared(path: str) -> bool:
    """Whether a change to ``path`` (relative to the repository, ``/``-separated) runs every chain."""
    return any(path == entry or (entry.endswith("/") and path.startswith(entry)) for entry in EVERY_METRIC)


def repository_root(folder: Path | None = None) -> Path:
    """The top folder of the git work tree holding ``folder`` (default: the current folder)."""
    try:
        return Path(_git(folder or Path.cwd(), "rev-parse", "--show-toplevel").strip())
    except ChangesError as exc:
        raise ChangesError(f"{exc}; run `iqa-robustness pipeline` inside the project's git checkout") from exc


def built_from(metric: str) -> frozenset[str]:
    """The repository files ``metric`` is built from, relative to the checkout holding its code.

    Its builder's module, then the modules that one imports relatively from its own package,
    transitively; a shared file ends the walk (a change to it selects every chain anyway, and
    the registry's lazy imports lead everywhere). Empty for a metric whose code is in no git
    checkout (an installed package's entry point).
    """
    from iqa_robustness.metrics.registry import metric_module

    source = Path(sys.modules[metric_module(metric)].__file__ or "").resolve()
    root = _checkout_of(source.parent)
    if root is None:
        return frozenset()
    todo, seen = [source], set()
    while todo:
        path = todo.pop()
        relative = path.relative_to(root).as_posix()
        if relative in seen or not path.is_file():
            continue
        seen.add(relative)
        if not is_shared(relative):
            todo.extend(path.parent / f"{name}.py" for name in _relative_imports(path))
    return frozenset(p for p in seen if not is_shared(p))


@functools.cache
def _checkout_of(folder: Path) -> Path | None:
    try:
        return Path(_git(folder, "rev-parse", "--show-toplevel").strip()).resolve()
    except ChangesError:
        return None


@functools.cache
def _relative_imports(path: Path) -> list[str]:
    """Module names ``path`` imports from its own package (``from .x import y``, ``from . import x``)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names.extend([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
    return names


def changed_files(base: str, root: Path) -> list[str]:
    """Files that differ between the merge base of ``base`` and HEAD, and the working tree.

    Tracked changes (committed since the merge base or not) and untracked files that git does not
    ignore, so a new metric module counts before it is committed.

    Raises:
        ChangesError: ``base`` is not a commit of this repository.
    """
    try:
        merge_base = _git(root, "merge-base", base, "HEAD").strip()
    except ChangesError as exc:
        raise ChangesError(
            f"cannot compare with {base!r}: {exc}; fetch it first (`git fetch origin BRANCH`) or pass a branch, "
            "tag or commit that this checkout has"
        ) from exc
    tracked = _git(root, "diff", "--name-only", "--no-renames", merge_base).splitlines()
    untracked = _git(root, "ls-files", "--others", "--exclude-standard").splitlines()
    return sorted({*tracked, *untracked} - {""})


@dataclass(frozen=True)
class Comparison:
    """What a pipeline's changes are: every file (``everything``), none, or those since ``base``.

    Attributes:
        reason: one line for the plan, e.g. ``merge request into main: changes since 1a2b3c4``.
        fetch: a branch of ``origin`` to fetch before comparing (CI clones hold only their own ref).
    """

    reason: str
    base: str | None = None
    everything: bool = False
    fetch: str | None = None


def gitlab_comparison(env: Mapping[str, str]) -> Comparison:
    """What GitLab would compare this pipeline with, from its predefined variables.

    - a merge request pipeline: its diff base (``CI_MERGE_REQUEST_DIFF_BASE_SHA``), else its target
      branch;
    - a push to the default branch: the commit before the push (``CI_COMMIT_BEFORE_SHA``); a push
      with no previous commit counts as everything changed, as in GitLab;
    - a push to another branch: the default branch (what ``compare_to`` did in the hand-written
      pipeline), so every push reruns the chains its whole difference from the default branch touches;
    - a tag: nothing (no chain);
    - a schedule, a manual run (``web``), an API call or trigger: everything.

    Raises:
        ChangesError: the variables of a GitLab pipeline are missing.
    """
    source = env.get("CI_PIPELINE_SOURCE", "")
    if not source:
        raise ChangesError(
            "--changed-since auto reads GitLab's predefined variables (CI_PIPELINE_SOURCE, ...), which are not set; "
            "outside GitLab CI pass a branch, tag or commit to compare with"
        )
    default = env.get("CI_DEFAULT_BRANCH", "main")
    if source == "merge_request_event":
        target = env.get("CI_MERGE_REQUEST_TARGET_BRANCH_NAME") or default
        base = env.get("CI_MERGE_REQUEST_DIFF_BASE_SHA")
        if base:
            return Comparison(f"merge request into {target}: changes since {base[:8]}", base=base)
        return Comparison(f"merge request into {target}: changes since {target}", base=f"origin/{target}", fetch=target)
    if source == "push" and env.get("CI_COMMIT_TAG"):
        return Comparison(f"tag {env['CI_COMMIT_TAG']}: no chain")
    branch = env.get("CI_COMMIT_BRANCH", "")
    if source == "push" and branch == default:
        before = env.get("CI_COMMIT_BEFORE_SHA", "")
        if not before or before == _NO_COMMIT:
            return Comparison(f"push to {default} with no previous commit: every chain", everything=True)
        return Comparison(f"push to {default}: changes since {before[:8]}", base=before)
    if source == "push" and branch:
        return Comparison(f"push to {branch}: changes since {default}", base=f"origin/{default}", fetch=default)
    return Comparison(f"{source} pipeline: every chain", everything=True)


def resolve_changes(comparison: Comparison, root: Path) -> tuple[list[str] | None, str]:
    """The changed files of a comparison (``None`` for everything) and the plan's line about them.

    A branch to fetch is fetched from ``origin`` first. A base that still cannot be found (a force
    push dropped the previous commit, a shallow clone) counts as everything changed: a chain too
    many costs runner time, a chain too few lets a regression through.
    """
    if comparison.everything:
        return None, comparison.reason
    if comparison.base is None:
        return [], comparison.reason
    if comparison.fetch:
        refspec = f"+refs/heads/{comparison.fetch}:refs/remotes/origin/{comparison.fetch}"
        try:
            _git(root, "fetch", "--quiet", "--no-tags", "origin", refspec)
        except ChangesError as exc:
            log.warning("could not fetch %s from origin: %s", comparison.fetch, exc)
    try:
        return changed_files(comparison.base, root), comparison.reason
    except ChangesError as exc:
        log.warning("%s", exc)
        return None, f"{comparison.reason}, not found in this clone: every chain"


def affected(metrics: Iterable[str], changed: list[str] | None) -> dict[str, str]:
    """The metrics whose chains run, each with the reason (``metrics/vsfa.py changed``).

    Args:
        metrics: the selection, in order.
        changed: changed files relative to the repository's top folder; ``None`` means everything.
    """
    metrics = list(metrics)
    if changed is None:
        return dict.fromkeys(metrics, "every chain")
    shared = [path for path in changed if is_shared(path)]
    if shared:
        return dict.fromkeys(metrics, f"every chain: {_few(shared)} changed")
    out = {}
    for metric in metrics:
        own = sorted(built_from(metric).intersection(changed))
        if own:
            out[metric] = f"{_few(own)} changed"
    return out


def _few(paths: list[str], shown: int = 3) -> str:
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ChangesError(f"git {args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise ChangesError(f"git {' '.join(args)}: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout
