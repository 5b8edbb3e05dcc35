"""The project as a user gets it: a wheel installed into a fresh virtual environment, used from an empty folder.

The wheel is built from a copy of the checkout's files (``pip wheel --no-deps --no-build-isolation``,
with the running environment's setuptools), so the build leaves nothing in the checkout. A new
environment sees dependencies already installed here (torch, mlflow, pytest, ...) through one
``.pth`` file naming a folder of links to the running interpreter's site-packages entries, leaving
out every ``iqa_robustness`` distribution, editable finder and ``.pth`` file, so the checkout's
editable install cannot leak in: ``iqa_robustness`` imports from the new site-packages or not at all.

Two environments: ``installed`` sees everything installed here (with pyiqa, as the README's
``[pyiqa]`` extra installs it); ``installed_core`` sees only the distributions the wheel's core
requirements pull in, transitively (no extra: no pyiqa and nothing only pyiqa needs), so a core
module that imports an undeclared dependency fails there. The example metric and its entry-point
package are the README's own.
"""

from __future__ import annotations

import csv
import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import readme_example
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
#: entries of the running site-packages the new environment must not see
_LEFT_OUT_PREFIXES = ("iqa_robustness", "iqa-robustness", "__editable__", "__pycache__")
_LEFT_OUT_SUFFIXES = (".pth", ".egg-link")
#: the folder names the project had before everything moved under ``iqa_robustness``
OLD_TOP_LEVEL_NAMES = ("metrics", "benchmark", "attacks", "robustness_tests")

# One worker builds the environment once for all tests here (the plugin turns -n into loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("install")]


