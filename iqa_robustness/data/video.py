"""Video clips for the video-quality metrics: reading frames from folders and files, in chunks.

The benchmark (Antsiferova et al., "Comparing the robustness of modern no-reference image- and
video-quality metrics to adversarial attacks", AAAI 2024) tests video metrics on Derf's
``blue_sky`` (1920x1080, 250 frames, y4m) and the Vimeo-90k test triplets (448x256), and trains
universal perturbations on Vimeo-90k. A clip is a float32 tensor (T, 3, H, W), RGB in [0, 1].

Sources:

- a folder of frames, sorted by name with numbers compared as numbers (``im2`` before ``im10``);
  Vimeo-90k keeps one clip per folder, ``sequences/<id>/<id>/im1.png ...``
  (:func:`vimeo_clip_dirs`), three frames in the triplet set, seven in the septuplet set;
- a video file decoded with PyAV (FFmpeg): y4m, mp4 and anything else FFmpeg reads. YUV frames
  become RGB through FFmpeg's converter (BT.601 unless the file says otherwise); more than 8 bits
  per sample are kept as 16-bit RGB.

Long clips are read frame by frame or in chunks (:func:`iter_frames`, :func:`iter_clip_chunks`),
so a clip never has to sit in memory whole; attacking and scoring clips is the runner's
(:mod:`iqa_robustness.runner.clips`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_robustness.data.decode import IMAGE_EXTENSIONS, Size, load_image, resize_image

log = logging.getLogger(__name__)

FRAME_EXTENSIONS: frozenset[str] = IMAGE_EXTENSIONS | {".tif", ".tiff"}
VIMEO_LISTS = {
    "test": ("tri_testlist.txt", "sep_testlist.txt"),
    "train": ("tri_trainlist.txt", "sep_trainlist.txt"),
}


class VideoReadError(ValueError):
    """A clip that cannot be read: no frames, an unreadable file, or an unsupported source."""


# --------------------------------------------------------------------------- reading


def natural_key(name: str) -> list[Any]:
    """Sort key comparing digit runs as numbers: ``im2.png`` < ``im10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | Path) -> list[Path]:
    """The frame images of a folder in playback order (hidden files and other extensions left out)."""
    folder = Path(folder)
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".")
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _check_read_options(max_frames: int | None, stride: int, start: int) -> None:
    if stride < 1:
        raise ValueError(f"stride must be a positive number of frames, got {stride}")
    if start < 0:
        raise ValueError(f"start must be a frame index >= 0, got {start}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be positive or None (all frames), got {max_frames}")


def _frames_from_folder(folder: Path, size: Size, keep: Callable[[int], bool]) -> Iterator[torch.Tensor]:
    files = frame_files(folder)
    if not files:
        raise VideoReadError(
            f"no frame images ({', '.join(sorted(FRAME_EXTENSIONS))}) in {folder}; point at a folder of "
            "frames such as a Vimeo-90k clip (sequences/00001/0001) or at a video file"
        )
    for index, path in enumerate(files):
        if keep(index):
            yield load_image(path, size=size)


def _frames_from_file(path: Path, size: Size, keep: Callable[[int], bool]) -> Iterator[torch.Tensor]:
    import av  # FFmpeg bindings; imported here so image-only use does not load them

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise VideoReadError(f"cannot open video {path}: {exc}. Is it a video file FFmpeg can read?") from exc
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if not keep(index):
                    continue  # inter-coded frames must be decoded anyway; only the conversion is skipped
                deep = max(c.bits for c in frame.format.components) > 8
                rgb = frame.to_ndarray(format="rgb48le" if deep else "rgb24")
                scale = 65535.0 if deep else 255.0
                tensor = torch.from_numpy(rgb.astype(np.float32) / scale).permute(2, 0, 1).contiguous()
                yield resize_image(tensor, size)
        except av.FFmpegError as exc:
            raise VideoReadError(f"cannot decode {path}: {exc}") from exc


def iter_frames(
    source: str | Path,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    start: int = 0,
    size: Size = None,
) -> Iterator[torch.Tensor]:
    """Frames of a clip one at a time, each (3, H, W) float32 RGB in [0, 1].

    Args:
        source: a folder of frame images or a video file.
        max_frames: stop after this many frames (after ``start`` and ``stride``); ``None`` = all.
        stride: keep every ``stride``-th frame.
        start: index of the first frame kept.
        size: ``None`` native; ``int`` shrinks so the longer side is at most that; ``(H, W)`` exact.
    """
    _check_read_options(max_frames, stride, start)
    path = Path(source).expanduser()

    def keep(index: int) -> bool:
        return index >= start and (index - start) % stride == 0

    if path.is_dir():
        frames = _frames_from_folder(path, size, keep)
    elif path.is_file():
        frames = _frames_from_file(path, size, keep)
    else:
        raise FileNotFoundError(f"clip {path} not found: pass a folder of frames or a video file (y4m, mp4, ...)")
    for kept, frame in enumerate(frames, start=1):
        yield frame
        if max_frames is not None and kept >= max_frames:
            return


def iter_clip_chunks(
    source: str | Path,
    chunk_size: int,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    start: int = 0,
    size: Size = None,
) -> Iterator[torch.Tensor]:
    """Consecutive chunks (n <= chunk_size, 3, H, W) of a clip, so a long clip never sits in memory whole."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of frames, got {chunk_size}")
    chunk: list[torch.Tensor] = []
    for frame in iter_frames(source, max_frames=max_frames, stride=stride, start=start, size=size):
        chunk.append(frame)
        if len(chunk) == chunk_size:
            yield torch.stack(chunk)
            chunk = []
    if chunk:
        yield torch.stack(chunk)


def read_clip(
    source: str | Path,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    start: int = 0,
    size: Size = None,
) -> torch.Tensor:
    """A whole clip as (T, 3, H, W) float32 RGB in [0, 1]; options as in :func:`iter_frames`.

    Raises:
        VideoReadError: the source yields no frames or cannot be decoded.
    """
    frames = list(iter_frames(source, max_frames=max_frames, stride=stride, start=start, size=size))
    if not frames:
        raise VideoReadError(f"{source} gave no frames (start={start}, stride={stride}); check the options")
    return torch.stack(frames)


def vimeo_clip_dirs(root: str | Path, split: str | None = None) -> list[Path]:
    """The clip folders of a Vimeo-90k triplet or septuplet set.

    Args:
        root: the set's folder (holding ``sequences/`` and the list files) or its ``sequences/`` folder.
        split: ``"test"`` or ``"train"`` reads ``tri_<split>list.txt`` / ``sep_<split>list.txt``;
            ``None`` takes every ``sequences/<id>/<id>`` folder.
    """
    root = Path(root).expanduser()
    sequences = root / "sequences" if (root / "sequences").is_dir() else root
    if not sequences.is_dir():
        raise FileNotFoundError(f"Vimeo-90k folder {root} not found; pass the folder holding sequences/")
    if split is not None:
        if split not in VIMEO_LISTS:
            raise ValueError(f"split must be 'test', 'train' or None, got {split!r}")
        lists = [sequences.parent / name for name in VIMEO_LISTS[split]]
        found = next((p for p in lists if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"no {' or '.join(p.name for p in lists)} next to {sequences}")
        names = [line.strip() for line in found.read_text().splitlines() if line.strip()]
        return [sequences / name for name in names]
    return sorted((d for d in sequences.glob("*/*") if d.is_dir()), key=lambda d: natural_key(str(d)))
