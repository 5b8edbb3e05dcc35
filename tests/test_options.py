"""The option table and the plugin as a guest in someone else's pytest.

The table (``iqa_robustness/runner/options.py``) is the one place an option is declared: these tests
check that the ``SuiteConfig``, the session settings and ``docs/options.md`` follow from it, that
the quick grid fills in what the main job leaves out on a CPU, and, in real pytest processes, that a
project whose ``conftest.py`` declares ``--device``, ``--seed`` and ``--metric`` runs unchanged with the
plugin installed while the suite still runs there under its ``--iqa-`` names.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iqa_robustness.conventions import (
    AMPLITUDES,
    CPU_MAX_QUERIES,
    QUICK_IMAGE_SIZE,
    QUICK_MAX_IMAGES,
    QUICK_MAX_QUERIES,
    QUICK_UAP_MAX_STEPS,
)
from iqa_robustness.runner.grid import grid_attacks
from iqa_robustness.runner.options import (
    DEFAULT_METRICS,
    OPTIONS,
    REFERENCE_COMMAND,
    AutoOr,
    defaults,
    flag,
    grid_values,
    reference_page,
    settings,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
#: SuiteConfig fields no option sets: internal knobs the tests and the bench turn
INTERNAL_FIELDS = {"pairs_to_save", "clip_chunk_frames"}


def pytest_in(folder: Path, torch_home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pytest *args`` in ``folder``, offline, with a clean pytest environment; output captured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(HF_HUB_OFFLINE="1", TORCH_HOME=str(torch_home), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_option_has_the_iqa_prefix_and_a_distinct_destination():
    assert len(OPTIONS) >= 37
    assert all(o.flag.startswith("--iqa-") and o.dest.startswith("iqa_") for o in OPTIONS)
    assert len({o.flag for o in OPTIONS}) == len({o.dest for o in OPTIONS}) == len(OPTIONS)
    assert flag("results_dir") == flag("results-dir") == "--iqa-results-dir"


def test_the_option_reference_page_is_generated_from_the_table():
    page = (REPO_ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert page == reference_page(), f"docs/options.md is out of date: run `{REFERENCE_COMMAND}`"
    for o in OPTIONS:
        assert f"`{o.flag}" in page


def test_every_suite_config_field_is_set_by_one_option_or_is_internal():
    from iqa_robustness.runner.config import SuiteConfig

    set_by: dict[str, list[str]] = {}
    for o in OPTIONS:
        for field in (o.field,) if isinstance(o.field, str) else o.field or ():
            set_by.setdefault(field, []).append(o.name)
    fields = {f.name for f in dataclasses.fields(SuiteConfig)}
    assert set(set_by) | INTERNAL_FIELDS == fields, "an option without a field, or a field without an option"
    assert all(len(names) == 1 for names in set_by.values()), set_by


def test_the_suite_config_of_given_options_holds_their_values():
    from iqa_robustness.runner.config import SuiteConfig

    given = {**defaults(), "device": "cpu", "batch_size": 3, "uap_steps": "epochs", "shard_images": "2/3"}
    given.update(jpeg_quality=(30, 70), eps=(2 / 255,), results_dir="out", attack="fgsm")
    config = SuiteConfig.from_options(given)

    assert (config.batch_size, config.uap_steps, config.uap_full_epochs) == (3, None, True)
    assert config.image_shard == (2, 3)
    assert config.jpeg_quality == (30, 70)
    assert config.budgets == (2 / 255,)
    assert config.results_dir == Path("out")
    assert config.grid == "full"  # an attack was given: not the main job
    assert SuiteConfig.from_options({**defaults(), "device": "cpu"}).batch_size == 0  # auto


def test_a_session_records_every_setting_merge_may_let_differ():
    from iqa_robustness.runner.sessions import LOCAL_SETTINGS

    recorded = settings(defaults())
    assert set(recorded) >= LOCAL_SETTINGS
    assert (recorded["resume"], recorded["random_weights"], recorded["clamp_uap"]) == (False, False, False)
    assert {"metric", "attack", "grid", "image_size", "max_images", "queries", "uap_steps", "seed"} <= set(recorded)
    json.dumps(recorded)  # a session record is JSON


@pytest.mark.parametrize(
    ("parser", "text", "expected"),
    [
        (AutoOr("images per batch"), "auto", "auto"),
        (AutoOr("images per batch"), " 12 ", 12),
        (AutoOr("steps", ("auto", "epochs")), "Epochs", "epochs"),
    ],
)
def test_the_auto_or_number_parser_takes_words_and_positive_numbers(parser, text, expected):
    assert parser(text) == expected


@pytest.mark.parametrize("text", ["0", "-3", "many", "2.5", ""])
def test_the_auto_or_number_parser_refuses_anything_else_saying_what_to_give(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"give a positive number of steps or 'auto' or 'epochs'"):
        AutoOr("steps", ("auto", "epochs"))(text)


def test_the_main_job_on_a_cpu_is_the_quick_grid_and_the_full_grid_is_one_option_away():
    quick = grid_values(defaults(), on_cuda=False)
    assert quick["grid"] == "quick"
    assert (quick["attack"], quick["max_images"], quick["image_size"]) == ("all", QUICK_MAX_IMAGES, QUICK_IMAGE_SIZE)

    full = grid_values({**defaults(), "grid": "full"}, on_cuda=False)
    assert (full["grid"], full["attack"], full["max_images"], full["image_size"]) == ("full", "all", None, None)
    assert grid_values(defaults(), on_cuda=True)["grid"] == "full"


def test_the_quick_grid_leaves_what_is_given_alone():
    assert grid_values({**defaults(), "metric": "niqe"}, on_cuda=False)["grid"] == "full"
    assert grid_values({**defaults(), "attack": "ifgsm"}, on_cuda=False)["grid"] == "full"
    given = grid_values({**defaults(), "grid": "quick", "dataset": ["msu5"], "attack": "ifgsm"}, on_cuda=False)
    assert (given["grid"], given["attack"], given["max_images"], given["image_size"]) == ("quick", "ifgsm", None, None)
    sized = grid_values({**defaults(), "max_images": 2, "image_size": 128}, on_cuda=False)
    assert (sized["grid"], sized["max_images"], sized["image_size"]) == ("quick", 2, 128)


def test_the_quick_grid_caps_queries_and_training_steps_and_says_so():
    import torch

    from iqa_robustness.runner.config import SuiteConfig

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    quick = SuiteConfig(grid="quick")
    queries, rule = quick.query_limit(10_000, cpu)
    assert queries == QUICK_MAX_QUERIES < CPU_MAX_QUERIES
    assert "quick grid" in rule
    assert quick.query_limit(10_000, cuda)[0] == QUICK_MAX_QUERIES  # asked for on a GPU: still quick
    assert quick.uap_training_steps(cpu) == (None, QUICK_UAP_MAX_STEPS)
    assert SuiteConfig(grid="quick", queries=7).query_limit(10_000, cpu)[0] == 7


# -- the plugin as a guest ----------------------------------------------------------------------------------------
OWN_CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="the project's own device")
    parser.addoption("--seed", type=int, default=7, help="the project's own seed")
    parser.addoption("--metric", default="accuracy", help="the project's own metric")
"""
OWN_TEST = """
def test_the_project_sees_its_own_options(pytestconfig):
    assert pytestconfig.getoption("--device") == "{device}"
    assert pytestconfig.getoption("--seed") == {seed}
    assert pytestconfig.getoption("--metric") == "{metric}"
"""
# loaded during collection, after the command line is parsed: it may declare a short name the suite read
LATE_CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--max-images", default="the project's own", help="declared late")


