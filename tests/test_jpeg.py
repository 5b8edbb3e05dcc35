"""The JPEG step of full-reference cases against its specification (docs/methodology.md, "Full-reference metrics").

The reference is an independent encoder: Pillow's JPEG writer and reader. The benchmark's step is
Pillow's JPEG of the image with R and B swapped, swapped back; a correct RGB JPEG is Pillow's JPEG
of the image as it is. Both must match to the last 8-bit value.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_robustness.data.jpeg import compress, compress_array, jpeg_name, to_uint8


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A fixed 48x64 RGB image: colour ramps, a checkerboard, a saturated red patch, fixed noise."""
    y, x = np.mgrid[0:48, 0:64]
    picture = np.stack([x / 64, y / 48, ((x // 8 + y // 8) % 2) * 0.8 + 0.1], axis=-1)
    picture[10:20, 10:30] = [0.9, 0.1, 0.2]
    picture += np.random.default_rng(0).normal(0, 0.02, picture.shape)
    return np.clip(picture, 0, 1)


def pillow_jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


@pytest.mark.parametrize("quality", [10, 30, 50, 70, 90])
def test_the_benchmarks_jpeg_codes_the_image_with_red_and_blue_swapped(image, quality):
    swapped = pillow_jpeg(to_uint8(image)[..., ::-1], quality)[..., ::-1]
    assert np.array_equal(np.rint(compress_array(image, quality) * 255), swapped)


@pytest.mark.parametrize("quality", [30, 70])
def test_the_rgb_option_is_a_correct_jpeg_and_differs_from_the_benchmarks(image, quality):
    rgb = compress_array(image, quality, colour="rgb")
    assert np.array_equal(np.rint(rgb * 255), pillow_jpeg(to_uint8(image), quality))
    assert np.abs(rgb - compress_array(image, quality)).max() * 255 >= 10


def test_floats_become_8_bit_by_round_half_to_even_with_saturation():
    values = np.array([100.5, 101.5, 0.4, -3.0, 254.6, 300.0]) / 255
    assert to_uint8(values).tolist() == [100, 102, 0, 0, 255, 255]
    flat = np.full((16, 16, 3), 100.5 / 255)  # a flat block codes exactly: the rounding shows
    assert np.unique(np.rint(compress_array(flat, 90) * 255)).tolist() == [100.0]


def test_quality_decides_the_loss(image):
    errors = [np.abs(compress_array(image, q) - image).mean() for q in (10, 50, 90)]
    assert errors[0] > errors[1] > errors[2]


def test_a_batch_is_coded_image_by_image_keeping_dtype_and_shape(image):
    batch = torch.from_numpy(np.stack([image, image[::-1].copy()])).permute(0, 3, 1, 2).float()
    out = compress(batch, 30)
    assert out.shape == batch.shape
    assert out.dtype == torch.float32
    expected = compress_array(image[::-1].copy(), 30)
    assert torch.allclose(out[1].permute(1, 2, 0).double(), torch.from_numpy(expected), atol=1e-6)


def test_bad_qualities_colours_and_shapes_are_refused_with_the_fix(image):
    with pytest.raises(ValueError, match="integer from 1 to 100"):
        compress_array(image, 0)
    with pytest.raises(ValueError, match="integer from 1 to 100"):
        compress_array(image, 50.5)
    with pytest.raises(ValueError, match="'code'"):
        compress_array(image, 50, colour="bgr")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        compress_array(image[..., 0], 50)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        compress(torch.zeros(3, 8, 8), 50)


def test_rows_of_jpeg_copies_are_named_as_the_benchmark_names_them():
    assert jpeg_name("000b7d55b6184b08.png", 80) == "000b7d55b6184b08.png-jpeg80"


def test_jpeg_copies_of_a_dataset_are_named_per_quality_and_load_through_the_jpeg_step(msu_test_images):
    from iqa_robustness.data.images import folder_dataset
    from iqa_robustness.data.jpeg import jpeg_dataset

    dataset = folder_dataset(msu_test_images, size=64)
    copies = jpeg_dataset(dataset, [30, 70])
    first = dataset.image_names[0]
    assert copies.image_names[:2] == [f"{first}-jpeg30", f"{first}-jpeg70"]
    assert len(copies) == 2 * len(dataset)
    clean = dataset.items[0].load()
    assert torch.equal(copies.items[0].load(), compress(clean[None], 30)[0])
    with pytest.raises(ValueError, match="1 to 100"):
        jpeg_dataset(dataset, [0])


def test_a_case_with_jpeg_quality_attacks_the_jpeg_copies(msu_test_images, tmp_path):
    from iqa_robustness.runner.config import SuiteConfig
    from iqa_robustness.runner.grid import CaseSpec
    from iqa_robustness.runner.suite import Suite

    config = SuiteConfig(device="cpu", random_weights=True, image_size=64, results_dir=tmp_path, jpeg_quality=(30, 70))
    suite = Suite(config)
    result = suite.run(CaseSpec("cnniqa-live", "fgsm", str(msu_test_images)))
    names = sorted(r["image_name"] for r in result.rows)
    assert len(names) == 10
    assert all(n.endswith(("-jpeg30", "-jpeg70")) for n in names)
    # the clean score is the metric's score of the JPEG copy, and the attack stays in its budget around it
    copies = suite.resources.dataset(str(msu_test_images), "cnniqa-live")
    metric = suite.resources.metric("cnniqa-live")
    with torch.no_grad():
        expected = float(metric(copies.items[0].load()[None])[0])
    row = next(r for r in result.rows if r["image_name"] == copies.items[0].image_name)
    assert row["clear"] == pytest.approx(expected, rel=1e-5)
    assert result.scores["max_linf"] <= result.params["eps"] + 1e-6
    assert any(name.startswith("pair_") and "-jpeg" in name for name in result.artifacts)


def test_bad_jpeg_qualities_on_the_command_line_are_usage_errors():
    import argparse

    from iqa_robustness.runner.options import qualities

    assert qualities("30, 70") == (30, 70)
    for bad in ("0", "30,high", "101"):
        with pytest.raises(argparse.ArgumentTypeError, match="1 to 100"):
            qualities(bad)
