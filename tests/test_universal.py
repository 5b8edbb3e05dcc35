"""Universal and learned attacks: tiling, amplitudes, artefacts, imports, caching and short real training."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from iqa_robustness.attacks import (
    Budget,
    BudgetExceededError,
    create_attack,
    list_attacks,
    parse_attack_specs,
    training,
)
from iqa_robustness.attacks._unet import UNetGenerator
from iqa_robustness.attacks.cnn import CNNAttack
from iqa_robustness.attacks.perturbation import Perturbation, load_perturbation, tile_perturbation
from iqa_robustness.attacks.training import prepare_training_set, uap_train_transform
from iqa_robustness.attacks.uap import OptimizedUAP
from iqa_robustness.conventions import AMPLITUDES, orient
from iqa_robustness.data import Dataset, resolve_dataset
from iqa_robustness.metrics import create_metric
from iqa_robustness.metrics.base import Metric, MetricSpec
from iqa_robustness.runner.config import SuiteConfig
from iqa_robustness.runner.suite import Suite

torch.set_num_threads(2)

UNIVERSAL = ("uap", "cumulative-uap", "generative-uap", "cnn")
BOUNDS = {"uap": 0.1, "cumulative-uap": 0.1, "generative-uap": 10 / 255, "cnn": 10 / 255}
MSU_UAPS = (
    "uap_maniqa_COCO.npy",
    "uap_maniqa_VOC2012.npy",
    "cumulative-uap_maniqa_COCO.npy",
    "cumulative-uap_maniqa_VOC2012.npy",
    "generative-uap_maniqa_COCO.npy",
    "generative-uap_maniqa_VOC2012.npy",
)


@pytest.fixture(scope="module")
def cnniqa(original_weights: Path):
    return create_metric("cnniqa-live", weights=original_weights)


@pytest.fixture(scope="module")
def msu5(msu_test_images: Path) -> tuple[list[str], torch.Tensor]:
    dataset = resolve_dataset(msu_test_images)
    names, images = zip(*dataset.images(), strict=True)
    return list(names), torch.stack(images)


@pytest.fixture(scope="module")
def tiny_train() -> Dataset:
    """Two photos shrunk to 96 px (the training transform brings them to 256x256)."""
    return resolve_dataset("sample", max_images=2, size=96)


class _Brightness(Metric):
    """Mean pixel value: a differentiable stand-in where no real metric is needed."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def _random_delta(seed: int = 0, size: int = 256, bound: float = 0.1) -> Perturbation:
    g = torch.Generator().manual_seed(seed)
    return Perturbation(delta=(torch.rand(1, 3, size, size, generator=g) * 2 - 1) * bound)


# --------------------------------------------------------------------------- registry


def test_the_four_fast_attacks_are_registered_as_universal():
    assert set(UNIVERSAL) <= set(list_attacks(where=lambda cls: cls.universal))
    assert create_attack("cnn").family == "learned"
    assert {create_attack(n).family for n in UNIVERSAL[:3]} == {"uap"}


def test_defaults_are_the_benchmark_hyperparameters():
    assert create_attack("uap").params() == {
        "attack": "uap", "epochs": 5, "batch_size": 8, "eps": 0.1, "lr": 1e-3, "init": 1e-4,
    }  # fmt: skip
    assert (create_attack("cumulative-uap").epochs, create_attack("cumulative-uap").eps) == (5, 0.1)
    generative = create_attack("generative-uap")
    assert (generative.epochs, generative.batch_size, generative.lr, generative.eps) == (1, 8, 1e-3, 10 / 255)
    cnn = create_attack("cnn")
    assert (cnn.epochs, cnn.batch_size, cnn.lr, cnn.eps) == (200, 4, 1e-3, 10 / 255)


def test_calling_a_universal_attack_like_an_image_attack_says_to_fit_then_apply():
    brightness = _Brightness(MetricSpec("brightness", bounds=(0.0, 1.0))).freeze()
    with pytest.raises(TypeError, match=r"fit\(metric, train_images\)"):
        create_attack("uap")(brightness, torch.rand(1, 3, 64, 64))


# --------------------------------------------------------------------------- tiling and amplitude


