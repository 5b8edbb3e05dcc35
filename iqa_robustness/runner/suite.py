"""Run one grid case: metric x attack x dataset [x train set x amplitude] -> :class:`CaseResult`.

The flow is the benchmark's: clean scores (computed once per metric and dataset, shared by all
attacks, without gradients), the attack on equal-size batches, attacked scores, per-image PSNR /
SSIM / MSE, and the group scores of METHODOLOGY.md. Expensive objects (metric models, datasets,
clean scores, trained perturbations) are cached on the :class:`Suite`, which the pytest plugin
keeps for the whole session.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import math
import resource
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.spec import AttackSpec, parse_attack_spec, parse_attack_specs
from iqa_robustness.conventions import AMPLITUDES, CPU_UAP_MAX_STEPS, dataset_slug
from iqa_robustness.data.images import Dataset, iter_batches
from iqa_robustness.data.video import FramesAsClips, as_image_metric, attack_clip, universal_clip
from iqa_robustness.data.video_sets import VideoDataset, is_video_dataset, resolve_any_dataset
from iqa_robustness.metrics import Metric, create_metric, get_spec
from iqa_robustness.runner.case import CaseResult
from iqa_robustness.scores.formulas import image_distortion, score_group

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """One point of the grid. Its ``id`` is the pytest id and the results' file stem.

    ``attack_spec`` is the attack with its hyperparameter values (a spec string such as
    ``"ifgsm(eps=4/255)"`` is parsed); :attr:`attack` is its label, the name alone for the defaults.
    """

    metric: str
    attack_spec: AttackSpec
    dataset: str
    amplitude: float | None = None
    train_dataset: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attack_spec, str):
            object.__setattr__(self, "attack_spec", parse_attack_spec(self.attack_spec))

    @property
    def attack(self) -> str:
        """``ifgsm``, or ``ifgsm(eps=0.01569,iters=20)`` with values: the attack as results name it."""
        return self.attack_spec.label

    @property
    def id(self) -> str:
        parts = [self.attack, self.metric, dataset_slug(self.dataset)]
        if self.train_dataset is not None:
            parts.append(f"on-{dataset_slug(self.train_dataset)}")
        if self.amplitude is not None:
            parts.append(f"amp{self.amplitude:g}")
        return "-".join(parts)

    @property
    def universal(self) -> bool:
        return self.attack_spec.cls.universal


def build_grid(
    metrics: Sequence[str],
    attacks: Sequence[str | AttackSpec],
    datasets: Sequence[str],
    amplitudes: Sequence[float] = AMPLITUDES,
    train_datasets: Sequence[str] = ("sample",),
) -> list[CaseSpec]:
    """Every compatible combination, in a stable order (metric-major, so one worker keeps one model).

    ``attacks`` are specs or spec strings (``ifgsm``, ``*fgsm``, ``ifgsm(eps=4/255)``).
    """
    specs = parse_attack_specs(attacks)
    grid: list[CaseSpec] = []
    for m in metrics:
        for a in specs:
            for d in datasets:
                if a.cls.universal:
                    grid.extend(CaseSpec(m, a, d, amp, t) for t in train_datasets for amp in amplitudes)
                else:
                    grid.append(CaseSpec(m, a, d))
    return grid


def stable_seed(base: int, *parts: object) -> int:
    """A per-case seed independent of execution order (xdist runs cases in any order)."""
    return (base + zlib.crc32("|".join(map(str, parts)).encode())) % (2**31 - 1)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux, bytes on macOS: the process high-water mark, not per case.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def sync_device(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock timings cover it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: Images per batch when the batch size is "auto"; CUDA out-of-memory halves it per metric.
AUTO_BATCH_SIZE = {"cuda": 32, "cpu": 8}


def call_in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn`` over ``batch`` in slices of at most ``chunk`` images, concatenated."""
    if chunk >= batch.shape[0]:
        return fn(batch)
    return torch.cat([fn(batch[i : i + chunk]) for i in range(0, batch.shape[0], chunk)])


