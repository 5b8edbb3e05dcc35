"""Bring your own metric: ``module:Name`` targets, entry points, pyiqa names and wrapped ``nn.Module``s.

Every test registers real metrics: modules written to a temporary folder and imported, a real
distribution (``*.dist-info`` with ``entry_points.txt``, as pip writes it) on ``sys.path``, pyiqa's
own configuration. ``restored_metric_registry`` puts the registry back afterwards.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from iqa_robustness.metrics import (
    Metric,
    MetricSpec,
    MetricTargetError,
    ModuleMetric,
    UnknownMetricError,
    create_metric,
    from_module,
    get_spec,
    list_metrics,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
_unique = itertools.count()

SHARPNESS = """
import torch
from iqa_robustness.metrics import Metric, MetricSpec


class Sharpness(Metric):
    spec = MetricSpec(name="{name}", bounds=(0.0, 1.0), description="mean absolute gradient")

    def score(self, x):
        gray = x.mean(dim=1)
        return (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean(dim=(1, 2))


class Built(Metric):
    spec = MetricSpec(name="{name}-built", bounds=(0.0, 1.0))

    def __init__(self, device=None, weights_dir=None, random=False):
        super().__init__()
        self.seen = {{"device": device, "weights_dir": weights_dir, "random": random}}

    def score(self, x):
        return x.mean(dim=(1, 2, 3))


class NoSpec(Metric):
    def score(self, x):
        return x.mean(dim=(1, 2, 3))


def make_sharpness():
    return Sharpness()


def not_a_metric():
    return 42


MEAN = 0.5
"""


@pytest.fixture
def own_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_metric_registry) -> str:
    """A module defining metrics, written to the current folder; returns its (unique) module name."""
    name = f"own_metric_{os.getpid()}_{next(_unique)}"
    (tmp_path / f"{name}.py").write_text(SHARPNESS.format(name=name.replace("_", "-")))
    monkeypatch.chdir(tmp_path)
    return name


def metric_name(module: str) -> str:
    return module.replace("_", "-")


def images(n: int = 2, side: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0))


# -- module:Name -------------------------------------------------------------------------------
def test_a_module_name_target_registers_under_its_spec_name_and_remembers_where_it_came_from(own_module):
    target = f"{own_module}:Sharpness"

    assert list_metrics(target) == [metric_name(own_module)]
    spec = get_spec(metric_name(own_module))
    assert spec.source == f"module:{target}"
    assert spec.description == "mean absolute gradient"
    assert get_spec(target) is spec


def test_a_module_name_metric_builds_frozen_and_scores_one_value_per_image(own_module):
    model = create_metric(f"{own_module}:Sharpness")

    scores = model(images(3))
    assert scores.shape == (3,)
    assert model.name == metric_name(own_module)
    assert model.spec.source.startswith("module:")
    assert not model.training


def test_a_constructor_gets_the_build_arguments_it_declares(own_module, tmp_path):
    model = create_metric(f"{own_module}:Built", weights="random")
    assert model.seen == {"device": torch.device("cpu"), "weights_dir": None, "random": True}
    model = create_metric(f"{own_module}:Built", weights=tmp_path)
    assert model.seen["weights_dir"] == tmp_path


def test_a_function_returning_a_metric_is_a_target(own_module):
    assert list_metrics(f"{own_module}:make_sharpness") == [metric_name(own_module)]
    assert create_metric(metric_name(own_module))(images()).shape == (2,)


def test_a_module_in_the_current_folder_is_found_when_the_folder_is_not_on_sys_path(own_module, tmp_path):
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != str(tmp_path)]

    list_metrics(f"{own_module}:Sharpness")
    assert str(tmp_path) in sys.path


def test_a_missing_module_says_where_it_was_looked_for(own_module, tmp_path):
    with pytest.raises(MetricTargetError, match=r"no module 'no_such_module' in the current folder") as err:
        list_metrics("no_such_module:Metric")
    assert str(tmp_path) in str(err.value)
    assert "PYTHONPATH" in str(err.value)


def test_a_missing_attribute_gets_a_suggestion_and_the_metrics_the_module_defines(own_module):
    with pytest.raises(MetricTargetError, match=rf"did you mean {own_module}:Sharpness\?") as err:
        list_metrics(f"{own_module}:Sharpnes")
    assert "It defines Built, NoSpec, Sharpness." in str(err.value)


def test_a_metric_class_without_a_spec_is_refused_with_the_fix(own_module):
    with pytest.raises(MetricTargetError, match=r"without a spec; declare its facts as a class attribute `spec ="):
        list_metrics(f"{own_module}:NoSpec")


@pytest.mark.parametrize(
    ("attribute", "message"),
    [("MEAN", r"\(float 0.5\) is not a metric"), ("not_a_metric", r"returned int 42, not a Metric")],
)
def test_something_that_is_not_a_metric_is_refused_with_what_it_is(own_module, attribute, message):
    with pytest.raises(MetricTargetError, match=message):
        list_metrics(f"{own_module}:{attribute}")


def test_target_errors_are_value_errors_so_the_plugin_turns_them_into_usage_errors(own_module):
    with pytest.raises(ValueError, match="no module"):
        get_spec("no_such_module:Metric")


def test_an_unknown_plain_name_still_gets_a_did_you_mean_and_the_accepted_forms():
    with pytest.raises(UnknownMetricError, match=r"did you mean 'brisque'.*module:Name"):
        get_spec("brisqe")


def test_a_metric_name_that_cannot_name_files_is_refused(restored_metric_registry):
    from iqa_robustness.metrics import register_metric

    with pytest.raises(ValueError, match="cannot name cases and files"):
        register_metric(MetricSpec("my metric/v2"), lambda *args: None)


def test_a_mixed_case_spec_name_is_registered_in_lower_case(restored_metric_registry):
    from iqa_robustness.metrics import register_metric

    register_metric(MetricSpec("MyMetric"), lambda *args: None)
    assert get_spec("mymetric").name == "mymetric"


def test_list_metrics_refuses_a_fact_metric_specs_do_not_have():
    with pytest.raises(TypeError, match="MetricSpec has no fact 'lower_is_better'"):
        list_metrics(lower_is_better=True)


# -- nn.Module wrapper ---------------------------------------------------------------------------
class MeanBrightness(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def test_from_module_wraps_a_plain_module_with_the_facts_given():
    model = from_module(MeanBrightness(), name="brightness", bounds=(0, 1), lower_better=True, min_side=8)

    assert isinstance(model, ModuleMetric)
    assert model.spec.bounds == (0.0, 1.0)
    assert model.spec.lower_better
    assert model.spec.min_side == 8
    assert model.spec.source.endswith("MeanBrightness")
    batch = images()
    assert torch.allclose(model(batch), batch.mean(dim=(1, 2, 3)))
    assert torch.allclose(model.quality(batch), -batch.mean(dim=(1, 2, 3)))


def test_a_wrapped_module_passes_the_input_gradient_through():
    model = from_module(MeanBrightness(), name="brightness", bounds=(0, 1))
    x = images().requires_grad_(True)

    (grad,) = torch.autograd.grad(model.loss(x).sum(), x)
    assert torch.all(grad < 0)  # brighter is better: the loss falls as pixels rise


def test_from_module_with_register_is_found_by_name(restored_metric_registry):
    from_module(MeanBrightness(), name="brightness-registered", bounds=(0, 1), register=True)

    model = create_metric("brightness-registered")
    assert model(images(4)).shape == (4,)


def test_a_module_returning_the_wrong_shape_is_reported_with_the_expected_one():
    model = from_module(nn.Identity(), name="identity", bounds=(0, 1))

    with pytest.raises(ValueError, match=r"must map \(N, 3, H, W\) to \(N,\) scores"):
        model(images())


def test_from_module_refuses_bounds_that_give_no_range():
    with pytest.raises(ValueError, match="high > low"):
        from_module(MeanBrightness(), name="flat", bounds=(1, 1))


def test_a_wrapped_module_in_a_file_is_a_module_name_target(tmp_path, monkeypatch, restored_metric_registry):
    name = f"wrapped_{os.getpid()}_{next(_unique)}"
    code = """
        from torch import nn
        from iqa_robustness.metrics import from_module

        NET = from_module(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1), nn.Flatten(0)),
                          name="wrapped-net", bounds=(-1.0, 1.0))
    """
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.chdir(tmp_path)

    assert list_metrics(f"{name}:NET") == ["wrapped-net"]
    assert get_spec("wrapped-net").source == f"module:{name}:NET"
    assert create_metric("wrapped-net")(images(3)).shape == (3,)


def test_a_metric_subclass_without_a_spec_cannot_be_built():
    class Bare(Metric):
        def score(self, x):
            return x.mean(dim=(1, 2, 3))

    with pytest.raises(TypeError, match="declare a class attribute `spec = MetricSpec"):
        Bare()


# -- entry points ------------------------------------------------------------------------------
ENTRY_POINT_PACKAGE = {
    "tinyep/__init__.py": "",
    "tinyep/metric.py": """
        from iqa_robustness.metrics import Metric, MetricSpec

        class Contrast(Metric):
            spec = MetricSpec(name="tiny-contrast", bounds=(0.0, 1.0))

            def score(self, x):
                return x.std(dim=(1, 2, 3))
    """,
    "tinyep/registering.py": """
        from iqa_robustness.metrics import Metric, MetricSpec, metric

        SPEC = MetricSpec(name="tiny-registered", bounds=(0.0, 1.0), lower_better=True)

        class Dark(Metric):
            def score(self, x):
                return x.mean(dim=(1, 2, 3))

        @metric(SPEC)
        def build(spec, device, weights_dir, random):
            return Dark(spec)
    """,
    "tinyep/empty.py": "",
    "tinyep-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinyep\nVersion: 0.1\n",
    "tinyep-0.1.dist-info/entry_points.txt": """
        [iqa_robustness.metrics]
        tiny-contrast = tinyep.metric:Contrast
        tiny-alias = tinyep.metric:Contrast
        tiny-registered = tinyep.registering
        tiny-empty = tinyep.empty
        tiny-broken = tinyep.absent:Nothing
    """,
}


@pytest.fixture
def entry_point_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_metric_registry) -> Path:
    """A folder holding an installed distribution ``tinyep`` that declares metrics as entry points."""
    site = tmp_path / "site"
    for rel, text in ENTRY_POINT_PACKAGE.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(site))
    for module in [m for m in sys.modules if m == "tinyep" or m.startswith("tinyep.")]:
        monkeypatch.delitem(sys.modules, module)
    # entry points are read once per process: start again, as a process that installed tinyep before starting
    from iqa_robustness.metrics import _targets

    monkeypatch.setattr(_targets, "_loaded_entry_points", set())
    monkeypatch.setattr(_targets, "_all_entry_points_loaded", False)
    return site


def test_an_entry_point_metric_is_loaded_when_its_name_is_asked_for(entry_point_site):
    spec = get_spec("tiny-contrast")

    assert spec.source == "entry-point:tinyep.metric:Contrast"
    assert create_metric("tiny-contrast")(images()).shape == (2,)
    assert "tinyep.registering" not in sys.modules, "an unknown name loads its own entry point only"


def test_an_entry_point_named_differently_from_its_spec_finds_the_spec_name(entry_point_site):
    assert list_metrics("tiny-alias") == ["tiny-contrast"]


def test_an_entry_point_module_registers_its_metrics_on_import(entry_point_site):
    assert get_spec("tiny-registered").lower_better
    assert create_metric("tiny-registered")(images()).shape == (2,)


def test_an_entry_point_module_that_registers_nothing_by_its_name_says_so(entry_point_site):
    with pytest.raises(MetricTargetError, match=r"registered no metric named 'tiny-empty'"):
        get_spec("tiny-empty")


def test_a_broken_entry_point_names_itself(entry_point_site):
    with pytest.raises(MetricTargetError, match=r"entry point tiny-broken = 'tinyep.absent:Nothing'.*cannot be loaded"):
        get_spec("tiny-broken")


def test_listing_everything_loads_every_entry_point_and_skips_a_broken_one(entry_point_site, caplog):
    with caplog.at_level(logging.WARNING):
        names = list_metrics()

    assert {"tiny-contrast", "tiny-registered"} <= set(names)
    assert "tiny-*" not in names
    assert list_metrics("tiny-*") == ["tiny-contrast", "tiny-registered"]
    assert "tiny-broken" in caplog.text


def test_a_typo_of_an_entry_point_name_is_suggested(entry_point_site):
    with pytest.raises(UnknownMetricError, match="did you mean 'tiny-contrast'"):
        get_spec("tiny-contrat")


def test_importing_the_package_and_the_plugin_loads_no_entry_point_and_a_typo_imports_no_pyiqa(entry_point_site):
    code = textwrap.dedent(
        """
        import sys
        import iqa_robustness.metrics, iqa_robustness.plugin
        from iqa_robustness.metrics import get_spec, list_metrics
        print("after import:", "tinyep" in sys.modules)
        try:
            get_spec("niqee")
        except ValueError as exc:
            print("typo:", "did you mean 'niqe'" in str(exc), "pyiqa" in sys.modules)
        print("after listing:", "tiny-contrast" in list_metrics(), "tinyep.metric" in sys.modules)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(entry_point_site)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180, check=True
    )
    assert out.stdout.split("\n")[:3] == ["after import: False", "typo: True False", "after listing: True True"]


