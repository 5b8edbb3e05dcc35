"""Datasets: folder decoding of every pixel mode, errors, named sets, batching, UAP training crops."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_robustness.data import (
    DatasetNotFoundError,
    ImageReadError,
    UnknownDatasetError,
    folder_dataset,
    iter_batches,
    list_datasets,
    load_image,
    resolve_dataset,
)

RNG = np.random.default_rng(0)


def _rgb(height: int, width: int) -> np.ndarray:
    return (RNG.random((height, width, 3)) * 255).astype(np.uint8)


def _save(folder: Path, name: str, image: Image.Image) -> Path:
    path = folder / name
    image.save(path)
    return path


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Eight images of mixed pixel modes, formats and sizes, plus files that are not images."""
    _save(tmp_path, "b_gray.png", Image.fromarray(np.full((20, 30), 128, np.uint8), "L"))
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, :15] = (255, 0, 0, 255)  # left half opaque red, right half transparent black
    _save(tmp_path, "a_rgba.PNG", Image.fromarray(rgba, "RGBA"))
    palette = Image.fromarray(np.arange(600, dtype=np.uint8).reshape(20, 30) % 4, "P")
    palette.putpalette([0, 0, 0, 255, 255, 255, 0, 0, 255, 0, 255, 0])
    _save(tmp_path, "c_palette.png", palette)
    _save(tmp_path, "d_16bit.png", Image.fromarray(np.full((24, 16), 1000, np.uint16)))
    _save(tmp_path, "e_photo.JPG", Image.fromarray(_rgb(20, 30)))
    _save(tmp_path, "f_photo.jpeg", Image.fromarray(_rgb(40, 30)))
    _save(tmp_path, "g_photo.bmp", Image.fromarray(_rgb(20, 30)))
    _save(tmp_path, "h_photo.png", Image.fromarray(_rgb(24, 16)))
    (tmp_path / "notes.txt").write_text("not an image")
    _save(tmp_path, ".hidden.png", Image.fromarray(_rgb(8, 8)))
    return tmp_path


def test_a_folder_lists_its_images_sorted_by_name_and_ignores_other_files(mixed_folder: Path) -> None:
    dataset = resolve_dataset(mixed_folder)
    assert dataset.name == mixed_folder.name
    assert dataset.image_names == [
        "a_rgba.PNG",
        "b_gray.png",
        "c_palette.png",
        "d_16bit.png",
        "e_photo.JPG",
        "f_photo.jpeg",
        "g_photo.bmp",
        "h_photo.png",
    ]


def test_every_pixel_mode_loads_as_float_rgb_in_the_unit_range(mixed_folder: Path) -> None:
    for name, image in resolve_dataset(str(mixed_folder)).images():
        assert image.dtype == torch.float32, name
        assert image.shape[0] == 3, name
        assert float(image.min()) >= 0.0, name
        assert float(image.max()) <= 1.0, name


def test_grayscale_is_repeated_over_the_three_channels(mixed_folder: Path) -> None:
    image = load_image(mixed_folder / "b_gray.png")
    assert image.shape == (3, 20, 30)
    assert torch.allclose(image, torch.full_like(image, 128 / 255))


def test_sixteen_bit_pixels_keep_their_precision(mixed_folder: Path) -> None:
    image = load_image(mixed_folder / "d_16bit.png")
    assert image.shape == (3, 24, 16)
    # 1000 / 65535 is not a multiple of 1/255: an 8-bit round trip would lose it
    assert torch.allclose(image, torch.full_like(image, 1000 / 65535))


