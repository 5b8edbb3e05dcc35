"""Video datasets: the built-in clips, Vimeo-90k folders, video files, and their frames as images.

The benchmark (Antsiferova et al., AAAI 2024) tests video metrics on the Vimeo-90k test triplets
and Derf's blue_sky (y4m); the same sets give image metrics their frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from video_files import write_video

from iqa_robustness.data import (
    Dataset,
    DatasetNotFoundError,
    UnknownDatasetError,
    VideoDataset,
    is_video_dataset,
    read_clip,
    resolve_any_dataset,
    resolve_video_dataset,
    sample_clips,
)
from iqa_robustness.data.video_sets import SAMPLE_CLIP_FRAMES


def _write_frames(folder: Path, n: int, shade: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        Image.fromarray(np.full((16, 24, 3), shade + 10 * i, np.uint8)).save(folder / f"im{i}.png")


def _write_y4m(path: Path, n: int) -> None:
    """A y4m clip whose frames get brighter: frame i is grey 40 + 20 i."""
    write_video(path, [np.full((24, 32, 3), 40 + 20 * i, np.uint8) for i in range(n)])


def test_the_built_in_clips_pan_across_real_photographs() -> None:
    clips = sample_clips()
    assert clips.clip_names == ["astronaut", "coffee", "rocket"]
    clip = clips.clips[0].load()
    assert clip.shape == (SAMPLE_CLIP_FRAMES, 3, 224, 224)
    assert clip.dtype == torch.float32
    # the camera moves: consecutive frames differ, and frame t+1 is frame t shifted by the pan
    assert float((clip[1] - clip[0]).abs().mean()) > 0.01
    assert torch.equal(clip[1][:, :-2, :-8], clip[0][:, 2:, 8:])  # 8 px right, 2 px down a frame


def test_clip_options_limit_clips_frames_and_size() -> None:
    clips = resolve_video_dataset("sample-clips", max_clips=2, max_frames=5, size=64)
    assert len(clips) == 2
    assert clips.clips[1].load().shape == (5, 3, 64, 64)


def test_frames_of_a_video_set_are_an_image_set_named_clip_slash_frame() -> None:
    clips = resolve_video_dataset("sample-clips", max_clips=1, max_frames=4)
    frames = clips.frames()
    assert isinstance(frames, Dataset)
    assert frames.image_names == ["astronaut/000", "astronaut/001", "astronaut/002", "astronaut/003"]
    whole = clips.clips[0].load()
    for i, (_, image) in enumerate(frames.images()):
        assert torch.allclose(image, whole[i], atol=1e-6)


def test_a_vimeo_folder_gives_its_test_list_clips(tmp_path: Path) -> None:
    for k, name in enumerate(("00001/0001", "00001/0002", "00002/0001")):
        _write_frames(tmp_path / "sequences" / name, 3, shade=k)
    (tmp_path / "tri_testlist.txt").write_text("00001/0002\n00002/0001\n")

    assert is_video_dataset(str(tmp_path))
    clips = resolve_any_dataset(str(tmp_path))
    assert isinstance(clips, VideoDataset)
    assert clips.clip_names == ["00001/0002", "00002/0001"]
    assert clips.clips[0].load().shape == (3, 3, 16, 24)
    assert clips.frames().image_names[:3] == ["00001/0002/im1.png", "00001/0002/im2.png", "00001/0002/im3.png"]


def test_the_vimeo_names_find_the_folder_through_its_variable_and_pick_their_list(tmp_path: Path, monkeypatch) -> None:
    for name in ("00001/0001", "00001/0002", "00002/0001"):
        _write_frames(tmp_path / "sequences" / name, 3)
    (tmp_path / "tri_testlist.txt").write_text("00002/0001\n")
    (tmp_path / "tri_trainlist.txt").write_text("00001/0001\n00001/0002\n")
    monkeypatch.setenv("IQA_ROBUSTNESS_VIMEO", str(tmp_path))
    assert resolve_any_dataset("vimeo").clip_names == ["00002/0001"]
    train = resolve_any_dataset("vimeo-train")
    assert train.clip_names == ["00001/0001", "00001/0002"]
    assert len(train.frames()) == 6


def test_a_missing_named_video_set_says_how_to_provide_it(monkeypatch) -> None:
    monkeypatch.delenv("IQA_ROBUSTNESS_BLUE_SKY", raising=False)
    monkeypatch.delenv("IQA_ROBUSTNESS_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match="IQA_ROBUSTNESS_BLUE_SKY"):
        resolve_any_dataset("blue-sky")


def test_the_blue_sky_name_finds_derfs_file_in_its_folder(tmp_path: Path, monkeypatch) -> None:
    _write_y4m(tmp_path / "blue_sky_1080p25.y4m", 2)
    _write_y4m(tmp_path / "another.y4m", 2)
    monkeypatch.setenv("IQA_ROBUSTNESS_BLUE_SKY", str(tmp_path))
    clips = resolve_any_dataset("blue-sky")
    assert clips.clip_names == ["blue_sky_1080p25.y4m"]
    assert clips.clips[0].load().shape == (2, 3, 24, 32)


def test_a_video_file_is_one_clip_and_its_frames_decode_in_order(tmp_path: Path) -> None:
    path = tmp_path / "blue_sky.y4m"
    _write_y4m(path, 5)
    clips = resolve_any_dataset(str(path), max_frames=4)
    assert isinstance(clips, VideoDataset)
    assert clips.clip_names == ["blue_sky.y4m"]
    whole = clips.clips[0].load()
    assert whole.shape == (4, 3, 24, 32)
    frames = clips.frames()
    assert len(frames) == 4
    assert frames[0].shape == (24, 32)  # from the stream header, without decoding
    decoded = torch.stack([image for _, image in frames.images()])
    assert torch.allclose(decoded, whole, atol=1 / 255 + 1e-6)
    # an earlier frame after a later one reopens the file
    assert torch.allclose(frames[1].load(), whole[1], atol=1 / 255 + 1e-6)
    assert torch.allclose(frames[0].load(), read_clip(path, max_frames=1)[0], atol=1 / 255 + 1e-6)


def test_a_folder_of_video_files_is_one_clip_per_file(tmp_path: Path) -> None:
    _write_y4m(tmp_path / "b.y4m", 3)
    _write_y4m(tmp_path / "a.y4m", 2)
    clips = resolve_any_dataset(str(tmp_path))
    assert clips.clip_names == ["a.y4m", "b.y4m"]
    assert [c.load().shape[0] for c in clips] == [2, 3]


def test_an_image_folder_stays_an_image_set(tmp_path: Path) -> None:
    _write_frames(tmp_path, 2)
    assert not is_video_dataset(str(tmp_path))
    assert isinstance(resolve_any_dataset(str(tmp_path)), Dataset)


def test_an_unknown_name_lists_the_video_sets_too() -> None:
    with pytest.raises(UnknownDatasetError, match="sample-clips"):
        resolve_any_dataset("vimeo90k-nonexistent-set")