# -- pyiqa names -------------------------------------------------------------------------------
def test_a_pyiqa_metric_without_a_table_line_gets_pyiqa_facts_the_adapter_and_a_warning(
    restored_metric_registry, pyiqa_weights, caplog
):
    from iqa_robustness.metrics import registry
    from iqa_robustness.metrics.pyiqa_metrics import PyiqaMetric

    batch = images(1, side=128)
    from_table = create_metric("brisque")(batch)
    registry._METRICS.unregister("brisque")  # as if the table had no line for it

    with caplog.at_level(logging.WARNING, logger="iqa_robustness.metrics"):
        spec = get_spec("BRISQUE")
    assert spec.lower_better
    assert spec.bounds == (0.0, 150.0)  # pyiqa: '~0, ~150'
    assert spec.source == "pyiqa"
    assert "minimum input side and differentiability are unchecked" in caplog.text
    model = create_metric("brisque")
    assert isinstance(model, PyiqaMetric)
    assert torch.allclose(model(batch), from_table)


@pytest.mark.pyiqa
def test_pyiqa_configs_read_without_importing_pyiqa_are_pyiqa_s_own(monkeypatch):
    import pyiqa.default_model_configs as imported

    from iqa_robustness.metrics.pyiqa_names import _pyiqa_default_configs

    monkeypatch.delitem(sys.modules, "pyiqa.default_model_configs")  # as before pyiqa is imported
    read_alone = _pyiqa_default_configs.__wrapped__()
    assert read_alone == dict(imported.DEFAULT_CONFIGS)
    assert "pyiqa.default_model_configs" not in sys.modules


