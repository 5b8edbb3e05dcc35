"""Session tags: the git commit and branch, the CI pipeline and job, device, weights mode, versions."""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

from iqa_robustness.tracking.store import (
    TAG_BRANCH,
    TAG_COMMIT,
)

log = logging.getLogger(__name__)


# Continuous-integration variables recorded as session tags (lower-cased), when set.
CI_VARIABLES = (
    "CI_PIPELINE_ID",
    "CI_PIPELINE_URL",
    "CI_JOB_ID",
    "CI_JOB_NAME",
    "CI_JOB_URL",
    "CI_COMMIT_SHA",
    "CI_COMMIT_REF_NAME",
    "CI_MERGE_REQUEST_IID",
    "CI_PROJECT_PATH",
    "CI_RUNNER_DESCRIPTION",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_JOB",
    "GITHUB_WORKFLOW",
    "GITHUB_SHA",
    "GITHUB_REF_NAME",
    "GITHUB_REPOSITORY",
)


# -- session tags ----------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def session_tags(device: str, weights_mode: str, *, root: str | Path | None = None) -> dict[str, str]:
    """Tags that say where a session's numbers come from.

    Args:
        device: the accelerator(s) the cases ran on, e.g. ``cuda:0`` or ``cpu``.
        weights_mode: ``pretrained``, ``random`` or a comma list of both; a session with any
            random-weights case is tagged ``benchmark_number=false``.
        root: checkout whose git commit and branch are recorded (default: the current folder, the
            repository whose metric is under test).

    Returns:
        git commit/branch/dirty state (also under MLflow's ``mlflow.source.git.*`` names), the CI
        pipeline and job variables that are set, device, weights mode, library versions, hostname.
    """
    root = Path(root) if root is not None else Path.cwd()
    git_commit = _git(root, "rev-parse", "HEAD")
    commit = git_commit or os.environ.get("CI_COMMIT_SHA") or os.environ.get("GITHUB_SHA", "")
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    if branch in ("", "HEAD"):  # CI checks out a detached HEAD
        branch = (
            os.environ.get("CI_COMMIT_REF_NAME")
            or os.environ.get("GITHUB_HEAD_REF")
            or os.environ.get("GITHUB_REF_NAME")
            or branch
        )
    tags: dict[str, str] = {}
    if commit:
        tags[TAG_COMMIT] = tags["mlflow.source.git.commit"] = commit
    if branch:
        tags[TAG_BRANCH] = tags["mlflow.source.git.branch"] = branch
    if git_commit:
        tags["git_dirty"] = str(bool(_git(root, "status", "--porcelain", "--untracked-files=no"))).lower()
    for name in CI_VARIABLES:
        value = os.environ.get(name)
        if value:
            tags[name.lower()] = value
    if os.environ.get("GITLAB_CI"):
        tags["ci"] = "gitlab"
    elif os.environ.get("GITHUB_ACTIONS"):
        tags["ci"] = "github"
    tags.update(
        device=device,
        weights_mode=weights_mode,
        python_version=platform.python_version(),
        torch_version=_version("torch"),
        pyiqa_version=_version("pyiqa"),
        piq_version=_version("piq"),
        torchmetrics_version=_version("torchmetrics"),
        mlflow_version=_version("mlflow"),
        iqa_robustness_version=_version("iqa-robustness"),
        hostname=socket.gethostname(),
        platform=platform.platform(),
    )
    if "random" in weights_mode.split(","):
        tags["benchmark_number"] = "false"
    return tags