@dataclass(frozen=True)
class Installed:
    """A fresh environment with the project's wheel installed."""

    root: Path
    wheel: Path
    python: Path
    site_packages: Path
    env: dict[str, str]
    images: Path

    def run(self, *args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        """``args`` with the new environment's ``bin`` first on PATH, in ``cwd``; output captured."""
        return subprocess.run(
            [str(a) for a in args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def pytest(self, *args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(self.python, "-m", "pytest", *args, cwd=cwd, timeout=timeout)

    def empty_folder(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir()
        return folder


def _check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def copy_checkout(target: Path) -> Path:
    """The checkout's files (tracked, and new ones git does not ignore) copied to ``target``."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the install test copies the files git tracks, and {REPO_ROOT} is no git checkout ({exc})")
    for rel in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / rel
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel)
    return target


def link_dependencies(folder: Path, only: set[str] | None = None) -> Path:
    """A folder of links to the running interpreter's installed packages, without this project's.

    Args:
        folder: where the links go.
        only: link only the files of these distributions (names as :func:`core_distributions` gives them).
    """
    folder.mkdir()
    allowed = None if only is None else {top for name in only for top in _top_level_entries(name)}
    site_dirs = [Path(p) for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages")]
    for site_dir in filter(Path.is_dir, site_dirs):
        for entry in site_dir.iterdir():
            name = entry.name
            if name.startswith(_LEFT_OUT_PREFIXES) or name.endswith(_LEFT_OUT_SUFFIXES):
                continue
            if allowed is not None and name not in allowed:
                continue
            if not (folder / name).exists():  # the first on sys.path wins, as on import
                (folder / name).symlink_to(entry)
    return folder


def core_distributions(wheel: Path) -> set[str]:
    """The distributions the wheel's requirements without extras pull in, transitively, as installed here."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    todo = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    found: set[str] = set()
    while todo:
        requirement = Requirement(todo.pop())
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        found.add(name)
        todo.extend(importlib.metadata.distribution(name).requires or ())
    return found


def _top_level_entries(distribution: str) -> set[str]:
    """The site-packages entries (package folders, modules, ``.dist-info``) a distribution installed."""
    files = importlib.metadata.distribution(distribution).files or ()
    return {f.parts[0] for f in files if f.parts and f.parts[0] != ".."}


def write_images(folder: Path, n: int = 3, side: int = 64) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, side)[None, :, None] * np.ones((side, 1, 3))
    for i in range(n):
        pixels = np.clip(ramp * (i + 1) / n + rng.normal(0, 20, (side, side, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"image{i}.png")
    return folder


def site_packages_files(site_packages: Path) -> set[str]:
    """Every path under site-packages but Python's own bytecode caches."""
    return {str(p.relative_to(site_packages)) for p in site_packages.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = copy_checkout(root / "source")
    dist = root / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    _check(subprocess.run([*build, "-w", str(dist), str(source)], capture_output=True, text=True, timeout=300))
    (built,) = dist.glob("iqa_robustness-*.whl")
    return built


def install(root: Path, wheel: Path, dependencies: Path, torch_home: Path) -> Installed:
    """A new environment in ``root`` that sees ``dependencies`` and has the wheel installed (not editable)."""
    venv = root / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True))
    (site_packages,) = (venv / "lib").glob("python*/site-packages")
    (site_packages / "_dependencies.pth").write_text(f"{dependencies}\n")

    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(torch_home),
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    python = venv / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--no-deps", "-q", wheel]
    _check(subprocess.run(pip, env=env, capture_output=True, text=True, timeout=300))
    return Installed(root, wheel, python, site_packages, env, write_images(root / "images"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path, torch_home: Path) -> Installed:
    """The wheel in an environment that sees everything installed here (pyiqa too, where it is)."""
    root = tmp_path_factory.mktemp("install")
    return install(root, wheel, link_dependencies(root / "dependencies"), torch_home)


@pytest.fixture(scope="module")
def installed_core(tmp_path_factory: pytest.TempPathFactory, wheel: Path, torch_home: Path) -> Installed:
    """The wheel in an environment that sees only what its core requirements pull in: no pyiqa."""
    root = tmp_path_factory.mktemp("install-core")
    only = core_distributions(wheel) | {"pip"}  # pip installs the wheel
    return install(root, wheel, link_dependencies(root / "dependencies", only=only), torch_home)


def test_the_wheel_holds_one_package_and_ships_the_pytest_plugin(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()

    assert {name.split("/")[0] for name in names} == {
        "iqa_robustness",
        installed.wheel.name.split("-py3")[0] + ".dist-info",
    }
    assert "iqa_robustness/robustness_tests/test_robustness.py" in names
    assert "[pytest11]\niqa_robustness = iqa_robustness.plugin" in entry_points


def test_every_package_folder_of_the_checkout_is_in_the_wheel(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        packaged = {n for n in wheel.namelist() if n.endswith("/__init__.py")}
    roots = {"iqa_robustness": "iqa_robustness", "attacks": "iqa_robustness/attacks"}
    roots |= {"metrics": "iqa_robustness/metrics", "robustness_tests": "iqa_robustness/robustness_tests"}
    for folder, package in roots.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(REPO_ROOT / folder).as_posix()
            assert f"{package}/{rel}" in packaged, f"{folder}/{rel} is not in the wheel: list it in pyproject.toml"


def test_the_package_imports_from_the_new_environment_and_the_checkout_does_not_leak_in(installed):
    code = textwrap.dedent(
        """
        import importlib.metadata, iqa_robustness.metrics, iqa_robustness.plugin, iqa_robustness.robustness_tests
        for module in (iqa_robustness, iqa_robustness.metrics, iqa_robustness.plugin, iqa_robustness.robustness_tests):
            print(module.__file__)
        print(*[d.locate_file("") for d in importlib.metadata.distributions() if d.name == "iqa-robustness"])
        """
    )
    out = _check(installed.run(installed.python, "-c", code, cwd=installed.empty_folder("imports"))).stdout.split()

    assert len(out) == 5
    for path in out:
        assert Path(path).is_relative_to(installed.site_packages), f"{path} is not in the new environment"
    assert str(REPO_ROOT) not in " ".join(out)


def test_the_benchmarks_attack_presets_ship_in_the_wheel_and_load_from_it(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        assert "iqa_robustness/attacks/picked_presets_v1.csv" in wheel.namelist()
    code = "from iqa_robustness.attacks import attack_class; print(attack_class('patch-rs').presets.value(16 / 255))"
    proc = _check(installed.run(installed.python, "-c", code, cwd=installed.empty_folder("presets")))
    assert proc.stdout.split() == ["625"]


def test_the_robustness_card_schema_ships_in_the_wheel_and_the_core_checks_cards_against_it(installed_core):
    with zipfile.ZipFile(installed_core.wheel) as wheel:
        assert "iqa_robustness/schemas/robustness-card-1.json" in wheel.namelist()
    code = (
        "from iqa_robustness.report.card import CardError, validate_card, card_schema\n"
        "print(card_schema()['$id'])\n"
        "try:\n    validate_card({'schema': 'robustness-card'}, 'x')\nexcept CardError as exc:\n    print(exc)"
    )
    proc = _check(installed_core.run(installed_core.python, "-c", code, cwd=installed_core.empty_folder("card")))
    schema_id, error = proc.stdout.splitlines()
    assert schema_id == "urn:iqa-robustness:robustness-card:1"
    assert error.startswith("x is not a valid robustness-card-1: at (the top level): ")


@pytest.mark.parametrize("name", OLD_TOP_LEVEL_NAMES)
def test_the_old_top_level_names_do_not_import(installed, name):
    proc = installed.run(installed.python, "-c", f"import {name}", cwd=installed.empty_folder(f"old-{name}"))

    assert proc.returncode == 1
    assert f"No module named '{name}'" in proc.stderr


def test_a_module_metric_runs_the_grid_from_an_empty_folder_and_writes_only_there(installed):
    folder = installed.empty_folder("own-metric")
    readme_example.write(folder, "sharpness.py")
    before = site_packages_files(installed.site_packages)

    proc = installed.pytest(
        *("--pyargs", "iqa_robustness.robustness_tests", "--metric", "sharpness:Sharpness", "--attack", "ifgsm,uap"),
        *("--dataset", installed.images, "--train-dataset", installed.images, "--uap-steps", "3", "--image-size", "64"),
        cwd=folder,
    )

    _check(proc)
    assert "4 passed" in proc.stdout
    per_image = folder / "results" / "per_image"
    assert sorted(p.name for p in per_image.glob("*.csv")) == ["ifgsm_sharpness_test.csv", "uap_sharpness_test.csv"]
    with (per_image / "ifgsm_sharpness_test.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3
    assert (folder / "mlflow.db").is_file()
    assert site_packages_files(installed.site_packages) == before, "the run wrote into site-packages"


@pytest.mark.pyiqa
def test_the_short_form_collects_the_grid_and_nothing_else(installed):
    proc = installed.pytest(
        *("--pyargs", "iqa_robustness", "--collect-only", "-q", "--metric", "niqe", "--attack", "fgsm,uap"),
        cwd=installed.empty_folder("short-form"),
    )

    collected = [line for line in _check(proc).stdout.splitlines() if "::" in line]
    grid = "robustness_tests/test_robustness.py::"
    assert sorted(collected) == [
        f"{grid}test_image_specific_attack[fgsm-niqe-sample]",
        *(f"{grid}test_universal_attack[uap-niqe-sample-on-sample-amp{amp}]" for amp in ("0.2", "0.4", "0.8")),
    ]


def test_an_installed_entry_point_metric_is_selected_by_name(installed):
    package = installed.empty_folder("sharpness-package")
    readme_example.write(package, "pyproject.toml", "sharpness.py")
    pip = readme_example.command("pip install")
    _check(installed.run(installed.python, "-m", *pip, "--no-deps", "--no-build-isolation", "-q", cwd=package))
    folder = installed.empty_folder("entry-point")  # the package's folder is not the current one

    code = textwrap.dedent(
        """
        import sys, iqa_robustness.plugin, iqa_robustness.metrics
        print("imported at start-up:", "sharpness" in sys.modules)
        from iqa_robustness.cli.main import main
        main(["list", "metrics"])  # `iqa-robustness list metrics`
        """
    )
    out = _check(installed.run(installed.python, "-c", code, cwd=folder)).stdout.splitlines()
    assert out[0] == "imported at start-up: False"
    assert "source=entry-point:sharpness:Sharpness" in next(line for line in out if line.startswith("sharpness "))

    command = readme_example.command("--metric sharpness ")
    assert command[:3] == ["pytest", "--pyargs", "iqa_robustness"]
    proc = installed.pytest(
        *command[1:],
        *("--attack", "fgsm", "--dataset", installed.images, "--image-size", "64", "--no-mlflow"),
        cwd=folder,
    )
    _check(proc)
    assert "1 passed" in proc.stdout
    assert (folder / "results" / "per_image" / "fgsm_sharpness_test.csv").is_file()


# -- the core: the wheel without the pyiqa extra --------------------------------------------
def test_the_core_environment_has_neither_pyiqa_nor_what_only_pyiqa_needs(installed_core):
    code = textwrap.dedent(
        """
        import importlib.util
        for name in ("pyiqa", "transformers", "bitsandbytes", "datasets", "yapf", "cv2", "piq", "torchmetrics"):
            print(name, importlib.util.find_spec(name) is not None)
        """
    )
    out = _check(installed_core.run(installed_core.python, "-c", code, cwd=installed_core.empty_folder("core")))

    found = dict(line.split() for line in out.stdout.splitlines())
    assert found == {
        **dict.fromkeys(("pyiqa", "transformers", "bitsandbytes", "datasets", "yapf"), "False"),
        **dict.fromkeys(("cv2", "piq", "torchmetrics"), "True"),
    }


def test_without_pyiqa_a_users_own_metric_a_piq_metric_and_cnniqa_live_run_the_grid(installed_core):
    folder = installed_core.empty_folder("core-grid")
    readme_example.write(folder, "sharpness.py")

    proc = installed_core.pytest(
        *("--pyargs", "iqa_robustness.robustness_tests", "--metric", "sharpness:Sharpness,piq-ssim,cnniqa-live"),
        *("--attack", "ifgsm", "--dataset", installed_core.images, "--image-size", "64", "--random-weights"),
        *("--no-mlflow", "-p", "no:cacheprovider"),
        cwd=folder,
    )

    _check(proc)
    assert "3 passed" in proc.stdout
    per_image = sorted(p.name for p in (folder / "results" / "per_image").glob("*.csv"))
    assert per_image == ["ifgsm_cnniqa-live_test.csv", "ifgsm_piq-ssim_test.csv", "ifgsm_sharpness_test.csv"]


def test_without_pyiqa_a_pyiqa_name_stops_the_session_naming_the_extra_and_list_still_works(installed_core):
    folder = installed_core.empty_folder("core-pyiqa-name")

    proc = installed_core.pytest("--pyargs", "iqa_robustness", "--collect-only", "--metric", "niqe", cwd=folder)
    listed = _check(installed_core.run("iqa-robustness", "list", "metrics", cwd=folder))

    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "metric 'niqe' comes from pyiqa, which is not installed: pip install 'iqa-robustness[pyiqa]'" in proc.stderr
    names = {line.split()[0] for line in listed.stdout.splitlines()}
    assert {"cnniqa-live", "piq-ssim", "tm-psnr"} <= names
    assert "niqe" not in names
    assert "pip install 'iqa-robustness[pyiqa]'" in listed.stderr
