"""The metric registry: facts as data, name look-up with suggestions, filters, cheap registration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from iqa_robustness.metrics import UnknownMetricError, create_metric, get_spec, list_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]

#: pyiqa NR metrics the suite leaves out, and why (see metrics/pyiqa_metrics.py)
NOT_PER_IMAGE = {"fid", "sfid", "fid_dinov2", "inception_score"}  # score image sets
NEEDS_CAPTIONS = {"clipscore"}


def _pyiqa_configs() -> dict:
    default_model_configs = pytest.importorskip("pyiqa.default_model_configs")
    return default_model_configs.DEFAULT_CONFIGS


def _declared_range(text: str) -> tuple[float | None, float | None]:
    """pyiqa's ``score_range`` ('~0, ~100', '0, ~') -> numbers, None for an open end."""
    ends = [end.strip().lstrip("~").strip() for end in text.split(",")]
    return tuple(float(end) if end else None for end in ends)  # type: ignore[return-value]


@pytest.mark.pyiqa
def test_every_pyiqa_no_reference_image_metric_is_registered():
    configs = _pyiqa_configs()
    pyiqa_nr = {name.lower() for name, cfg in configs.items() if cfg["metric_mode"] == "NR"}
    expected = pyiqa_nr - NOT_PER_IMAGE - NEEDS_CAPTIONS
    assert expected - set(list_metrics(source="pyiqa", kind="nr-image")) == set()
    assert set(list_metrics(source="pyiqa", kind="nr-image")) <= pyiqa_nr


@pytest.mark.pyiqa
def test_every_pyiqa_full_reference_metric_is_registered_or_left_out_with_a_reason():
    from iqa_robustness.metrics.pyiqa_metrics import LEFT_OUT

    pyiqa_fr = {name.lower() for name, cfg in _pyiqa_configs().items() if cfg["metric_mode"] == "FR"}
    registered = set(list_metrics(source="pyiqa", kind="fr"))
    assert registered <= pyiqa_fr
    assert pyiqa_fr - registered == pyiqa_fr & set(LEFT_OUT)
    assert {"psnr", "ssim", "ms_ssim", "lpips", "dists", "pieapp", "topiq_fr"} <= registered


@pytest.mark.pyiqa
def test_pyiqa_facts_agree_with_pyiqa_default_configs():
    configs = {name.lower(): cfg for name, cfg in _pyiqa_configs().items()}
    for name in list_metrics(source="pyiqa"):
        spec, cfg = get_spec(name), configs[name]
        assert spec.kind == ("fr" if cfg["metric_mode"] == "FR" else "nr-image"), name
        assert spec.lower_better == bool(cfg.get("lower_better", False)), name
        low, high = _declared_range(cfg["score_range"])
        if low is not None:
            assert spec.bounds[0] == low, name
        if high is not None:
            assert spec.bounds[1] == high, name


def test_every_spec_has_usable_bounds_and_a_description():
    for name in list_metrics():
        spec = get_spec(name)
        assert spec.range > 0, name
        assert spec.description, name


def test_declared_facts_of_well_known_metrics():
    assert get_spec("niqe").lower_better
    assert get_spec("brisque").lower_better
    assert not get_spec("paq2piq").lower_better
    assert get_spec("paq2piq").bounds == (0.0, 100.0)
    assert get_spec("nima").bounds == (0.0, 10.0)
    assert get_spec("niqe").weight_files == ("niqe_modelparameters.mat",)
    assert "DBCNN_scnn-7ea73d75.pth" in get_spec("dbcnn").weight_files
    assert get_spec("maniqa").needs_gpu
    assert get_spec("maniqa").heavy
    assert get_spec("clipiqa").heavy


def test_piqe_is_declared_non_differentiable():
    assert get_spec("piqe").differentiable is False
    assert "piqe" in list_metrics(differentiable=False, uninstalled=True)


def test_names_are_case_insensitive():
    assert get_spec("NIQE") is get_spec("niqe")
    assert get_spec("CLIPIQA+_vitL14_512").name == "clipiqa+_vitl14_512"


def test_a_typo_gets_a_did_you_mean_answer():
    with pytest.raises(UnknownMetricError, match="did you mean 'paq2piq'"):
        get_spec("paq2pic")
    with pytest.raises(UnknownMetricError, match="nima-vgg16-ava"):
        get_spec("nima-vgg16")


def test_create_metric_rejects_an_unknown_name_before_building_anything():
    with pytest.raises(UnknownMetricError, match="unknown metric 'no-such-metric'"):
        create_metric("no-such-metric")


def test_create_metric_rejects_a_weights_folder_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_metric("cnniqa-live", weights=tmp_path / "absent")


@pytest.mark.pyiqa
def test_list_metrics_filters_by_glob_comma_list_and_facts():
    assert list_metrics("nima*") == ["nima", "nima-koniq", "nima-spaq", "nima-vgg16-ava"]
    assert list_metrics("niqe, musiq") == ["musiq", "niqe"]
    assert list_metrics("all") == list_metrics()
    lower_better = list_metrics(source="pyiqa", lower_better=True)
    assert {"niqe", "brisque", "piqe", "ilniqe", "pi"} <= set(lower_better)
    assert "paq2piq" not in lower_better
    assert set(list_metrics("musiq*", source="pyiqa")) == {"musiq", "musiq-ava", "musiq-paq2piq", "musiq-spaq"}
    with pytest.raises(UnknownMetricError, match="did you mean 'brisque'"):
        list_metrics("brisqe")


def test_cnniqa_live_is_registered_as_our_own_lower_better_metric():
    spec = get_spec("cnniqa-live")
    assert spec.source == "own"
    assert spec.lower_better
    assert spec.weight_files == ("CNNIQA-LIVE.pth",)
    assert "cnniqa-live" in list_metrics("cnniqa*")


def test_registering_the_metrics_builds_no_model_and_does_not_import_pyiqa():
    code = "import sys, iqa_robustness.metrics as m; assert m.list_metrics(); print('pyiqa' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_the_package_exports_the_registry_api():
    import iqa_robustness.metrics

    for name in ("create_metric", "list_metrics", "get_spec", "register_metric", "MissingWeightsError"):
        assert hasattr(iqa_robustness.metrics, name)


def test_a_weights_folder_named_twice_is_searched_and_listed_once(tmp_path: Path, monkeypatch) -> None:
    from iqa_robustness.metrics.weights import ENV_VAR, search_dirs

    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    dirs = search_dirs(tmp_path)
    assert len(dirs) == len(set(dirs))
    assert dirs[0] == tmp_path