@dataclasses.dataclass
class _Outcome:
    """What running an attack over a dataset gives, before the group scores."""

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    frames: int = 0  # images, or frames over all clips
    max_linf: float = 0.0
    pairs: list[tuple[str, torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SuiteConfig:
    """Everything a session shares; the pytest options map one-to-one onto these fields."""

    device: str = "auto"
    batch_size: int = 0  # 0 = auto: AUTO_BATCH_SIZE for the device
    weights_dir: str | None = None
    random_weights: bool = False
    max_images: int | None = None  # images of an image set, clips of a video set
    max_frames: int | None = None  # frames per clip of a video set
    image_size: int | None = None
    seed: int = 0
    results_dir: Path = Path("results")
    uap_file: str | None = None
    uap_steps: int | None = None  # exact training steps; None = the attacks' epochs (capped on the CPU)
    uap_full_epochs: bool = False  # the attacks' epochs also on the CPU
    clamp_uap: bool = False
    pairs_to_save: int = 2
    amp: str | None = None  # "fp16" / "bf16": metrics run under autocast (scores change; see `bench --amp`)
    channels_last: bool = False

    def resolved_batch_size(self, device: torch.device) -> int:
        return self.batch_size or AUTO_BATCH_SIZE["cuda" if device.type == "cuda" else "cpu"]

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def uap_training_steps(self, device: torch.device) -> tuple[int | None, int | None]:
        """``(steps, max_steps)`` for :meth:`attacks.universal.UniversalAttack.fit` on ``device``."""
        if self.uap_steps is not None:
            return self.uap_steps, None
        if self.uap_full_epochs or device.type == "cuda":
            return None, None
        return None, CPU_UAP_MAX_STEPS

    @property
    def weights(self) -> str | None:
        return "random" if self.random_weights else self.weights_dir


class Suite:
    """Session state: caches of metrics, datasets, clean scores and trained perturbations."""

    def __init__(self, config: SuiteConfig) -> None:
        self.config = config
        self.device = config.resolved_device()
        self._metrics: dict[str, Metric] = {}
        self._datasets: dict[tuple[str, bool], Dataset | VideoDataset] = {}
        self._clean: dict[tuple[str, str], dict[str, float]] = {}
        self._perturbations: dict[tuple[str, str, str], Any] = {}
        self.batch_size = config.resolved_batch_size(self.device)
        self._chunk: dict[str, int] = {}  # per metric: largest slice that fitted in memory

    def run_batched(self, metric_name: str, fn: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor):
        """``fn(batch)``; on CUDA out-of-memory, retried in halves (remembered for the metric) down to 1 image.

        Attacks and scores are per image (losses are summed over the batch), so slicing a batch
        does not change any result.
        """
        while True:
            chunk = self._chunk.get(metric_name, batch.shape[0])
            try:
                return call_in_chunks(fn, batch, chunk)
            except torch.cuda.OutOfMemoryError:
                if chunk <= 1:
                    raise
                self._chunk[metric_name] = max(1, min(chunk, batch.shape[0]) // 2)
                torch.cuda.empty_cache()
                log.warning(
                    "%s: CUDA out of memory at %d images per batch; continuing with %d",
                    metric_name,
                    min(chunk, batch.shape[0]),
                    self._chunk[metric_name],
                )

    # -- cached resources -----------------------------------------------------------------
    def metric(self, name: str) -> Metric:
        if name not in self._metrics:
            log.info("building metric %s on %s", name, self.device)
            model = create_metric(name, device=self.device, weights=self.config.weights)
            if self.config.amp or self.config.channels_last:
                dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.config.amp] if self.config.amp else None
                model.set_speed_options(autocast=dtype, channels_last=self.config.channels_last)
            # On image batches (image sets, frames, universal training) a video metric scores each
            # image as a one-frame clip; on a video set it sees whole clips (video_metric()).
            self._metrics[name] = as_image_metric(model)
        return self._metrics[name]

    def video_metric(self, name: str) -> Metric:
        """The video metric itself, scoring a clip (T, 3, H, W) as one clip."""
        wrapped = self.metric(name)
        if not isinstance(wrapped, FramesAsClips):
            raise ValueError(f"{name} is an image metric; it scores frames as images, not clips")
        return wrapped.video_metric

    def dataset(self, name: str, metric: str) -> Dataset | VideoDataset:
        """The set ``metric`` is tested on: clips for a video metric on a video set, images otherwise
        (a video set's frames for an image metric)."""
        return self._open(name, clips=get_spec(metric).is_video and is_video_dataset(name))

    def image_dataset(self, name: str) -> Dataset:
        """``name`` as images (a video set's frames): what universal attacks train on."""
        return self._open(name, clips=False)

    def _open(self, name: str, clips: bool) -> Any:
        key = (name, clips)
        if key not in self._datasets:
            opened = resolve_any_dataset(
                name, max_images=self.config.max_images, max_frames=self.config.max_frames, size=self.config.image_size
            )
            self._datasets[key] = opened if clips or isinstance(opened, Dataset) else opened.frames()
        return self._datasets[key]

    def _batches(self, dataset: Dataset) -> Iterable[tuple[list[str], torch.Tensor]]:
        for names, batch in iter_batches(dataset, self.batch_size):
            yield names, batch.to(self.device)

    @torch.no_grad()
    def clean_scores(self, metric_name: str, dataset_name: str) -> dict[str, float]:
        """Raw clean scores per image, computed once and shared by every attack."""
        key = (metric_name, dataset_name)
        if key not in self._clean:
            metric = self.metric(metric_name)
            scores: dict[str, float] = {}
            for names, batch in self._batches(self.dataset(dataset_name, metric_name)):
                raw = self.run_batched(metric_name, metric, batch)
                scores.update(zip(names, raw.float().cpu().tolist(), strict=True))
            self._clean[key] = scores
        return self._clean[key]

    def perturbation(self, attack: Attack, metric_name: str, train_dataset: str) -> Any:
        """The universal perturbation for (attack, metric, train set): imported, cached or trained once."""
        from iqa_robustness.attacks.perturbation import load_perturbation

        key = (repr(attack), metric_name, train_dataset)
        if key not in self._perturbations:
            if self.config.uap_file:
                self._perturbations[key] = load_perturbation(self.config.uap_file)
            else:
                train = self.image_dataset(train_dataset)
                steps, max_steps = self.config.uap_training_steps(self.device)
                self._perturbations[key] = attack.fit(
                    self.metric(metric_name),
                    train,
                    seed=stable_seed(self.config.seed, attack.name, metric_name, train_dataset),
                    steps=steps,
                    max_steps=max_steps,
                    cache_dir=self.config.results_dir / "perturbations",
                )
        return self._perturbations[key]

    # -- one case -------------------------------------------------------------------------
    def run(self, case: CaseSpec, attack_kwargs: dict[str, Any] | None = None) -> CaseResult:
        attack = case.attack_spec.create(**(attack_kwargs or {}))
        metric = self.metric(case.metric)
        attack.check_metric(metric)
        dataset = self.dataset(case.dataset, case.metric)
        seed = stable_seed(self.config.seed, case.id)
        torch.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        perturbation = None
        if attack.universal:
            if case.train_dataset is None or case.amplitude is None:
                raise ValueError(f"{case.id}: a universal attack needs a train dataset and an amplitude")
            perturbation = self.perturbation(attack, case.metric, case.train_dataset)

        if isinstance(dataset, VideoDataset):
            outcome = self._attack_clips(case, attack, dataset, perturbation)
        else:
            outcome = self._attack_images(case, attack, metric, dataset, perturbation)
        rows = outcome.rows

        clear = np.array([r["clear"] for r in rows], dtype=np.float64)
        attacked_arr = np.array([r["attacked"] for r in rows], dtype=np.float64)
        scores = score_group(clear, attacked_arr, lower_better=metric.lower_better)
        scores["max_linf"] = outcome.max_linf
        if isinstance(dataset, VideoDataset):
            scores["flicker"] = float(np.mean([r["flicker"] for r in rows]))
        params = {
            "metric": case.metric,
            "dataset": case.dataset,
            "seed": seed,
            "batch_size": min(self.batch_size, self._chunk.get(case.metric, self.batch_size)),
            "device": str(self.device),
            "image_size": self.config.image_size,
            "max_images": self.config.max_images,
            "amp": self.config.amp or "off",
            "channels_last": self.config.channels_last,
            **attack.params(),  # last: a universal attack's batch_size is its training batch, not the suite's
        }
        if isinstance(dataset, VideoDataset):
            params.update(max_frames=self.config.max_frames, frames=outcome.frames)
        if attack.universal:
            params.update(amplitude=case.amplitude, train_dataset=case.train_dataset, clamp=self.config.clamp_uap)
            meta = getattr(perturbation, "meta", {})
            if "steps" in meta:  # trained here (a published file has no training record)
                params.update(train_steps=meta["steps"], full_epochs=meta.get("full_epochs", False))
        result = CaseResult(
            case_id=case.id,
            metric=case.metric,
            attack=case.attack,
            dataset=case.dataset,
            params=params,
            rows=rows,
            scores=scores,
            lower_better=metric.lower_better,
            weights_mode=metric.weights_mode,
            # per image; per frame on clips
            seconds_per_image=outcome.seconds / max(outcome.frames, 1),
            peak_memory_mb=peak_memory_mb(self.device),
            amplitude=case.amplitude,
            train_dataset=case.train_dataset,
        )
        result.artifacts.update(self._save_artifacts(case, perturbation, outcome.pairs))
        return result

    def _attack_images(
        self, case: CaseSpec, attack: Attack, metric: Metric, dataset: Dataset, perturbation: Any
    ) -> _Outcome:
        """The attack on the dataset's images in batches: one MSU row per image."""
        clean = self.clean_scores(case.metric, case.dataset)
        out = _Outcome()
        for names, batch in self._batches(dataset):
            sync_device(self.device)
            start = time.perf_counter()
            if perturbation is not None:
                adv = attack.apply(perturbation, batch, case.amplitude, clamp=self.config.clamp_uap)
            else:
                adv = self.run_batched(case.metric, lambda x: attack(metric, x), batch)
            sync_device(self.device)
            out.seconds += time.perf_counter() - start
            with torch.no_grad():
                attacked = self.run_batched(case.metric, metric, adv).float().cpu().tolist()
            out.max_linf = max(out.max_linf, float((adv - batch).abs().max()))
            # unclamped, as the benchmark measures universal perturbations
            sim = image_distortion(batch, adv)
            for i, name in enumerate(names):
                c, a = clean[name], attacked[i]
                row = {
                    "image_name": name,
                    "test_dataset": dataset_slug(case.dataset),
                    "clear": c,
                    "attacked": a,
                    "rel_gain": a / c if c != 0 else math.nan,
                    "psnr": sim["psnr"][i],
                    "ssim": sim["ssim"][i],
                    "mse": sim["mse"][i],
                }
                if attack.universal:
                    row["train_dataset"] = dataset_slug(case.train_dataset or "")
                    row["amplitude"] = case.amplitude
                out.rows.append(row)
            for i in range(min(len(names), self.config.pairs_to_save - len(out.pairs))):
                out.pairs.append((names[i], batch[i].cpu(), adv[i].cpu()))
        out.frames = len(out.rows)
        return out

    def _attack_clips(self, case: CaseSpec, attack: Attack, dataset: VideoDataset, perturbation: Any) -> _Outcome:
        """The attack on each clip against the video metric's clip score: one row per clip, with flicker.

        Image-specific attacks run on all frames of a clip at once (the loss is the clip score);
        a universal perturbation is added to every frame.
        """
        metric = self.video_metric(case.metric)
        clean = self._clean.setdefault((case.metric, case.dataset), {})  # scored once, shared by all attacks
        out = _Outcome()
        for item in dataset:
            clip = item.load().to(self.device)
            if item.clip_name not in clean:
                with torch.no_grad():
                    clean[item.clip_name] = float(metric(clip)[0])
            clear = clean[item.clip_name]
            if perturbation is not None:
                adv, result = universal_clip(
                    metric,
                    clip,
                    perturbation,
                    case.amplitude,
                    clamp=self.config.clamp_uap,
                    clip_name=item.clip_name,
                    test_dataset=dataset_slug(case.dataset),
                    train_dataset=dataset_slug(case.train_dataset or ""),
                    clear=clear,
                )
            else:
                adv, result = attack_clip(
                    metric, attack, clip, clip_name=item.clip_name, test_dataset=dataset_slug(case.dataset), clear=clear
                )
            out.rows.append(result.row())
            out.seconds += result.seconds
            out.frames += result.n_frames
            out.max_linf = max(out.max_linf, float((adv - clip).abs().max()))
            if len(out.pairs) < self.config.pairs_to_save:  # the middle frame
                middle = clip.shape[0] // 2
                out.pairs.append(
                    (f"{item.clip_name.replace('/', '_')}_f{middle}", clip[middle].cpu(), adv[middle].cpu())
                )
        return out

    def _save_artifacts(
        self, case: CaseSpec, perturbation: Any, pairs: list[tuple[str, torch.Tensor, torch.Tensor]]
    ) -> dict[str, str]:
        from PIL import Image

        out = self.config.results_dir / "artifacts" / case.id
        out.mkdir(parents=True, exist_ok=True)
        saved: dict[str, str] = {}
        for name, clean, adv in pairs:
            both = torch.cat([clean, adv.clamp(0, 1)], dim=-1)  # side by side: clean | adversarial
            arr = (both.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            path = out / f"pair_{Path(name).stem}.png"
            Image.fromarray(arr).save(path)
            saved[path.name] = str(path)
        if perturbation is not None and hasattr(perturbation, "save"):
            # one file per trained perturbation, shared by its amplitude cases (a cnn generator is ~220 MB)
            if perturbation.path is None or not Path(perturbation.path).is_file():
                perturbation.path = perturbation.save(out / f"perturbation_{case.attack}_{case.metric}")[0]
            stem = Path(perturbation.path)
            for path in sorted(stem.parent.glob(f"{glob.escape(stem.stem)}.*")):
                saved[path.name] = str(path)
        return saved
