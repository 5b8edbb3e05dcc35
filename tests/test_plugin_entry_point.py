"""The plugin as its entry point installs it: options known before parsing, no re-rooting, no heavy imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.pyiqa
def test_an_absolute_dataset_path_without_a_test_path_runs_the_grid_of_the_checkout(tmp_path: Path) -> None:
    images = tmp_path / "my images"
    images.mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"im{i}.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    command = [sys.executable, "-m", "pytest", "--metric", "niqe", "--attack", "ifgsm", "--dataset", str(images)]
    proc = subprocess.run(
        [*command, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert collected == ["robustness_tests/test_robustness.py::test_image_specific_attack[ifgsm-niqe-my images]"]
    assert "unrecognized arguments" not in output


def test_an_unrelated_test_run_gets_neither_torch_nor_an_allocator_setting(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text(
        "import sys\n\n\ndef test_nothing_heavy_was_imported():\n    assert 'torch' not in sys.modules\n"
        # nothing process-wide either: the allocator setting of a suite run is never loaded
        "    assert 'iqa_robustness.runner.allocator' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_plain.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    plugins = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", "--trace-config", "test_plain.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "iqa_robustness.plugin" in plugins.stdout, "the plugin is loaded through its entry point"
