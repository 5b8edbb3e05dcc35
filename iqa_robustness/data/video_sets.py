"""Video datasets: named sets and paths of clips, for the video metrics and as frames for the rest.

The benchmark (Antsiferova et al., AAAI 2024) tests on the Vimeo-90k test triplets (448x256, three
frames a clip) and on Derf's ``blue_sky`` (1920x1080, 250 frames, y4m). A :class:`VideoDataset` is an
ordered list of clips, read lazily with the readers of :mod:`iqa_robustness.data.video`:

- a video metric runs on each clip as a whole (T, 3, H, W): one result row per clip, with the
  clip's gain and the temporal flicker of its perturbation;
- an image metric, and universal-attack training, see the frames as images
  (:meth:`VideoDataset.frames`), named ``<clip>/<frame>``.

Named sets (registered in :mod:`iqa_robustness.data.registry`; ``iqa-robustness list datasets``):

- ``sample-clips``: three 16-frame clips of a camera panning across photographs bundled with
  scikit-image (offline, no download), 224x224;
- ``vimeo``: Vimeo-90k triplets (or septuplets), the clips of ``tri_testlist.txt`` /
  ``sep_testlist.txt`` when present; found through ``$IQA_ROBUSTNESS_VIMEO`` or
  ``$IQA_ROBUSTNESS_DATA/vimeo``; ``vimeo-train``: the same folder's train list (the benchmark
  trains universal perturbations for video metrics on it);
- ``blue-sky``: Derf's ``blue_sky`` y4m, through ``$IQA_ROBUSTNESS_BLUE_SKY`` (the file or its
  folder) or ``$IQA_ROBUSTNESS_DATA/blue-sky``.

Paths: a video file (y4m, mp4, mkv, avi, mov, webm) is a one-clip set; a folder with
``sequences/`` is a Vimeo-90k set; a folder without images of its own whose subfolders hold frames,
or which holds video files, is one clip per subfolder or file. Any other folder is an image set.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqa_robustness.data.decode import Size, resize_image
from iqa_robustness.data.images import (
    Dataset,
    ImageItem,
)
from iqa_robustness.data.video import (
    FRAME_EXTENSIONS,
    VIMEO_LISTS,
    VideoReadError,
    frame_files,
    iter_clip_chunks,
    iter_frames,
    natural_key,
    read_clip,
    vimeo_clip_dirs,
)

VIDEO_FILE_EXTENSIONS: frozenset[str] = frozenset({".y4m", ".mp4", ".mkv", ".avi", ".mov", ".webm"})


# --------------------------------------------------------------------------- clips


@dataclasses.dataclass(frozen=True)
class ClipItem:
    """One clip of a dataset, decoded only when :meth:`load` is called.

    Attributes:
        clip_name: the name in result rows (``00001/0001`` for Vimeo, the file name for a video).
        source: the frame folder or video file; for built-in clips a description.
        max_frames, size: reading options (first N frames; longest side or exact (H, W)).
    """

    clip_name: str
    source: str
    path: Path | None = None
    max_frames: int | None = None
    size: Size = None
    _frames: Callable[[], list[torch.Tensor]] | None = dataclasses.field(default=None, repr=False, compare=False)

    def load(self) -> torch.Tensor:
        """The clip as (T, 3, H, W) float32 RGB in [0, 1]."""
        if self._frames is not None:
            frames = self._frames()[: self.max_frames]
            return torch.stack([resize_image(f, self.size) for f in frames])
        return read_clip(self.path, max_frames=self.max_frames, size=self.size)

    def chunks(self, frames: int) -> Iterator[torch.Tensor]:
        """The clip in consecutive chunks of at most ``frames`` frames, each (n, 3, H, W), read as they are needed."""
        if frames < 1:
            raise ValueError(f"chunks need a positive number of frames, got {frames}")
        if self._frames is None:
            yield from iter_clip_chunks(self.path, frames, max_frames=self.max_frames, size=self.size)
            return
        source = self._frames()[: self.max_frames]
        for start in range(0, len(source), frames):
            yield torch.stack([resize_image(f, self.size) for f in source[start : start + frames]])

    def frame_items(self) -> list[ImageItem]:
        """The clip's frames as image items named ``<clip>/<frame>``."""
        if self._frames is not None:
            count = len(self._frames()[: self.max_frames])
            return [
                ImageItem(f"{self.clip_name}/{i:03d}", f"{self.source} frame {i}", size=self.size,
                          _reader=_builtin_frame, _reader_arg=(self._frames, i))
                for i in range(count)
            ]  # fmt: skip
        if self.path.is_dir():
            files = frame_files(self.path)[: self.max_frames]
            if not files:
                raise VideoReadError(f"no frame images in {self.path}")
            return [
                ImageItem(f"{self.clip_name}/{p.name}", str(p), path=p, size=self.size, _reader_arg=p) for p in files
            ]
        count, native = _probe_video(self.path)
        if self.max_frames is not None:
            count = min(count, self.max_frames)
        return [
            ImageItem(f"{self.clip_name}/{i:04d}", f"{self.path} frame {i}", path=self.path, size=self.size,
                      native_size=native, _reader=_video_frame, _reader_arg=(self.path, i))
            for i in range(count)
        ]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class VideoDataset:
    """A named, ordered list of lazily read clips."""

    name: str
    clips: tuple[ClipItem, ...] = dataclasses.field(repr=False)
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[ClipItem]:
        return iter(self.clips)

    @property
    def clip_names(self) -> list[str]:
        return [c.clip_name for c in self.clips]

    @functools.cached_property
    def _frames(self) -> Dataset:
        items = tuple(item for clip in self.clips for item in clip.frame_items())
        return Dataset(name=self.name, items=items, root=self.root)

    def frames(self) -> Dataset:
        """Every frame of every clip as an image dataset (for image metrics and universal training)."""
        return self._frames