def pytest_configure(config):
    config.addinivalue_line("markers", "late: a marker of the late conftest")
"""
LATE_TEST = """
def test_a_late_conftest_keeps_its_default(pytestconfig):
    assert pytestconfig.getoption("--max-images") == "the project's own"
"""


def own_project(root: Path, device: str, seed: int, metric: str) -> Path:
    """A project with its own ``--device``, ``--seed``, ``--metric`` and a sub-folder conftest loaded late."""
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "conftest.py").write_text(OWN_CONFTEST)
    (root / "test_own.py").write_text(OWN_TEST.format(device=device, seed=seed, metric=metric))
    (root / "more").mkdir()  # not named test*: pytest loads its conftest only when it collects the folder
    (root / "more" / "conftest.py").write_text(LATE_CONFTEST)
    (root / "more" / "test_late.py").write_text(LATE_TEST)
    return root


def test_a_project_whose_conftest_declares_device_seed_and_metric_runs_with_the_plugin_installed(tmp_path, torch_home):
    project = own_project(tmp_path / "project", device="cuda:1", seed=3, metric="psnr")

    own = pytest_in(project, torch_home, "-q", "--device", "cuda:1", "--seed", "3", "--metric", "psnr")

    assert own.returncode == 0, own.stdout + own.stderr
    assert "2 passed" in own.stdout
    assert "conflicting option" not in own.stdout + own.stderr


def test_a_project_that_turns_xdist_off_runs_with_the_plugin_installed(tmp_path, torch_home):
    project = own_project(tmp_path / "project", device="cpu", seed=7, metric="accuracy")

    own = pytest_in(project, torch_home, "-q", "-p", "no:xdist")

    assert own.returncode == 0, own.stdout + own.stderr
    assert "2 passed" in own.stdout


def test_the_suite_runs_in_that_project_with_the_prefixed_names(tmp_path, torch_home):
    project = own_project(tmp_path / "project", device="cuda:1", seed=3, metric="psnr")
    results = tmp_path / "results"

    proc = pytest_in(
        project,
        torch_home,
        *("-q", ".", "--pyargs", "iqa_robustness.robustness_tests"),
        *("--device", "cuda:1", "--seed", "3", "--metric", "psnr"),  # the project's
        *("--iqa-metric", "cnniqa-live", "--iqa-attack", "fgsm", "--iqa-device", "cpu", "--iqa-seed", "5"),
        *("--iqa-random-weights", "--iqa-image-size", "64", "--iqa-no-mlflow", "--iqa-results-dir", str(results)),
        "--max-images",  # nobody declared it when the command line was read: the suite's (the late conftest's later)
        "2",
    )

    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "3 passed" in proc.stdout  # the project's two tests and the suite's one case
    (record,) = (results / "sessions").glob("*.json")
    session = json.loads(record.read_text())["settings"]
    assert [session[k] for k in ("metric", "seed", "device", "max_images")] == ["cnniqa-live", 5, "cpu", 2]
    (case,) = (results / "cases").glob("*/fgsm-cnniqa-live-sample.json")
    params = json.loads(case.read_text())["params"]
    assert (params["device"], params["max_images"], params["image_size"]) == ("cpu", 2, 64)
    assert "--device belongs to another plugin or conftest.py of this run; the suite's is --iqa-device" in output


def test_the_short_names_still_run_the_suite_where_they_are_free(tmp_path, torch_home):
    args = ("--metric", "niqe", "--attack", "fgsm,uap", "--amplitude", "0.8", "--max-images=3", "--collect-only", "-q")
    proc = pytest_in(tmp_path, torch_home, "--pyargs", "iqa_robustness.robustness_tests", *args)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    cases = sorted(line.split("[")[-1].rstrip("]") for line in proc.stdout.splitlines() if "::" in line)
    assert cases == ["fgsm-niqe-sample", "uap-niqe-sample-on-sample-amp0.8"]


def test_a_bad_value_is_a_usage_error_that_says_what_to_give(tmp_path, torch_home):
    proc = pytest_in(tmp_path, torch_home, "--pyargs", "iqa_robustness.robustness_tests", "--batch-size", "0", "--co")

    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "--iqa-batch-size: give a positive number of images per batch or 'auto', got '0'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_pytest_help_lists_every_option_in_one_group(tmp_path, torch_home):
    proc = pytest_in(tmp_path, torch_home, "--help")

    assert proc.returncode == 0, proc.stderr
    group = proc.stdout.split("adversarial robustness grid (iqa-robustness)", 1)[1]
    for o in OPTIONS:
        assert o.flag in group, o.flag
    assert "--metric" not in proc.stdout.replace("--iqa-metric", "")


def test_the_main_job_on_a_cpu_runs_every_case_of_the_full_grid_on_fewer_smaller_images(tmp_path, torch_home):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the main job's quick grid is the CPU's default; this machine has a GPU")
    quick = pytest_in(REPO_ROOT, torch_home, "--collect-only", "-q")
    full = pytest_in(REPO_ROOT, torch_home, "--collect-only", "-q", "--iqa-grid", "full")

    def cases(proc: subprocess.CompletedProcess) -> list[str]:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [line.split("[")[-1].rstrip("]") for line in proc.stdout.splitlines() if "::" in line]

    attacks = [spec.cls for spec in grid_attacks("all")]  # every attack but certify, which --iqa-certify adds
    universal = sum(cls.universal for cls in attacks)
    per_metric = len(attacks) - universal + universal * len(AMPLITUDES)
    assert cases(quick) == cases(full)
    assert len(cases(full)) == len(DEFAULT_METRICS.split(",")) * per_metric  # 104 with 16 attacks, 5 universal


def test_a_case_of_the_quick_grid_records_its_grid_and_caps_and_prints_a_progress_line(
    tmp_path, torch_home, pyiqa_weights
):
    results = tmp_path / "results"
    args = ("--iqa-grid", "quick", "--iqa-metric", "niqe", "--iqa-attack", "square,uap", "--iqa-amplitude", "0.8")
    proc = pytest_in(
        tmp_path,
        torch_home,
        *("--pyargs", "iqa_robustness.robustness_tests", *args, "--iqa-no-mlflow", "--iqa-results-dir", str(results)),
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    params = {}
    for path in (results / "cases").glob("*/*.json"):
        case = json.loads(path.read_text())
        params[case["attack"]] = case["params"]
    assert set(params) == {"square", "uap"}
    for p in params.values():
        assert (p["suite_grid"], p["max_images"], p["image_size"]) == ("quick", QUICK_MAX_IMAGES, QUICK_IMAGE_SIZE)
    assert params["square"]["queries"] == QUICK_MAX_QUERIES
    assert params["square"]["query_limit"].startswith(f"auto: capped at {QUICK_MAX_QUERIES} on the quick grid")
    assert params["uap"]["train_steps"] <= QUICK_UAP_MAX_STEPS
    assert "[iqa-robustness] the quick grid: every attack on the first 4 sample images at 256 px" in proc.stdout
    assert "[iqa-robustness] case 2/2 ended: " in proc.stdout


def test_a_line_per_case_says_how_many_are_done_and_how_long_is_left():
    from iqa_robustness.plugin.progress import CaseProgress

    now = [100.0]
    lines: list[str] = []
    progress = CaseProgress(lines.append, clock=lambda: now[0])
    progress.begin(4, ["the quick grid"])
    for case, seconds in (("fgsm-niqe-sample", 10), ("ifgsm-niqe-sample", 30)):
        progress.started(case)
        now[0] += seconds
        progress.ended(case)

    assert lines[0] == "[iqa-robustness] the quick grid"
    assert lines[1] == "[iqa-robustness] 4 case(s) to run; a line as each ends"
    assert lines[2] == "[iqa-robustness] case 1/4 ended: fgsm-niqe-sample in 10 s; elapsed 10 s, about 30 s left"
    assert lines[3] == "[iqa-robustness] case 2/4 ended: ifgsm-niqe-sample in 30 s; elapsed 40 s, about 40 s left"
