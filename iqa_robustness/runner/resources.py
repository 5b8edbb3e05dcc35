"""The session's expensive objects, built once: metric models, opened datasets, clean scores, perturbations.

Also the one place a batch meets the device's memory: :meth:`Resources.run_batched` retries a
CUDA out-of-memory batch in halves and remembers the size that fitted, per metric.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.perturbation import Perturbation, load_perturbation
from iqa_robustness.data.images import Dataset, iter_batches
from iqa_robustness.data.registry import is_video_dataset, resolve_any_dataset
from iqa_robustness.data.video_sets import VideoDataset
from iqa_robustness.metrics import Metric, create_metric, get_spec
from iqa_robustness.metrics.frames import FramesAsClips, as_image_metric
from iqa_robustness.progress import Progress
from iqa_robustness.runner.config import SuiteConfig, stable_seed, take_shard

log = logging.getLogger(__name__)


def call_in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn`` over ``batch`` in slices of at most ``chunk`` images, concatenated."""
    if chunk >= batch.shape[0]:
        return fn(batch)
    return torch.cat([fn(batch[i : i + chunk]) for i in range(0, batch.shape[0], chunk)])


def _shard_of(dataset: Dataset | VideoDataset, shard: tuple[int, int]) -> Dataset | VideoDataset:
    """Every n-th image (or clip) of ``dataset`` from the k-th: one image shard of a case."""
    field = "clips" if isinstance(dataset, VideoDataset) else "items"
    kept = take_shard(getattr(dataset, field), shard)
    if not kept:
        raise ValueError(
            f"image shard {shard[0]}/{shard[1]} of dataset {dataset.name!r} is empty ({len(dataset)} images); "
            "use fewer image shards"
        )
    return dataclasses.replace(dataset, **{field: kept})


class Resources:
    """Caches of one session, keyed so that every case sharing a model, a set or a perturbation shares it."""

    def __init__(self, config: SuiteConfig) -> None:
        self.config = config
        self.device = config.resolved_device()
        self.batch_size = config.resolved_batch_size(self.device)
        self._metrics: dict[str, Metric] = {}
        self._datasets: dict[tuple[str, bool], Dataset | VideoDataset] = {}
        self._clean: dict[tuple[str, str], dict[str, float]] = {}
        self._perturbations: dict[tuple[str, str, str], Perturbation] = {}
        self._chunk: dict[str, int] = {}  # per metric: largest slice that fitted in memory

    # -- memory ---------------------------------------------------------------------------
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

    def effective_batch_size(self, metric_name: str) -> int:
        """The batch size the metric's cases actually ran with (smaller after an out-of-memory split)."""
        return min(self.batch_size, self._chunk.get(metric_name, self.batch_size))

    # -- metrics --------------------------------------------------------------------------
    def metric(self, name: str) -> Metric:
        """The metric on image batches; a video metric scores each image as a one-frame clip."""
        if name not in self._metrics:
            log.info("building metric %s on %s", name, self.device)
            model = create_metric(name, device=self.device, weights=self.config.weights)
            if self.config.amp or self.config.channels_last:
                dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.config.amp] if self.config.amp else None
                model.set_speed_options(autocast=dtype, channels_last=self.config.channels_last)
            self._metrics[name] = as_image_metric(model)
        return self._metrics[name]

    def video_metric(self, name: str) -> Metric:
        """The video metric itself, scoring a clip (T, 3, H, W) as one clip."""
        wrapped = self.metric(name)
        if not isinstance(wrapped, FramesAsClips):
            raise ValueError(f"{name} is an image metric; it scores frames as images, not clips")
        return wrapped.video_metric

    # -- data -----------------------------------------------------------------------------
    def dataset(self, name: str, metric: str) -> Dataset | VideoDataset:
        """The set ``metric`` is tested on: clips for a video metric on a video set, images otherwise
        (a video set's frames for an image metric); with an image shard, this session's share of it."""
        return self._open(name, clips=get_spec(metric).is_video and is_video_dataset(name), sharded=True)

    def image_dataset(self, name: str) -> Dataset:
        """``name`` as images (a video set's frames), whole: what universal attacks train on."""
        return self._open(name, clips=False, sharded=False)

    def _open(self, name: str, clips: bool, sharded: bool) -> Any:
        key = (name, clips, sharded)
        if key not in self._datasets:
            opened = resolve_any_dataset(
                name, max_images=self.config.max_images, max_frames=self.config.max_frames, size=self.config.image_size
            )
            opened = opened if clips or isinstance(opened, Dataset) else opened.frames()
            if sharded and self.config.image_shard is not None:
                opened = _shard_of(opened, self.config.image_shard)
            self._datasets[key] = opened
        return self._datasets[key]

    def batches(self, dataset: Dataset) -> Iterator[tuple[list[str], torch.Tensor]]:
        """Equal-size batches of the dataset's images, on the device."""
        for names, batch in iter_batches(dataset, self.batch_size):
            yield names, batch.to(self.device)

    # -- clean scores ---------------------------------------------------------------------
    def clean_scores(self, metric_name: str, dataset_name: str) -> dict[str, float]:
        """Raw clean scores per image (or per clip), filled once and shared by every attack.

        Images are scored here in batches under ``torch.no_grad``; a clip runner fills its clips'
        entries itself (a clip is scored as it is read).
        """
        key = (metric_name, dataset_name)
        if key not in self._clean:
            scores: dict[str, float] = {}
            dataset = self.dataset(dataset_name, metric_name)
            if isinstance(dataset, Dataset):
                metric = self.metric(metric_name)
                progress = Progress(f"clean scores of {metric_name} on {dataset.name}", len(dataset))
                with torch.no_grad():
                    for names, batch in self.batches(dataset):
                        raw = self.run_batched(metric_name, metric, batch)
                        scores.update(zip(names, raw.float().cpu().tolist(), strict=True))
                        progress.advance(len(names))
            self._clean[key] = scores
        return self._clean[key]

    # -- universal perturbations ----------------------------------------------------------
    def perturbation(self, attack: Attack, metric_name: str, train_dataset: str) -> Perturbation:
        """The universal perturbation for (attack, metric, train set): imported, cached or trained once."""
        key = (repr(attack), metric_name, train_dataset)
        if key not in self._perturbations:
            if self.config.uap_file:
                self._perturbations[key] = load_perturbation(self.config.uap_file)
            else:
                steps, max_steps = self.config.uap_training_steps(self.device)
                self._perturbations[key] = attack.fit(
                    self.metric(metric_name),
                    self.image_dataset(train_dataset),
                    seed=stable_seed(self.config.seed, attack.name, metric_name, train_dataset),
                    steps=steps,
                    max_steps=max_steps,
                    cache_dir=self.config.results_dir / "perturbations",
                )
        return self._perturbations[key]