# --------------------------------------------------------------------------- frame readers


def _to_image(frame: torch.Tensor) -> Image.Image:
    """A decoded frame (3, H, W) in [0, 1] as the 8-bit image an :class:`ImageItem` reader returns."""
    return Image.fromarray((frame.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))


def _builtin_frame(arg: tuple[Callable[[], list[torch.Tensor]], int]) -> Image.Image:
    frames, index = arg
    return _to_image(frames()[index])


class _SequentialDecoder:
    """Hands out the frames of one video file by index, decoding forwards with :func:`iter_frames`.

    Frames are requested in order (a dataset is read in order), so each file is decoded once; a
    request for an earlier frame starts the file again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._frames: Iterator[tuple[int, torch.Tensor]] | None = None
        self._next = 0

    def frame(self, index: int) -> torch.Tensor:
        if self._frames is None or index < self._next:
            self._frames, self._next = enumerate(iter_frames(self.path)), 0
        for i, frame in self._frames:
            self._next = i + 1
            if i == index:
                return frame
        raise VideoReadError(f"{self.path} has no frame {index}")


_DECODERS: dict[Path, _SequentialDecoder] = {}


def _video_frame(arg: tuple[Path, int]) -> Image.Image:
    path, index = arg
    return _to_image(_DECODERS.setdefault(path, _SequentialDecoder(path)).frame(index))


@functools.lru_cache(maxsize=64)
def _probe_video(path: Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (H, W)) of a video file, counting packets (no decoding)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path} has no video stream")
            stream = container.streams.video[0]
            size = (stream.codec_context.height, stream.codec_context.width)
            count = sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as exc:
        raise VideoReadError(f"cannot read video {path}: {exc}. Is it a video file FFmpeg can read?") from exc
    if count == 0:
        raise VideoReadError(f"{path} has no frames")
    return count, size


# --------------------------------------------------------------------------- the built-in clips

# (clip name, skimage.data function): a 224x224 window pans 8 px a frame across the photograph.
_SAMPLE_CLIPS: tuple[tuple[str, str], ...] = (("astronaut", "astronaut"), ("coffee", "coffee"), ("rocket", "rocket"))
SAMPLE_CLIP_FRAMES = 16
_SAMPLE_CLIP_SIDE = 224
_PAN_STEP = 8


@functools.cache
def _panned_frames(function: str) -> list[torch.Tensor]:
    import skimage.data

    photo = torch.from_numpy(np.asarray(getattr(skimage.data, function)()).copy()).permute(2, 0, 1).float() / 255.0
    side, step = _SAMPLE_CLIP_SIDE, _PAN_STEP
    height, width = photo.shape[-2:]
    top = (height - side) // 2
    frames = []
    for t in range(SAMPLE_CLIP_FRAMES):
        left = min(t * step, width - side)
        down = min(top + (t * step) // 4, height - side)  # a slight downward drift as well
        frames.append(photo[:, down : down + side, left : left + side].contiguous())
    return frames


def sample_clips(*, max_clips: int | None = None, max_frames: int | None = None, size: Size = None) -> VideoDataset:
    """Three 16-frame clips panning across photographs bundled with scikit-image (read offline)."""
    clips = tuple(
        ClipItem(
            name,
            f"skimage.data.{function} panned",
            max_frames=max_frames,
            size=size,
            _frames=functools.partial(_panned_frames, function),
        )
        for name, function in _SAMPLE_CLIPS
    )
    return VideoDataset("sample-clips", clips[:max_clips])


# --------------------------------------------------------------------------- named sets and paths


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_FILE_EXTENSIONS


def _has_frames(folder: Path) -> bool:
    """Whether ``folder`` holds a frame image (stops at the first one)."""
    return any(p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".") for p in folder.iterdir())


def _clip_sources(folder: Path) -> list[Path]:
    """Clip folders (subfolders holding frames) and video files directly inside ``folder``."""
    sources = [
        p
        for p in folder.iterdir()
        if not p.name.startswith(".") and (is_video_file(p) or (p.is_dir() and _has_frames(p)))
    ]
    return sorted(sources, key=lambda p: natural_key(p.name))


def _vimeo_sequences(folder: Path) -> Path | None:
    """The ``sequences/`` folder of a Vimeo-90k set given as its root or as ``sequences/`` itself."""
    if (folder / "sequences").is_dir():
        return folder / "sequences"
    return folder if folder.name == "sequences" and folder.is_dir() else None


def is_clip_folder(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    if _vimeo_sequences(folder) is not None:
        return True
    return not _has_frames(folder) and bool(_clip_sources(folder))


def clips_from(
    root: Path, *, max_clips: int | None, max_frames: int | None, size: Size, split: str = "test"
) -> tuple[ClipItem, ...]:
    if is_video_file(root):
        sources = [root]
        base = root.parent
    elif (sequences := _vimeo_sequences(root)) is not None:
        lists = [sequences.parent / n for n in VIMEO_LISTS[split]]
        sources = vimeo_clip_dirs(sequences, split=split if any(p.is_file() for p in lists) else None)
        base = sequences
    else:
        sources = _clip_sources(root)
        base = root
    if not sources:
        raise VideoReadError(f"no clips in {root}: expected video files or folders of frames")
    sources = sources[:max_clips]
    return tuple(
        ClipItem(
            source.relative_to(base).as_posix() if source != base else source.name,
            str(source),
            path=source,
            max_frames=max_frames,
            size=size,
        )
        for source in sources
    )
