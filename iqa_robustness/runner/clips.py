"""Clip cases: a video metric against whole clips, one row per clip, with the perturbation's flicker.

The benchmark (Antsiferova et al., AAAI 2024) tests video metrics on Derf's ``blue_sky`` and the
Vimeo-90k test clips. An image-specific attack runs on the whole clip as a batch of frames and its
loss is the metric's clip score, so every frame moves along its own slice of the clip-level
gradient (:func:`attack_clip`); that needs the clip in memory (the metric checkpoints its backbone
chunk by chunk). A universal perturbation goes through :meth:`UniversalAttack.apply
<iqa_robustness.attacks.universal.UniversalAttack.apply>` exactly as on images (tiling, a
generator's per-frame output, the amplitude, the optional clamp) and a clip is read, perturbed and
scored chunk by chunk (:func:`universal_clip`), so a 1080p clip of 250 frames never sits in memory
whole: a metric made of per-frame ``features`` and a clip ``head`` (VSFA, MDTVSFA) keeps only the
features. Rows carry the per-frame means of PSNR and SSIM, the clip's MSE, and the temporal flicker
``mean |p[t+1] - p[t]|`` of the perturbation ``p`` (zero for one delta added to every frame).
With ``on_bad_image="skip"`` a clip whose frames are smaller than the metric's ``min_side``, that
cannot be read, or whose clean score is NaN or infinite is a skipped row with its reason.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.attacks.universal import UniversalAttack
from iqa_robustness.conventions import dataset_slug
from iqa_robustness.data.errors import ImageReadError
from iqa_robustness.data.video import VideoReadError
from iqa_robustness.data.video_sets import ClipItem, VideoDataset
from iqa_robustness.metrics import Metric
from iqa_robustness.progress import Progress
from iqa_robustness.runner.cases import Outcome
from iqa_robustness.runner.config import SuiteConfig, sync_device
from iqa_robustness.runner.grid import CaseSpec
from iqa_robustness.runner.resources import Resources, too_small_reason
from iqa_robustness.scores.formulas import image_distortion
from iqa_robustness.scores.rows import skipped_row

log = logging.getLogger(__name__)


class FlickerMeter:
    """The temporal flicker ``mean |p[t+1] - p[t]|`` of a perturbation fed frame chunk by frame chunk.

    Chunk boundaries are invisible: the last frame of one chunk is compared with the first of the
    next. Zero for a perturbation that is the same in every frame (a universal delta); a clip of
    one frame has no flicker (0.0).
    """

    def __init__(self) -> None:
        self._sum = 0.0
        self._count = 0
        self._last: torch.Tensor | None = None

    def add(self, perturbation: torch.Tensor) -> FlickerMeter:
        """Add the next frames (n, ...) of the perturbation."""
        p = perturbation.detach().double()
        frames = p if self._last is None else torch.cat([self._last, p])
        if frames.shape[0] > 1:
            self._sum += float((frames[1:] - frames[:-1]).abs().sum())
            self._count += frames[1:].numel()
        self._last = p[-1:]
        return self

    @property
    def value(self) -> float:
        return self._sum / self._count if self._count else 0.0


def temporal_flicker(perturbation: torch.Tensor | np.ndarray) -> float:
    """Mean absolute frame-to-frame change of a whole perturbation (T, ...): ``mean |p[t+1] - p[t]|``."""
    p = torch.as_tensor(perturbation)
    return FlickerMeter().add(p).value if p.ndim >= 1 else 0.0


@dataclasses.dataclass
class ClipResult:
    """One clip under one attack.

    Attributes:
        clip_name, test_dataset: where the clip came from.
        clear, attacked: raw metric scores.
        psnr, ssim: means over frames of the per-frame values; ``mse`` over the whole clip.
        flicker: :func:`temporal_flicker` of ``attacked - clean`` frames.
        max_linf: the largest absolute pixel change.
        seconds: attack time (excluding clean and attacked scoring).
        amplitude, train_dataset: for universal perturbations.
    """

    clip_name: str
    test_dataset: str
    clear: float
    attacked: float
    psnr: float
    ssim: float
    mse: float
    flicker: float
    n_frames: int
    max_linf: float = 0.0
    seconds: float = float("nan")
    amplitude: float | None = None
    train_dataset: str | None = None

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


class _ClipScorer:
    """A clip's score from its chunks: per-frame features kept, frames dropped, when the metric allows."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self._split = getattr(metric, "features", None) is not None and getattr(metric, "head", None) is not None
        self._parts: list[torch.Tensor] = []

    @torch.no_grad()
    def add(self, chunk: torch.Tensor) -> None:
        self._parts.append(self.metric.features(chunk) if self._split else chunk)

    @torch.no_grad()
    def score(self) -> float:
        if not self._parts:
            raise ValueError(f"{self.metric.name}: a clip with no frames has no score")
        whole = torch.cat(self._parts)
        return float((self.metric.head(whole) if self._split else self.metric(whole)).reshape(-1)[0])


