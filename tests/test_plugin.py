"""The pytest plugin (the root ``conftest.py``) seen from the outside: selection, errors, xdist.

Each test runs the robustness suite in a fresh pytest process, the way a user would
(``pytest robustness_tests -m uap --metric niqe``), and reads what it collected or wrote.
The grid follows the benchmark of Antsiferova et al., "Comparing the robustness of modern
no-reference image- and video-quality metrics to adversarial attacks" (AAAI 2024).
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from iqa_robustness.attacks import attack_class, list_attacks
from iqa_robustness.conventions import DEFAULT_EXPERIMENT

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITE = REPO_ROOT / "robustness_tests"
DEFAULT_AMPLITUDES = ("0.2", "0.4", "0.8")
# Columns that measure the machine, not the metric: they differ between any two runs.
MACHINE_COLUMNS = {"seconds_per_image", "peak_memory_mb"}
CASE_ID = re.compile(r"::(test_\w+)\[(.+)\]$")


def run_suite(tmp_path: Path, torch_home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``pytest robustness_tests *args`` offline in ``tmp_path``; stdout and stderr are captured."""
    # A clean pytest environment: nothing of an outer xdist worker or the user's PYTEST_ADDOPTS leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # One thread per process, as the plugin gives each xdist worker on two cores: OpenMP threads that
    # compete with other processes for the same cores slow a serial run down several times over.
    env.update(HF_HUB_OFFLINE="1", TORCH_HOME=str(torch_home), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def collected(proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """``(test function, case id)`` for every item a ``--collect-only -q`` run listed."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    items = [m.groups() for line in proc.stdout.splitlines() if (m := CASE_ID.search(line.strip()))]
    assert items, f"nothing collected:\n{proc.stdout}"
    return items


def universal_attacks() -> list[str]:
    return [name for name in list_attacks() if attack_class(name).universal]


@pytest.mark.pyiqa
def test_the_uap_marker_selects_every_universal_attack_at_every_default_amplitude(tmp_path, torch_home):
    items = collected(run_suite(tmp_path, torch_home, "--collect-only", "-q", "-m", "uap", "--metric", "niqe"))

    universal = universal_attacks()
    expected = {f"{a}-niqe-sample-on-sample-amp{amp}" for a in universal for amp in DEFAULT_AMPLITUDES}
    assert len(items) == len(universal) * 1 * 1 * len(DEFAULT_AMPLITUDES)
    assert {case for _, case in items} == expected
    # listing cases runs none: no session record, no MLflow session
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "results").exists()
    assert {test for test, _ in items} == {"test_universal_attack"}


@pytest.mark.pyiqa
def test_the_iterative_marker_with_an_attack_and_metric_list_selects_their_product(tmp_path, torch_home):
    proc = run_suite(
        tmp_path,
        torch_home,
        *("--collect-only", "-q", "-m", "iterative"),
        *("--attack", "ifgsm,mifgsm", "--metric", "niqe,brisque"),
    )
    items = collected(proc)

    assert sorted(items) == sorted(
        ("test_image_specific_attack", f"{a}-{m}-sample") for a in ("ifgsm", "mifgsm") for m in ("niqe", "brisque")
    )
    output = (proc.stdout + proc.stderr).lower()
    assert "skipped" not in output
    assert "empty parameter set" not in output


@pytest.mark.pyiqa
def test_a_test_whose_grid_is_empty_is_deselected_rather_than_skipped(tmp_path, torch_home):
    # --attack ifgsm leaves the universal test without cases; -k keeps only that test, so the plugin's
    # deselection is the only thing between it and pytest's "got empty parameter set" skip.
    proc = run_suite(
        tmp_path,
        torch_home,
        *("-q", "-rs", "--attack", "ifgsm", "--metric", "niqe", "-k", "test_universal_attack"),
        *("--no-mlflow", "--results-dir", str(tmp_path / "results")),
    )
    output = proc.stdout + proc.stderr

    assert proc.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, output
    assert "skipped" not in output.lower()
    assert "empty parameter set" not in output
    assert "deselected" in output


@pytest.mark.pyiqa
def test_a_per_attack_marker_selects_only_that_attack_under_strict_markers(tmp_path, torch_home):
    proc = run_suite(
        tmp_path,
        torch_home,
        *("--collect-only", "-q", "--strict-markers", "-m", "cumulative_uap", "--metric", "niqe,brisque"),
    )
    items = collected(proc)

    expected = {
        f"cumulative-uap-{metric}-sample-on-sample-amp{amp}"
        for metric in ("niqe", "brisque")
        for amp in DEFAULT_AMPLITUDES
    }
    assert {case for _, case in items} == expected
    assert len(items) == len(expected)
    assert "unknown marker" not in (proc.stdout + proc.stderr).lower()


def test_every_registered_attack_has_its_own_marker(tmp_path, torch_home):
    proc = run_suite(tmp_path, torch_home, "--markers")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    registered = set(re.findall(r"^@pytest\.mark\.(\w+):", proc.stdout, flags=re.MULTILINE))
    expected = {name.replace("-", "_") for name in list_attacks()}
    expected |= {"iterative", "perceptual", "uap", "learned", "video", "gpu", "weights", "slow"}
    assert expected <= registered, f"missing markers: {sorted(expected - registered)}"


def test_a_misspelt_metric_fails_the_run_with_a_suggestion(tmp_path, torch_home):
    proc = run_suite(tmp_path, torch_home, "--collect-only", "-q", "--metric", "niqqe")
    output = proc.stdout + proc.stderr

    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "did you mean" in output
    assert "'niqe'" in output
    assert "Traceback" not in output


@pytest.mark.pyiqa
def test_a_misspelt_attack_fails_the_run_with_a_suggestion(tmp_path, torch_home):
    proc = run_suite(tmp_path, torch_home, "--collect-only", "-q", "--attack", "ifgsn")
    output = proc.stdout + proc.stderr

    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "'ifgsm'" in output


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_a_results_dir_that_cannot_be_made_stops_the_run_before_any_case_naming_it_and_why(tmp_path, torch_home, where):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    results_dir = tmp_path / "notes.txt" / "results" if where == "under a file" else tmp_path / "notes.txt"
    proc = run_suite(tmp_path, torch_home, "--metric", "niqe", "--attack", "fgsm", "--results-dir", str(results_dir))
    output = proc.stdout + proc.stderr

    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert f"results folder {results_dir}" in output
    assert f"{tmp_path / 'notes.txt'} is a file, not a folder" in output
    assert "INTERNALERROR" not in output
    assert "Traceback" not in output
    assert "passed" not in output
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder: run as another user to check this")
def test_a_read_only_results_dir_stops_the_run_before_any_case(tmp_path, torch_home):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    proc = run_suite(tmp_path, torch_home, "--metric", "niqe", "--results-dir", str(locked / "results"))
    output = proc.stdout + proc.stderr

    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert f"{locked} is not writable by this user" in output


def test_the_default_results_dir_is_checked_once_grid_cases_are_collected(tmp_path, torch_home):
    (tmp_path / "results").write_text("a file where the default results folder would go")
    proc = run_suite(tmp_path, torch_home, "--dataset", "msu5", "-k", "fgsm-niqe")  # no grid option given
    output = proc.stdout + proc.stderr

    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "results folder results is a file, not a folder; choose another --iqa-results-dir" in output
    assert "INTERNALERROR" not in output


def test_an_unrelated_pytest_run_does_not_check_the_results_dir(tmp_path, torch_home):
    (tmp_path / "results").write_text("a project's own file")
    (tmp_path / "test_own.py").write_text("def test_own():\n    assert True\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_own.py"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


@pytest.mark.pyiqa
def test_the_learned_marker_selects_the_attacks_that_train_a_generator(tmp_path, torch_home):
    items = collected(run_suite(tmp_path, torch_home, "--collect-only", "-q", "-m", "learned", "--metric", "niqe"))

    learned = {name for name in list_attacks() if attack_class(name).learned}
    assert learned == {"generative-uap", "cnn"}
    assert {case.split("-niqe-")[0] for _, case in items} == learned


def read_summary(path: Path) -> tuple[list[str], dict[tuple[str, ...], dict[str, str]]]:
    """The summary's columns and its rows keyed by (metric, attack, dataset, train set, amplitude)."""
    assert path.is_file(), f"no summary written at {path}"
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    keyed = {tuple(r[k] for k in ("metric", "attack", "dataset", "train_dataset", "amplitude")): r for r in rows}
    assert len(keyed) == len(rows), f"duplicate case rows in {path}"
    return columns, keyed


def as_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


@pytest.mark.slow
def test_xdist_workers_write_the_same_summary_as_a_serial_run(tmp_path, torch_home, pyiqa_weights):
    # 144 px on the longer side keeps the shorter side of the first four sample photos at >= 96 px,
    # NIQE's minimum input size.
    common = ("--metric", "niqe", "--attack", "fgsm,ifgsm", "--dataset", "sample", "--max-images", "4")
    common += ("--image-size", "144", "--no-mlflow")
    serial = run_suite(tmp_path, torch_home, *common, "--results-dir", str(tmp_path / "serial"))
    assert serial.returncode == 0, serial.stdout + serial.stderr
    parallel = run_suite(tmp_path, torch_home, *common, "-n", "2", "--results-dir", str(tmp_path / "xdist"))
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert "2 workers [2 items]" in parallel.stdout, "the -n 2 run did not spread the cases over two workers"

    columns, expected = read_summary(tmp_path / "serial" / "summary.csv")
    xdist_columns, got = read_summary(tmp_path / "xdist" / "summary.csv")
    assert xdist_columns == columns
    assert set(expected) == {("niqe", a, "sample", "", "") for a in ("fgsm", "ifgsm")}
    assert set(got) == set(expected)
    for key, row in expected.items():
        for column in columns:
            if column in MACHINE_COLUMNS:
                continue
            want, have = row[column], got[key][column]
            if as_float(want) is None:
                assert have == want, f"{key} {column}"
            else:
                assert as_float(have) == pytest.approx(as_float(want), rel=1e-4, abs=1e-6, nan_ok=True), (
                    f"{key} {column}"
                )


def test_under_xdist_every_case_of_a_metric_runs_in_one_worker(tmp_path, torch_home, pyiqa_weights):
    # Two metrics x two cases each: with -n 2 alone the plugin asks for loadgroup and the workers tag each
    # case with its metric, so a model loads (and a universal perturbation trains) in one worker only.
    args = ("--metric", "niqe,brisque", "--attack", "fgsm,fgsm(eps=4/255)", "--dataset", "sample")
    args += ("--max-images", "2", "--image-size", "144", "--no-mlflow", "--results-dir", str(tmp_path / "r"))
    proc = run_suite(tmp_path, torch_home, *args, "-n", "2", "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = re.findall(r"\[(gw\d+)\].*PASSED \S+\[fgsm\S*-(niqe|brisque)-sample\]@(\w+)", proc.stdout)
    assert len(ran) == 4, proc.stdout
    workers: dict[str, set[str]] = {}
    for worker, metric, group in ran:
        assert group == metric
        workers.setdefault(metric, set()).add(worker)
    assert all(len(w) == 1 for w in workers.values()), workers


def test_a_case_that_raises_keeps_its_row_with_the_error_and_the_other_cases_are_kept(tmp_path, torch_home):
    results = tmp_path / "results"
    # vsfa refuses frames under 64 px; cnniqa-live runs at that size
    args = "--random-weights --no-mlflow --metric cnniqa-live,vsfa --attack fgsm --dataset sample --max-images 1"
    proc = run_suite(tmp_path, torch_home, *args.split(), "--image-size", "48", "--results-dir", str(results))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "1 failed, 1 passed" in proc.stdout
    assert "ERROR" in proc.stdout  # the console table flags the case
    with (results / "summary.csv").open() as fh:
        rows = {row["case_id"]: row for row in csv.DictReader(fh)}
    assert rows["fgsm-cnniqa-live-sample"]["status"] == "passed"
    error = rows["fgsm-vsfa-sample"]
    assert error["status"] == "error"
    assert error["n"] == "0"
    assert "at least 64 px" in error["message"]


def test_an_attack_with_hyperparameters_runs_and_its_values_reach_the_summary_and_mlflow(
    tmp_path, torch_home, pyiqa_weights, msu_test_images
):
    results = tmp_path / "results"
    args = ("--attack", "ifgsm(eps=2/255)", "--metric", "niqe", "--dataset", "msu5", "--image-size", "128")
    store = tmp_path / "mlflow.db"
    proc = run_suite(
        tmp_path, torch_home, *args, "--results-dir", str(results), "--mlflow-uri", f"sqlite:///{store}", timeout=600
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "1 passed" in proc.stdout
    case_id = "ifgsm(eps=0.007843)-niqe-msu5"
    assert len(list(results.glob(f"cases/*/{case_id}.json"))) == 1  # the id is a file stem: no "/"

    with (results / "summary.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["case_id"] == case_id
    assert row["attack"] == "ifgsm(eps=0.007843)"
    assert row["attack_spec"] == f"ifgsm(eps={2 / 255!r})"
    assert float(row["max_linf"]) <= 2 / 255 + 1e-5

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id], "tags.run_kind = 'case'")
    assert float(run.data.params["eps"]) == 2 / 255
    assert float(run.data.params["alpha"]) == 1 / 255  # the defaults are logged too
    assert run.data.params["attack"] == "ifgsm(eps=0.007843)"


@pytest.mark.pyiqa
def test_a_misspelt_hyperparameter_fails_the_run_with_a_suggestion(tmp_path, torch_home):
    proc = run_suite(tmp_path, torch_home, "--collect-only", "-q", "--attack", "ifgsm(epz=2/255)")
    output = proc.stdout + proc.stderr

    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "did you mean 'eps'?" in output
    assert "eps=0.0392157" in output
    assert "Traceback" not in output


@pytest.mark.pyiqa
def test_hyperparameter_specs_and_globs_mix_in_one_attack_option(tmp_path, torch_home):
    proc = run_suite(
        tmp_path,
        torch_home,
        *("--collect-only", "-q", "--metric", "niqe", "--attack", "*fgsm,ifgsm(eps=4/255,iters=20)"),
    )
    items = collected(proc)

    assert {case for _, case in items} == {
        f"{a}-niqe-sample" for a in ("amifgsm", "fgsm", "ifgsm", "mifgsm", "ifgsm(eps=0.01569,iters=20)")
    }
