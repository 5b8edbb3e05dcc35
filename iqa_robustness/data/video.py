"""Video clips for the video-quality metrics: reading, chunking, attacking, flicker.

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

Attacks: an image-specific attack runs on the whole clip as a batch of frames, and its loss is the
video metric's clip score, so every frame is perturbed along its own slice of the clip-level
gradient (:func:`attack_clip`). A universal perturbation is tiled from the top-left corner to the
frame size, scaled by the amplitude and added to every frame (:func:`universal_clip`). Both report
per-clip gains, distortion and the temporal flicker of the perturbation (:func:`temporal_flicker`).
Long clips are read in chunks (:func:`iter_clip_chunks`, :func:`score_source`); the metric itself
runs its backbone in chunks and, with gradients, checkpoints each chunk to bound memory.
Image datasets under a video metric are one-frame clips, one per image (:func:`as_image_metric`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_robustness.attacks.base import Attack
from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.conventions import orient
from iqa_robustness.data.images import IMAGE_EXTENSIONS, Size, load_image, resize_image
from iqa_robustness.metrics.base import Metric
from iqa_robustness.scores.formulas import image_distortion

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


# --------------------------------------------------------------------------- scoring


@torch.no_grad()
def score_source(metric: Metric, source: str | Path, chunk_size: int = 16, **read_options: Any) -> float:
    """Raw score of a clip on disk, read chunk by chunk.

    For a metric made of per-frame ``features`` and a clip-level ``head`` (VSFA, MDTVSFA) only the
    features of the whole clip are kept in memory; other video metrics get the assembled clip.
    """
    device = metric.device
    chunks = iter_clip_chunks(source, chunk_size, **read_options)
    features = getattr(metric, "features", None)
    head = getattr(metric, "head", None)
    if features is not None and head is not None:
        feats = [features(chunk.to(device)) for chunk in chunks]
        if not feats:
            raise VideoReadError(f"{source} gave no frames; check the options")
        return float(head(torch.cat(feats)).reshape(-1)[0])
    clip = torch.cat([chunk.to(device) for chunk in chunks])
    return float(metric(clip)[0])


def temporal_flicker(perturbation: torch.Tensor | np.ndarray) -> float:
    """Mean absolute frame-to-frame change of a perturbation (T, ...): ``mean |p[t+1] - p[t]|``.

    Zero for a perturbation that is the same in every frame (a universal one); one clip frame
    alone has no flicker (0.0).
    """
    p = torch.as_tensor(perturbation).detach().double()
    if p.ndim < 1 or p.shape[0] < 2:
        return 0.0
    return float((p[1:] - p[:-1]).abs().mean())


class FramesAsClips(Metric):
    """A video metric scoring an image batch (N, 3, H, W) as N one-frame clips.

    Image datasets and universal-perturbation training feed batches of independent images; a
    video metric would read such a batch as one clip. This wrapper scores each image on its own,
    so every image gets its own score and gradient, and batching changes nothing.
    """

    def __init__(self, video_metric: Metric) -> None:
        spec = dataclasses.replace(video_metric.spec, kind="nr-image")
        super().__init__(spec, video_metric.weights_mode)
        self.video_metric = video_metric

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.video_metric.score(frame) for frame in x.split(1)])


def as_image_metric(metric: Metric) -> Metric:
    """``metric`` itself for an image metric; a :class:`FramesAsClips` view of a video metric."""
    return FramesAsClips(metric) if metric.spec.is_video else metric


@dataclasses.dataclass
class ClipResult:
    """One clip under one attack.

    Attributes:
        clip_name, test_dataset: where the clip came from.
        clear, attacked: raw metric scores (orientation given by ``lower_better``).
        psnr, ssim: means over frames of the per-frame values; ``mse`` over the whole clip.
        flicker: :func:`temporal_flicker` of ``attacked - clean`` frames.
        seconds: attack time (excluding clean and attacked scoring).
        amplitude, train_dataset: for universal perturbations.
    """

    clip_name: str
    test_dataset: str
    clear: float
    attacked: float
    lower_better: bool
    psnr: float
    ssim: float
    mse: float
    flicker: float
    n_frames: int
    seconds: float = float("nan")
    amplitude: float | None = None
    train_dataset: str | None = None

    @property
    def gain(self) -> float:
        """Absolute gain of oriented quality (higher = the attack raised the quality more)."""
        return orient(self.attacked - self.clear, self.lower_better)

    @property
    def relative_gain(self) -> float:
        """``(a - c) / (c + 1)`` on oriented quality, as the benchmark's relative gain."""
        return self.gain / (orient(self.clear, self.lower_better) + 1.0)

    def row(self) -> dict[str, Any]:
        """The MSU CSV columns (``rel_gain`` = attacked / clear there) plus flicker and frame count."""
        row: dict[str, Any] = {"image_name": self.clip_name, "test_dataset": self.test_dataset}
        if self.train_dataset is not None:
            row["train_dataset"] = self.train_dataset
        row |= {"clear": self.clear, "attacked": self.attacked}
        if self.amplitude is not None:
            row["amplitude"] = self.amplitude
        rel = self.attacked / self.clear if self.clear else float("nan")
        row |= {"rel_gain": rel, "psnr": self.psnr, "ssim": self.ssim, "mse": self.mse}
        row |= {"flicker": self.flicker, "n_frames": self.n_frames}
        return row