def score_chunks(metric: Metric, chunks: Iterable[torch.Tensor]) -> float:
    """Raw clip score of a video metric from consecutive chunks (n, 3, H, W) of one clip."""
    scorer = _ClipScorer(metric)
    for chunk in chunks:
        scorer.add(chunk.to(metric.device))
    return scorer.score()


class _Distortion:
    """Per-frame PSNR/SSIM, the clip's MSE, L-inf and flicker, accumulated chunk by chunk."""

    def __init__(self) -> None:
        self.psnr: list[float] = []
        self.ssim: list[float] = []
        self.squared = 0.0
        self.values = 0
        self.max_linf = 0.0
        self.flicker = FlickerMeter()

    def add(self, clean: torch.Tensor, adversarial: torch.Tensor) -> None:
        dist = image_distortion(clean, adversarial)
        self.psnr.extend(float(v) for v in dist["psnr"])
        self.ssim.extend(float(v) for v in dist["ssim"])
        delta = (adversarial - clean).double()
        self.squared += float((delta**2).sum())
        self.values += delta.numel()
        self.max_linf = max(self.max_linf, float(delta.abs().max()))
        self.flicker.add(delta)

    def fields(self) -> dict[str, Any]:
        return {
            "psnr": float(np.mean(self.psnr)),
            "ssim": float(np.mean(self.ssim)),
            "mse": self.squared / self.values if self.values else math.nan,
            "flicker": self.flicker.value,
            "n_frames": len(self.psnr),
            "max_linf": self.max_linf,
        }


def _check_video_metric(metric: Metric) -> None:
    if not metric.spec.is_video:
        raise ValueError(
            f"metric {metric.name!r} is an image metric ({metric.spec.kind}); attack its frames as an image "
            "batch instead, or choose a video metric (list_metrics(kind='nr-video'))"
        )


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
        raise ValueError(f"{attack.name} is a universal attack: train it with fit(), then use universal_clip()")
    clip = clip.to(metric.device)
    if clear is None:
        clear = score_chunks(metric, [clip])
    sync_device(clip.device)
    start = time.perf_counter()
    adversarial = attack(metric, clip)
    sync_device(clip.device)
    seconds = time.perf_counter() - start
    distortion = _Distortion()
    distortion.add(clip, adversarial)
    attacked = score_chunks(metric, [adversarial])
    log.info("%s on %s: %s %.4f -> %.4f", attack.name, clip_name, metric.name, clear, attacked)
    result = ClipResult(
        clip_name,
        test_dataset,
        clear,
        attacked,
        seconds=seconds,
        **distortion.fields(),  # type: ignore[arg-type]
    )
    return adversarial, result


def universal_clip(
    metric: Metric,
    attack: UniversalAttack,
    perturbation: Perturbation,
    chunks: Iterable[torch.Tensor],
    amplitude: float,
    *,
    clamp: bool = False,
    clip_name: str = "clip",
    test_dataset: str = "",
    train_dataset: str | None = None,
    clear: float | None = None,
    keep: Any = None,
) -> ClipResult:
    """A universal perturbation on every frame of a clip read in chunks, through ``attack.apply``.

    Args:
        metric: a video metric.
        attack: the universal attack (its ``apply`` tiles the delta or runs the generator per frame).
        perturbation: from :meth:`~iqa_robustness.attacks.universal.UniversalAttack.fit` or a file.
        chunks: consecutive (n, 3, H, W) chunks of the clip, in [0, 1].
        amplitude: the factor k (the benchmark uses 0.2, 0.4, 0.8).
        clamp: clamp to [0, 1] (the MSU code does not: the metric sees out-of-range pixels).
        clear: the clip's clean score when already known; else computed in the same pass.
        keep: called as ``keep(frame_index, clean, adversarial)`` with the first chunk's middle frame.
    """
    _check_video_metric(metric)
    clean_scorer = None if clear is not None else _ClipScorer(metric)
    attacked_scorer = _ClipScorer(metric)
    distortion = _Distortion()
    seconds = 0.0
    for index, chunk in enumerate(chunks):
        chunk = chunk.to(metric.device)
        sync_device(chunk.device)
        start = time.perf_counter()
        adversarial = attack.apply(perturbation, chunk, amplitude, clamp=clamp)
        sync_device(chunk.device)
        seconds += time.perf_counter() - start
        if clean_scorer is not None:
            clean_scorer.add(chunk)
        attacked_scorer.add(adversarial)
        distortion.add(chunk, adversarial)
        if index == 0 and keep is not None:
            middle = chunk.shape[0] // 2
            keep(middle, chunk[middle], adversarial[middle])
    if clean_scorer is not None:
        clear = clean_scorer.score()
    return ClipResult(
        clip_name,
        test_dataset,
        float(clear),  # type: ignore[arg-type]
        attacked_scorer.score(),
        seconds=seconds,
        amplitude=amplitude,
        train_dataset=train_dataset,
        **distortion.fields(),
    )