def test_tiling_repeats_from_the_top_left_corner_without_resizing():
    delta = torch.arange(2 * 3, dtype=torch.float32).reshape(1, 1, 2, 3)
    tiled = tile_perturbation(delta, 5, 7)
    expected = np.tile(delta[0, 0].numpy(), (5 // 2 + 1, 7 // 3 + 1))[:5, :7]
    assert tiled.shape == (1, 1, 5, 7)
    np.testing.assert_array_equal(tiled[0, 0].numpy(), expected)


def test_apply_adds_amplitude_times_the_tiled_delta():
    perturbation = _random_delta()
    images = torch.rand(2, 3, 299, 310)
    out = create_attack("uap").apply(perturbation, images, 0.4)
    added = out - images
    delta = perturbation.delta[0]
    torch.testing.assert_close(added[:, :, :256, :256], 0.4 * delta.expand(2, 3, 256, 256))
    torch.testing.assert_close(added[:, :, 256:, 256:], 0.4 * delta[:, :43, :54].expand(2, 3, 43, 54))


def test_apply_does_not_clamp_by_default_and_clamps_on_request():
    perturbation = Perturbation(delta=torch.full((1, 3, 256, 256), 0.1))
    white = torch.ones(1, 3, 256, 256)
    attack = create_attack("uap")
    assert attack.apply(perturbation, white, 0.8).max().item() == pytest.approx(1.08)
    assert attack.apply(perturbation, white, 0.8, clamp=True).max().item() == 1.0


def test_a_perturbation_beyond_the_attacks_bound_is_refused_when_applied_with_the_numbers():
    perturbation = Perturbation(delta=torch.full((1, 3, 256, 256), 0.1))  # an MSU UAP bound
    images = torch.full((1, 3, 64, 64), 0.5)
    attack = create_attack("generative-uap")  # bound 10/255
    assert type(attack).budget == Budget.linf_times_amplitude("eps")
    with pytest.raises(BudgetExceededError, match=r"linf distance 0\.08 > 0\.0313725") as info:
        attack.apply(perturbation, images, 0.8)
    assert "at amplitude 0.8" in str(info.value)
    within = create_attack("uap").apply(perturbation, images, 0.8)  # bound 0.1: 0.08 at amplitude 0.8
    assert (within - images).abs().max().item() == pytest.approx(0.08)


def test_a_video_gets_the_same_perturbation_on_every_frame():
    frames = torch.rand(4, 3, 64, 80)
    added = create_attack("uap").apply(_random_delta(size=32), frames, 0.2) - frames
    for t in range(1, 4):
        torch.testing.assert_close(added[t], added[0])


# --------------------------------------------------------------------------- artefacts and imports


def test_a_delta_round_trips_through_npy_exactly_and_through_png_within_half_a_level(tmp_path: Path):
    perturbation = _random_delta(bound=0.1)
    perturbation.meta["metric"] = "some-metric"
    written = perturbation.save(tmp_path / "run")
    assert sorted(p.name for p in written) == ["run.json", "run.npy", "run.png"]
    assert np.load(tmp_path / "run.npy").shape == (256, 256, 3)
    from_npy = load_perturbation(tmp_path / "run.npy")
    torch.testing.assert_close(from_npy.delta, perturbation.delta, rtol=0, atol=0)
    assert from_npy.meta["metric"] == "some-metric"
    from_png = load_perturbation(tmp_path / "run.png")
    assert (from_png.delta - perturbation.delta).abs().max().item() <= 0.5 / 255 + 1e-6


def test_msu_npy_files_import_as_rgb_deltas_within_their_bound(shared_dir: Path):
    for name in MSU_UAPS:
        perturbation = load_perturbation(shared_dir / "data" / "msu" / "uaps" / name)
        bound = 10 / 255 if name.startswith("generative") else 0.1
        assert perturbation.delta.shape == (1, 3, 256, 256)
        assert perturbation.linf <= bound + 1e-6
        np.testing.assert_array_equal(perturbation.to_numpy(), np.load(shared_dir / "data" / "msu" / "uaps" / name))


def test_cviu_pngs_decode_as_png_over_255_minus_half(shared_dir: Path):
    pngs = sorted((shared_dir / "data" / "fast-attacks" / "uaps").glob("*.png"))
    assert len(pngs) == 21
    for path in pngs:
        perturbation = load_perturbation(path)
        assert perturbation.delta.min().item() >= -0.5
        assert perturbation.delta.max().item() <= 0.5
        if path.name == "cumulative_uap_spaq.png":  # the one release not bounded by 10/255
            assert perturbation.linf > 0.4
            continue
        # written as uint8((delta + 0.5) * 255), truncated: 10/255 decodes to 9.5/255, -10/255 to -10.5/255
        assert perturbation.delta.min().item() == pytest.approx(-10.5 / 255, abs=1e-6)
        assert perturbation.delta.max().item() == pytest.approx(9.5 / 255, abs=1e-6)


def test_unknown_perturbation_formats_are_refused_with_the_known_ones(tmp_path: Path):
    (tmp_path / "delta.txt").write_text("0")
    with pytest.raises(ValueError, match=r"\.npy \(MSU\)"):
        load_perturbation(tmp_path / "delta.txt")


@pytest.mark.parametrize("uap_file", MSU_UAPS)
def test_msu_perturbations_reproduce_the_benchmark_mse_to_four_digits(shared_dir: Path, msu5, uap_file: str):
    attack_name, _, train = Path(uap_file).stem.split("_")
    rows = {}
    with (shared_dir / "data" / "msu" / "results" / f"{attack_name}_maniqa_test.csv").open() as f:
        for row in csv.DictReader(f):
            if row["train_dataset"] == train:
                rows[(row["image_name"], float(row["amplitude"]))] = float(row["mse"])
    names, images = msu5
    perturbation = load_perturbation(shared_dir / "data" / "msu" / "uaps" / uap_file)
    attack = create_attack(attack_name)
    checked = 0
    for amplitude in AMPLITUDES:
        attacked = attack.apply(perturbation, images, amplitude)
        mse = ((attacked.double() - images.double()) ** 2).mean(dim=(1, 2, 3))
        for name, ours in zip(names, mse.tolist(), strict=True):
            reference = rows[(name, amplitude)]
            half_unit_in_4th_digit = 0.5 * 10 ** (math.floor(math.log10(reference)) - 3)
            assert abs(ours - reference) <= half_unit_in_4th_digit, (name, amplitude, ours, reference)
            checked += 1
    assert checked == 15


# --------------------------------------------------------------------------- the U-Net


@pytest.fixture(scope="module")
def generator() -> Perturbation:
    torch.manual_seed(0)
    return Perturbation(generator=UNetGenerator(), scale=10 / 255)


def test_the_unet_keeps_the_input_shape_and_has_the_pix2pix_parameter_count(generator):
    unet = generator.generator
    assert sum(p.numel() for p in unet.parameters()) == 54_409_603
    with torch.no_grad():
        out = unet(torch.rand(1, 3, 256, 512))
    assert out.shape == (1, 3, 256, 512)
    assert out.abs().max().item() < 1.0
    with pytest.raises(ValueError, match="multiples of 256"):
        unet(torch.rand(1, 3, 300, 256))


def test_the_generator_output_is_tiled_from_its_top_left_256_crop_by_default(generator):
    images = torch.rand(1, 3, 299, 300)
    delta = generator.perturbation_for(images)
    assert delta.shape == images.shape
    assert delta.abs().max().item() <= 10 / 255
    torch.testing.assert_close(delta[..., 256:, :], delta[..., :43, :])
    torch.testing.assert_close(delta[..., :, 256:], delta[..., :, :44])


@pytest.mark.parametrize(("mode", "shape"), [("tile", (1, 3, 200, 130)), ("pad", (1, 3, 260, 130))])
def test_the_generator_pads_sides_it_cannot_crop_to_256_multiples(generator, mode, shape):
    images = torch.rand(*shape)
    delta = generator.perturbation_for(images, test_time=mode)
    assert delta.shape == images.shape
    assert 0 < delta.abs().max().item() <= 10 / 255


def test_the_cnn_attack_refuses_an_unknown_test_time_mode():
    with pytest.raises(ValueError, match="tile"):
        CNNAttack(test_time="resize")


def test_a_published_facpa_state_dict_loads_as_a_generator(generator, tmp_path: Path):
    torch.save(generator.generator.state_dict(), tmp_path / "unet_p2p.pth")  # FACPA releases bare state dicts
    loaded = load_perturbation(tmp_path / "unet_p2p.pth")
    assert loaded.kind == "generator"
    assert loaded.linf == pytest.approx(10 / 255)
    for name, tensor in generator.generator.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[name], tensor), name


# --------------------------------------------------------------------------- training


def test_uap_training_images_with_a_side_under_512_are_resized_to_256() -> None:
    image = torch.rand(3, 300, 700)
    out = uap_train_transform(image)
    assert out.shape == (3, 256, 256)
    cv2 = pytest.importorskip("cv2")
    reference = cv2.resize(image.permute(1, 2, 0).numpy(), (256, 256))  # the benchmark's own resize
    assert np.allclose(out.permute(1, 2, 0).numpy(), reference, atol=1e-5)


def test_uap_training_images_of_512_or_more_are_centre_cropped() -> None:
    image = torch.rand(2, 3, 513, 800)
    out = uap_train_transform(image)
    assert out.shape == (2, 3, 256, 256)
    assert torch.equal(out, image[:, :, 128:384, 272:528])


def test_uap_transform_refuses_a_non_rgb_tensor() -> None:
    with pytest.raises(ValueError, match="expected an image"):
        uap_train_transform(torch.rand(1, 64, 64))


class _PlainImages:
    """Not a :class:`Dataset`: just the members training uses (name, items, len, images(), load())."""

    def __init__(self, images: dict[str, torch.Tensor]) -> None:
        self.name = "plain"
        self._images = images
        self.items = [type("Item", (), {"image_name": n, "shape": tuple(t.shape[-2:])})() for n, t in images.items()]

    def __len__(self) -> int:
        return len(self.items)

    def images(self):
        return iter(self._images.items())

    def load(self, item):
        return self._images[item.image_name]


def test_any_object_with_the_dataset_members_is_training_data(monkeypatch):
    images = {"a.png": torch.rand(3, 40, 60), "b.png": torch.rand(3, 50, 50)}
    plain = _PlainImages(images)
    kept = prepare_training_set(plain)
    assert kept.identity == {"dataset": "plain", "images": [["a.png", 40, 60], ["b.png", 50, 50]]}
    torch.testing.assert_close(kept.images[1], uap_train_transform(images["b.png"]))
    monkeypatch.setattr(training, "PRELOAD_LIMIT", 1)
    lazy = prepare_training_set(plain)
    assert lazy.images is None
    torch.testing.assert_close(lazy.batch([1, 0]), kept.images[[1, 0]])


@pytest.mark.parametrize("name", ["sample", Path("some/folder")])
def test_a_dataset_name_or_path_must_be_opened_by_the_caller(name):
    with pytest.raises(TypeError, match="open the dataset first"):
        prepare_training_set(name)


def test_training_images_get_the_benchmark_preprocessing_and_large_sets_load_lazily(tiny_train, monkeypatch):
    kept = prepare_training_set(tiny_train)
    assert kept.images.shape == (2, 3, 256, 256)
    assert kept.identity["images"] == [[item.image_name, *item.shape] for item in tiny_train.items]
    monkeypatch.setattr(training, "PRELOAD_LIMIT", 1)
    lazy = prepare_training_set(tiny_train)
    assert lazy.images is None
    assert lazy.identity == kept.identity
    torch.testing.assert_close(lazy.batch([1, 0]), kept.images[[1, 0]])


@pytest.mark.parametrize("name", UNIVERSAL)
def test_each_attack_trains_a_few_steps_on_a_real_metric_within_its_bound(name, cnniqa, tiny_train):
    attack = create_attack(name, batch_size=1 if name == "cnn" else 2)
    perturbation = attack.fit(cnniqa, tiny_train, steps=2, seed=0)
    assert perturbation.linf <= BOUNDS[name] + 1e-6
    images = torch.rand(1, 3, 288, 300)
    adv = attack.apply(perturbation, images, 0.8)
    assert 0 < (adv - images).abs().max().item() <= 0.8 * BOUNDS[name] + 1e-6
    assert perturbation.meta["steps"] == 2
    assert perturbation.meta["metric"] == "cnniqa-live"


def test_training_steps_default_to_epochs_times_batches_per_epoch(cnniqa, tiny_train):
    perturbation = create_attack("cumulative-uap", epochs=3, batch_size=1).fit(cnniqa, tiny_train)
    assert perturbation.meta["steps"] == 3 * 2
    assert perturbation.meta["full_epochs"] is True


def test_max_steps_caps_the_epochs_and_the_run_says_it_was_capped(cnniqa, tiny_train):
    attack = create_attack("cumulative-uap", epochs=3, batch_size=1)
    capped = attack.fit(cnniqa, tiny_train, max_steps=4)
    assert (capped.meta["steps"], capped.meta["full_epochs"]) == (4, False)
    roomy = attack.fit(cnniqa, tiny_train, max_steps=100)  # a cap above the epochs changes nothing
    assert (roomy.meta["steps"], roomy.meta["full_epochs"]) == (6, True)
    exact = attack.fit(cnniqa, tiny_train, steps=5, max_steps=4)  # explicit steps win
    assert exact.meta["steps"] == 5
    with pytest.raises(ValueError, match="max_steps must be a positive"):
        attack.fit(cnniqa, tiny_train, max_steps=0)


def test_the_suite_caps_universal_training_on_the_cpu_only_unless_full_epochs_are_asked_for():
    from iqa_robustness.conventions import CPU_UAP_MAX_STEPS
    from iqa_robustness.runner.config import SuiteConfig

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert SuiteConfig().uap_training_steps(cpu) == (None, CPU_UAP_MAX_STEPS)
    assert SuiteConfig().uap_training_steps(gpu) == (None, None)
    assert SuiteConfig(uap_full_epochs=True).uap_training_steps(cpu) == (None, None)
    assert SuiteConfig(uap_steps=7).uap_training_steps(gpu) == (7, None)


def test_training_is_deterministic_for_a_seed(cnniqa):
    train = resolve_dataset("sample", max_images=4, size=64)
    attack = create_attack("uap", batch_size=2, lr=0.01)
    first = attack.fit(cnniqa, train, steps=3, seed=7)
    again = attack.fit(cnniqa, train, steps=3, seed=7)
    other = attack.fit(cnniqa, train, steps=3, seed=8)
    torch.testing.assert_close(first.delta, again.delta, rtol=0, atol=0)
    assert not torch.equal(first.delta, other.delta)


def test_a_second_fit_with_the_same_key_reuses_the_saved_run(cnniqa, tiny_train, tmp_path, monkeypatch):
    calls = []
    train = OptimizedUAP._train
    monkeypatch.setattr(OptimizedUAP, "_train", lambda self, *a: calls.append(1) or train(self, *a))
    attack = create_attack("uap", batch_size=2)
    first = attack.fit(cnniqa, tiny_train, steps=2, cache_dir=tmp_path)
    saved = first.path
    mtime = saved.stat().st_mtime_ns
    second = attack.fit(cnniqa, tiny_train, steps=2, cache_dir=tmp_path)
    assert calls == [1]
    assert second.from_cache
    assert not first.from_cache
    assert second.path == saved
    assert saved.stat().st_mtime_ns == mtime
    torch.testing.assert_close(second.delta, first.delta, rtol=0, atol=0)
    attack.fit(cnniqa, tiny_train, steps=2, seed=1, cache_dir=tmp_path)  # another seed: another key
    create_attack("uap", batch_size=2, lr=0.01).fit(cnniqa, tiny_train, steps=2, cache_dir=tmp_path)
    assert calls == [1, 1, 1]
    assert len(list(tmp_path.glob("uap_cnniqa-live_*.npy"))) == 3


@pytest.mark.pyiqa
def test_the_suite_trains_one_perturbation_per_hyperparameter_values(tmp_path):
    config = SuiteConfig(device="cpu", random_weights=True, max_images=2, image_size=64, uap_steps=1)
    suite = Suite(dataclasses.replace(config, results_dir=tmp_path))
    default, smaller = (spec.create() for spec in parse_attack_specs("uap,uap(eps=0.05,init=0.09)"))
    first = suite.resources.perturbation(default, "cnniqa", "sample")
    second = suite.resources.perturbation(smaller, "cnniqa", "sample")
    assert suite.resources.perturbation(default, "cnniqa", "sample") is first  # kept for the session
    assert second is not first
    assert not second.from_cache
    assert second.meta["hyperparameters"]["eps"] == 0.05
    assert first.linf < 0.01  # one Adam step of 1e-3 from 1e-4
    assert second.linf == pytest.approx(0.05)  # from 0.09, clipped to its own eps
    assert len(list((tmp_path / "perturbations").glob("uap_cnniqa_*.npy"))) == 2


def test_a_trained_generator_is_cached_as_a_state_dict(cnniqa, tiny_train, tmp_path):
    attack = create_attack("cnn", batch_size=1)
    first = attack.fit(cnniqa, tiny_train, steps=1, cache_dir=tmp_path)
    second = attack.fit(cnniqa, tiny_train, steps=1, cache_dir=tmp_path)
    assert first.path.suffix == ".pt"
    assert second.from_cache
    assert second.kind == "generator"
    for name, tensor in first.generator.state_dict().items():
        assert torch.equal(second.generator.state_dict()[name], tensor), name


def test_a_short_uap_training_on_the_sample_photos_lowers_cnniqa_dmos_on_held_out_images(cnniqa, msu5):
    """60 Adam steps (lr 0.01, batch 8) on the eight scikit-image photos, scored on the 5 MSU test
    images, none of which it saw (about 20 s on two CPU cores)."""
    attack = create_attack("uap", lr=0.01)
    perturbation = attack.fit(cnniqa, resolve_dataset("sample"), steps=60, seed=0)
    _, images = msu5
    with torch.no_grad():
        clear = cnniqa(images)
        attacked = {k: cnniqa(attack.apply(perturbation, images, k)) for k in AMPLITUDES}
    gain = {k: float(orient(attacked[k] - clear, cnniqa.lower_better).mean()) for k in AMPLITUDES}
    # DMOS: lower is better, so the attack must lower it on every held-out image
    assert (attacked[0.8] < clear).all(), (clear, attacked[0.8])
    assert gain[0.8] > gain[0.2] > 0