def test_alpha_is_composited_on_white(mixed_folder: Path) -> None:
    image = load_image(mixed_folder / "a_rgba.PNG")
    assert torch.equal(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # opaque red stays red
    assert torch.equal(image[:, 0, -1], torch.ones(3))  # transparent black becomes white


def test_half_transparent_pixels_blend_with_white(tmp_path: Path) -> None:
    pixel = np.array([[[0, 0, 0, 51]]], np.uint8)  # black at alpha 0.2
    image = load_image(_save(tmp_path, "x.png", Image.fromarray(pixel, "RGBA")))
    assert torch.allclose(image.flatten(), torch.full((3,), 0.8))


def test_palette_colours_are_looked_up(mixed_folder: Path) -> None:
    image = load_image(mixed_folder / "c_palette.png")
    assert torch.equal(image[:, 0, :4].T, torch.tensor([[0.0, 0, 0], [1, 1, 1], [0, 0, 1], [0, 1, 0]]))


def test_max_images_takes_the_first_images_after_sorting(mixed_folder: Path) -> None:
    dataset = resolve_dataset(mixed_folder, max_images=3)
    assert dataset.image_names == ["a_rgba.PNG", "b_gray.png", "c_palette.png"]


def test_size_shrinks_to_a_longest_side_and_never_enlarges(mixed_folder: Path) -> None:
    dataset = resolve_dataset(mixed_folder, size=20)
    shapes = {name: tuple(image.shape[1:]) for name, image in dataset.images()}
    assert shapes["f_photo.jpeg"] == (20, 15)
    assert shapes["b_gray.png"] == (13, 20)
    assert shapes["h_photo.png"] == (20, 13)
    assert all(item.shape == shapes[item.image_name] for item in dataset)


def test_size_can_be_an_exact_height_and_width(mixed_folder: Path) -> None:
    dataset = resolve_dataset(mixed_folder, size=(8, 12))
    assert {tuple(image.shape) for _, image in dataset.images()} == {(3, 8, 12)}


@pytest.fixture
def folder_with_bad_files(tmp_path: Path) -> Path:
    _save(tmp_path, "good.png", Image.fromarray(_rgb(10, 10)))
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a jpeg")
    full = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(full[: len(full) // 2])
    return tmp_path


def test_unreadable_files_are_all_named_in_one_error_that_says_what_to_do(
    folder_with_bad_files: Path,
) -> None:
    with pytest.raises(ImageReadError) as info:
        resolve_dataset(folder_with_bad_files)
    message = str(info.value)
    assert "garbage.jpg" in message
    assert "truncated.png" in message
    assert "good.png" not in message
    assert "on_error='skip'" in message
    assert set(info.value.bad) == {"garbage.jpg", "truncated.png"}


def test_skipping_leaves_unreadable_files_out_with_a_warning(
    folder_with_bad_files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="iqa_robustness.data.images"):
        dataset = resolve_dataset(folder_with_bad_files, on_error="skip")
    assert dataset.image_names == ["good.png"]
    assert set(dataset.skipped) == {"garbage.jpg", "truncated.png"}
    assert "garbage.jpg" in caplog.text
    assert "truncated.png" in caplog.text


def test_damage_found_only_by_decoding_is_reported_by_name(tmp_path: Path) -> None:
    _save(tmp_path, "whole.jpg", Image.fromarray(_rgb(64, 64)))
    full = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(full[: len(full) // 2])  # header intact, scan data cut
    dataset = resolve_dataset(tmp_path)
    with pytest.raises(ImageReadError, match=r"cut\.jpg"):
        dataset.checked()
    skipping = resolve_dataset(tmp_path, on_error="skip")
    assert [name for name, _ in iter_batches(skipping, 4)] == [["whole.jpg"]]
    assert skipping.checked().image_names == ["whole.jpg"]


def test_an_empty_folder_says_where_the_images_might_be(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(ImageReadError, match="subfolders \\(images\\)"):
        resolve_dataset(tmp_path)


def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="no such folder"):
        resolve_dataset(tmp_path / "absent")


def test_subfolders_are_read_when_asked(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    _save(tmp_path / "x", "1.png", Image.fromarray(_rgb(4, 4)))
    _save(tmp_path, "0.png", Image.fromarray(_rgb(4, 4)))
    assert folder_dataset(tmp_path, recursive=True).image_names == ["0.png", "x/1.png"]
    assert folder_dataset(tmp_path).image_names == ["0.png"]


def test_batches_hold_one_size_each_and_lose_or_repeat_no_image(mixed_folder: Path) -> None:
    dataset = resolve_dataset(mixed_folder)
    batches = list(iter_batches(dataset, batch_size=2))
    names = [name for batch_names, _ in batches for name in batch_names]
    assert Counter(names) == Counter(dataset.image_names)
    assert all(len(batch_names) == len(tensor) <= 2 for batch_names, tensor in batches)
    # sizes present: 20x30 (a, b, c, e, g), 24x16 (d, h), 40x30 (f)
    assert [batch_names for batch_names, _ in batches] == [
        ["a_rgba.PNG", "b_gray.png"],
        ["c_palette.png", "e_photo.JPG"],
        ["d_16bit.png", "h_photo.png"],
        ["f_photo.jpeg"],
        ["g_photo.bmp"],
    ]
    singles = dict(dataset.images())
    for batch_names, tensor in batches:
        for name, image in zip(batch_names, tensor, strict=True):
            assert torch.equal(image, singles[name])


def test_batching_is_deterministic(mixed_folder: Path) -> None:
    def run() -> list[list[str]]:
        return [names for names, _ in iter_batches(resolve_dataset(mixed_folder, size=16), 3)]

    assert run() == run()


def test_batch_size_must_be_positive(mixed_folder: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(resolve_dataset(mixed_folder), 0))


@pytest.mark.parametrize("options", [{"size": 0}, {"size": (4,)}, {"max_images": 0}, {"on_error": "ignore"}])
def test_invalid_options_are_refused(mixed_folder: Path, options: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        resolve_dataset(mixed_folder, **options)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("no_network")
def test_the_sample_set_is_real_colour_photographs_read_offline() -> None:
    dataset = resolve_dataset("sample")
    assert len(dataset) >= 6
    assert dataset.image_names == sorted(dataset.image_names)
    for name, image in dataset.images():
        assert image.shape[0] == 3, name
        assert min(image.shape[1:]) >= 256, name
        assert float(image.std()) > 0.05, name  # not a constant image
        assert float((image[0] - image[2]).abs().mean()) > 0.01, name  # colour, not gray
        levels = torch.bincount((image[1] * 255).round().long().flatten(), minlength=256)
        assert int(levels.count_nonzero()) > 100, name  # natural tones, not a drawing


def test_the_sample_set_honours_max_images_and_size() -> None:
    dataset = resolve_dataset("SAMPLE", max_images=2, size=64)
    assert dataset.name == "sample"
    images = dict(dataset.images())
    assert len(images) == 2
    assert all(max(image.shape[1:]) == 64 for image in images.values())


def test_msu5_is_five_images_of_299_by_299(shared_dir: Path) -> None:
    dataset = resolve_dataset("msu5")
    assert dataset.root == shared_dir / "data" / "msu" / "test_images"
    batches = list(iter_batches(dataset, batch_size=8))
    assert len(batches) == 1
    names, tensor = batches[0]
    assert tensor.shape == (5, 3, 299, 299)
    assert names == sorted(p.name for p in dataset.root.glob("*.png"))


def test_msu5_without_the_reference_folder_says_how_to_provide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IQA_ROBUSTNESS_SHARED", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="IQA_ROBUSTNESS_SHARED"):
        resolve_dataset("msu5")


def test_nips2017_is_found_through_its_environment_variable_and_usual_layout(
    mixed_folder: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    download = tmp_path_factory.mktemp("nips")
    (download / "images").symlink_to(mixed_folder)
    monkeypatch.setenv("IQA_ROBUSTNESS_NIPS2017", str(download))
    dataset = resolve_dataset("nips2017", max_images=2)
    assert dataset.name == "nips2017"
    assert dataset.image_names == ["a_rgba.PNG", "b_gray.png"]


def test_a_named_dataset_that_is_not_set_up_says_how_to_provide_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IQA_ROBUSTNESS_NIPS2017", raising=False)
    monkeypatch.delenv("IQA_ROBUSTNESS_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match="IQA_ROBUSTNESS_NIPS2017"):
        resolve_dataset("nips2017")


def test_any_folder_under_the_data_root_opens_by_its_name(mixed_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IQA_ROBUSTNESS_DATA", str(mixed_folder.parent))
    dataset = resolve_dataset(mixed_folder.name)
    assert len(dataset) == 8


def test_an_unknown_name_suggests_close_names_and_says_a_path_works() -> None:
    assert {"sample", "msu5", "nips2017"} <= set(list_datasets())
    with pytest.raises(UnknownDatasetError) as info:
        resolve_dataset("msu4")
    message = str(info.value)
    assert "did you mean 'msu5'" in message
    assert "path" in message