class ClipCaseRunner:
    """Image-specific and universal attacks on the clips of a video set, against a video metric."""

    def __init__(self, resources: Resources, config: SuiteConfig) -> None:
        self.resources = resources
        self.config = config

    def run(self, case: CaseSpec, attack: Attack, perturbation: Perturbation | None) -> Outcome:
        res = self.resources
        metric = res.video_metric(case.metric)
        dataset = res.dataset(case.dataset, case.metric)
        if not isinstance(dataset, VideoDataset):
            raise TypeError(f"{case.dataset} is not a video set; the image runner takes it")
        clean = res.clean_scores(case.metric, case.dataset)  # filled here, clip by clip, once per metric and set
        out = Outcome()
        progress = Progress(case.id, len(dataset), unit="clips")
        for item in dataset:
            result, reason = self._screened_clip(case, attack, perturbation, metric, item, clean, out)
            if result is None:
                log.warning("%s on %s: skipping clip %s (%s)", case.metric, case.dataset, item.clip_name, reason)
                out.rows.append(self._skipped(case, item.clip_name, reason, clean.get(item.clip_name, math.nan)))
                continue
            out.rows.append(result.row())
            out.seconds += result.seconds
            out.frames += result.n_frames
            out.max_linf = max(out.max_linf, result.max_linf)
            progress.advance()
        return out

    def _screened_clip(
        self,
        case: CaseSpec,
        attack: Attack,
        perturbation: Perturbation | None,
        metric: Metric,
        item: ClipItem,
        clean: dict[str, float],
        out: Outcome,
    ) -> tuple[ClipResult, None] | tuple[None, str]:
        """The clip's result, or (``on_bad_image="skip"``) None and why the clip is skipped."""
        if not self.config.skip_bad_images:
            result = self._one_clip(case, attack, perturbation, metric, item, clean, out)
            clean[item.clip_name] = result.clear
            return result, None
        try:
            reason = self._too_small(metric, item)
            if reason is not None:
                return None, reason
            result = self._one_clip(case, attack, perturbation, metric, item, clean, out)
        except (VideoReadError, ImageReadError) as exc:
            return None, f"unreadable: {exc}"
        clean[item.clip_name] = result.clear
        if not math.isfinite(result.clear):
            return None, f"clean score is {result.clear}"
        return result, None

    @staticmethod
    def _too_small(metric: Metric, item: ClipItem) -> str | None:
        frames = item.frame_items()
        return too_small_reason(metric.name, metric.spec.min_side, frames[0].shape) if frames else None

    @staticmethod
    def _skipped(case: CaseSpec, name: str, reason: str, clear: float) -> dict[str, Any]:
        universal = case.amplitude is not None
        return skipped_row(
            name,
            dataset_slug(case.dataset),
            reason,
            clear=clear,
            train_dataset=dataset_slug(case.train_dataset or "") if universal else None,
            amplitude=case.amplitude,
            clips=True,
        )

    def _one_clip(
        self,
        case: CaseSpec,
        attack: Attack,
        perturbation: Perturbation | None,
        metric: Metric,
        item: ClipItem,
        clean: dict[str, float],
        out: Outcome,
    ) -> ClipResult:
        name, test_dataset = item.clip_name, dataset_slug(case.dataset)
        limit = self.config.pairs_to_save

        def keep(frame: int, x: torch.Tensor, adv: torch.Tensor) -> None:
            out.keep_pair(limit, f"{name.replace('/', '_')}_f{frame}", x, adv)

        if perturbation is not None:
            if not isinstance(attack, UniversalAttack):
                raise TypeError(f"{attack.name} is not a universal attack; it takes no trained perturbation")
            return universal_clip(
                metric,
                attack,
                perturbation,
                item.chunks(self.config.clip_chunk_frames),
                case.amplitude,  # type: ignore[arg-type]
                clamp=self.config.clamp_uap,
                clip_name=name,
                test_dataset=test_dataset,
                train_dataset=dataset_slug(case.train_dataset or ""),
                clear=clean.get(name),
                keep=keep,
            )
        clip = item.load().to(self.resources.device)
        adversarial, result = attack_clip(
            metric, attack, clip, clip_name=name, test_dataset=test_dataset, clear=clean.get(name)
        )
        middle = clip.shape[0] // 2
        keep(middle, clip[middle], adversarial[middle])
        return result
