"""README.md's "Test your own metric" section, run as written (its files and commands read from README.md).

``test_install.py`` runs the same example again from a wheel installed into a fresh environment,
including the entry-point package the section declares.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import readme_example
import torch

from iqa_robustness.metrics import Metric, create_metric


@pytest.fixture
def readme_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_metric_registry) -> Path:
    """A folder holding the README's Python files, as the current folder."""
    readme_example.write(tmp_path, "sharpness.py", "my_net.py")
    monkeypatch.chdir(tmp_path)
    for module in ("sharpness", "my_net"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return tmp_path


def test_the_readme_example_metric_is_about_twenty_lines():
    code = [line for line in readme_example.files()["sharpness.py"].splitlines() if line.strip()]
    assert 12 <= len(code) <= 25


def test_every_module_name_the_readme_mentions_resolves_to_a_metric(readme_folder):
    targets = [t for t in readme_example.metric_targets() if (readme_folder / f"{t.split(':')[0]}.py").is_file()]

    assert sorted(targets) == ["my_net:MY_NET", "sharpness:Sharpness"]
    for target in targets:
        model = create_metric(target)
        assert isinstance(model, Metric)
        scores = model(torch.rand(2, 3, 64, 64))
        low, high = model.spec.bounds
        assert scores.shape == (2,)
        assert bool(((scores >= low) & (scores <= high)).all()), f"{target} scores {scores} outside {model.spec.bounds}"


def test_the_readme_metric_scores_a_noisier_image_as_sharper(readme_folder):
    metric = create_metric("sharpness:Sharpness")
    image = torch.full((1, 3, 64, 64), 0.5)
    noisy = (image + 0.05 * torch.randn_like(image)).clamp(0, 1)

    assert metric(noisy) > metric(image)


def test_the_readme_entry_point_names_the_readme_metric():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads(readme_example.files()["pyproject.toml"])
    entry_points = project["project"]["entry-points"]["iqa_robustness.metrics"]
    module, attribute = entry_points["sharpness"].split(":")

    assert f"{module}.py" in readme_example.files()
    assert f"class {attribute}(Metric)" in readme_example.files()[f"{module}.py"]
    assert project["tool"]["setuptools"]["py-modules"] == [module]
    assert readme_example.command("--metric sharpness ")[-1] == "sharpness"


@pytest.mark.pyiqa
def test_the_readme_states_the_pyiqa_facts_it_reads():
    from iqa_robustness.metrics.pyiqa_names import _pyiqa_default_configs

    configs = _pyiqa_default_configs()
    assert configs, "pyiqa's DEFAULT_CONFIGS could not be read"
    assert {"lower_better", "score_range"} <= set(configs["niqe"])
    text = " ".join(readme_example.section().split())
    assert "`lower_better` and `score_range` in `pyiqa.default_model_configs.DEFAULT_CONFIGS`" in text


@pytest.mark.slow
def test_the_readme_command_runs_the_grid_on_the_readme_metric(tmp_path, torch_home):
    readme_example.write(tmp_path, "sharpness.py")
    args = readme_example.command("--metric sharpness:Sharpness --attack")
    assert args[0] == "pytest"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MLFLOW_"))}
    env.update(HF_HUB_OFFLINE="1", TORCH_HOME=str(torch_home), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = tmp_path / "results"
    assert sorted(p.name for p in (results / "per_image").glob("*.csv")) == [
        "ifgsm_sharpness_test.csv",
        "uap_sharpness_test.csv",
    ]
    assert (tmp_path / "mlflow.db").is_file()
    with (results / "summary.csv").open() as fh:
        rows = {row["case_id"]: row for row in csv.DictReader(fh)}
    assert float(rows["ifgsm-sharpness-sample"]["abs_gain"]) > 0, "the README says I-FGSM fools the toy"