def test_a_full_reference_pyiqa_name_is_a_full_reference_metric():
    assert get_spec("lpips").kind == "fr"
    assert get_spec("LPIPS-vgg").is_full_reference


@pytest.mark.pyiqa
def test_a_pyiqa_metric_left_out_of_the_table_is_refused_with_the_reason():
    with pytest.raises(MetricTargetError, match="open score range"):
        get_spec("dmm")


@pytest.mark.pyiqa
def test_a_pyiqa_metric_that_scores_image_sets_is_refused_with_the_reason():
    with pytest.raises(MetricTargetError, match="scores a set of images"):
        get_spec("fid")


@pytest.mark.pyiqa
def test_a_pyiqa_metric_with_an_open_range_is_refused_until_the_table_states_one(restored_metric_registry):
    from iqa_robustness.metrics import registry

    registry._METRICS.unregister("pi")  # pyiqa: '~0, ~'
    with pytest.raises(MetricTargetError, match=r"no closed score range for pi"):
        get_spec("pi")


# -- the pytest plugin -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_module_name_metric_runs_in_xdist_workers_under_its_spec_name(tmp_path, torch_home):
    module = f"xdist_metric_{next(_unique)}"
    (tmp_path / f"{module}.py").write_text(SHARPNESS.format(name="sharpness"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(HF_HUB_OFFLINE="1", TORCH_HOME=str(torch_home), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "pytest", "--pyargs", "iqa_robustness.robustness_tests", "-p", "no:cacheprovider"]
    command += ["--metric", f"{module}:Sharpness", "--attack", "fgsm,ifgsm", "--max-images", "2"]
    command += ["--image-size", "48", "--no-mlflow", "-n", "2"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 workers [2 items]" in proc.stdout
    per_image = sorted(p.name for p in (tmp_path / "results" / "per_image").glob("*.csv"))
    assert per_image == ["fgsm_sharpness_test.csv", "ifgsm_sharpness_test.csv"]
    with (tmp_path / "results" / "summary.csv").open() as fh:
        assert {row["case_id"] for row in csv.DictReader(fh)} >= {"fgsm-sharpness-sample", "ifgsm-sharpness-sample"}


def test_a_module_name_that_does_not_import_stops_the_run_with_one_line(tmp_path, torch_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(HF_HUB_OFFLINE="1", TORCH_HOME=str(torch_home))
    command = [sys.executable, "-m", "pytest", "--pyargs", "iqa_robustness.robustness_tests", "--collect-only"]
    proc = subprocess.run(
        [*command, "--metric", "nowhere:Metric"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )

    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "no module 'nowhere' in the current folder" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_target_that_replaces_a_different_metric_of_the_same_name_is_logged(own_module, caplog):
    list_metrics(f"{own_module}:Sharpness")
    with caplog.at_level(logging.WARNING, logger="iqa_robustness.metrics"):
        list_metrics(f"{own_module}:make_sharpness")  # the same metric by another route: no warning
        assert "replaces" not in caplog.text
        from_module(nn.Identity(), name=metric_name(own_module), bounds=(0, 2), register=True)
    assert f"replaces the registered {metric_name(own_module)}" in caplog.text