def _check_video_metric(metric: Metric) -> None:
    if not metric.spec.is_video:
        raise ValueError(
            f"metric {metric.name!r} is an image metric ({metric.spec.kind}); attack its frames as an image "
            "batch instead, or choose a video metric (list_metrics(kind='nr-video'))"
        )


def _clip_result(
    metric: Metric, clip: torch.Tensor, attacked_clip: torch.Tensor, clear: float, **fields: Any
) -> ClipResult:
    with torch.no_grad():
        attacked = float(metric(attacked_clip)[0])
    dist = image_distortion(clip, attacked_clip)
    return ClipResult(
        clear=clear,
        attacked=attacked,
        lower_better=metric.lower_better,
        psnr=float(np.mean(dist["psnr"])),
        ssim=float(np.mean(dist["ssim"])),
        mse=float(torch.mean((attacked_clip.double() - clip.double()) ** 2)),
        flicker=temporal_flicker(attacked_clip - clip),
        n_frames=int(clip.shape[0]),
        **fields,
    )


def _clean_score(metric: Metric, clip: torch.Tensor, clear: float | None) -> float:
    if clear is not None:
        return clear
    with torch.no_grad():
        return float(metric(clip)[0])


def attack_clip(
    metric: Metric,
    attack: Attack,
    clip: torch.Tensor,
    *,
    clip_name: str = "clip",
    test_dataset: str = "",
    clear: float | None = None,
) -> tuple[torch.Tensor, ClipResult]:
    """Run an image-specific attack on every frame of a clip against the video metric.

    The clip (T, 3, H, W) goes to the attack as a batch of T frames; the attack's loss is the
    metric's clip loss, so each frame moves along its part of the clip-level gradient. ``clear``
    is the clip's clean score when already known (the suite scores each clip once).

    Returns:
        The attacked clip and its :class:`ClipResult`.
    """
    _check_video_metric(metric)
    if attack.universal:
        raise ValueError(
            f"{attack.name} is a universal attack: train it with fit(), then apply it to the clip with universal_clip()"
        )
    clip = clip.to(metric.device)
    clear = _clean_score(metric, clip, clear)
    start = time.perf_counter()
    adversarial = attack(metric, clip)
    if clip.device.type == "cuda":
        torch.cuda.synchronize(clip.device)
    seconds = time.perf_counter() - start
    result = _clip_result(
        metric, clip, adversarial, clear, clip_name=clip_name, test_dataset=test_dataset, seconds=seconds
    )
    log.info(
        "%s on %s: %s %.4f -> %.4f (flicker %.5f)",
        attack.name,
        clip_name,
        metric.name,
        clear,
        result.attacked,
        result.flicker,
    )
    return adversarial, result


def universal_clip(
    metric: Metric,
    clip: torch.Tensor,
    perturbation: Perturbation | torch.Tensor,
    amplitude: float,
    *,
    clamp: bool = False,
    clip_name: str = "clip",
    test_dataset: str = "",
    train_dataset: str | None = None,
    clear: float | None = None,
) -> tuple[torch.Tensor, ClipResult]:
    """Add a universal perturbation to every frame of a clip and score it.

    Args:
        metric: a video metric.
        clip: (T, 3, H, W) in [0, 1].
        perturbation: a trained :class:`~attacks.perturbation.Perturbation` or a delta (1, 3, h, w),
            tiled from the top-left corner to the frame size. A delta is the same on every frame;
            an image-conditioned generator makes one per frame (its flicker is not zero).
        amplitude: the factor k (the benchmark uses 0.2, 0.4, 0.8).
        clamp: clamp to [0, 1] (the MSU code does not: the metric sees out-of-range pixels).
        clear: the clip's clean score when already known.
    """
    _check_video_metric(metric)
    if isinstance(perturbation, torch.Tensor):
        perturbation = Perturbation(delta=perturbation)
    clip = clip.to(metric.device)
    clear = _clean_score(metric, clip, clear)
    with torch.no_grad():
        start = time.perf_counter()
        attacked_clip = clip + amplitude * perturbation.perturbation_for(clip)
        if clamp:
            attacked_clip = attacked_clip.clamp(0.0, 1.0)
        seconds = time.perf_counter() - start
    result = _clip_result(
        metric,
        clip,
        attacked_clip,
        clear,
        clip_name=clip_name,
        test_dataset=test_dataset,
        amplitude=amplitude,
        train_dataset=train_dataset,
        seconds=seconds,
    )
    return attacked_clip, result
