"""The session's expensive objects, built once: metric models, opened datasets, clean scores, perturbations.

Also the one place a batch meets the device's memory: :meth:`Resources.run_batched` retries a
CUDA out-of-memory batch in halves and remembers the size that fitted, per metric (on the CPU the session
first keeps freed memory in the process: :func:`~iqa_robustness.runner.allocator.tune_allocator`); and the one
place an image set meets a metric (:meth:`Resources.screened`): with ``on_bad_image="skip"`` the
images the metric cannot take (unreadable, smaller than its ``min_side``, refused by it, a NaN or
infinite clean score) are set aside with their reasons instead of failing every case on the set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from iqa_robustness.attacks import Attack
from iqa_robustness.attacks.perturbation import Perturbation, load_perturbation
from iqa_robustness.data.decode import reason_of
from iqa_robustness.data.errors import ImageReadError
from iqa_robustness.data.images import Dataset, ImageItem, iter_batches
from iqa_robustness.data.jpeg import DEFAULT_QUALITY, JpegItem, compress, jpeg_dataset
from iqa_robustness.data.mos import dataset_mos
from iqa_robustness.data.registry import is_video_dataset, resolve_any_dataset
from iqa_robustness.data.video_sets import VideoDataset
from iqa_robustness.defences import ImageDraws
from iqa_robustness.metrics import Metric, create_metric, get_spec
from iqa_robustness.metrics.draws import MeanOfDraws
from iqa_robustness.metrics.frames import FramesAsClips, as_image_metric
from iqa_robustness.progress import Progress
from iqa_robustness.runner.allocator import tune_allocator
from iqa_robustness.runner.config import SuiteConfig, stable_seed, take_shard

log = logging.getLogger(__name__)


def call_in_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    chunk: int,
    metric: Metric | None = None,
    reference: torch.Tensor | None = None,
    draws: ImageDraws | None = None,
) -> torch.Tensor:
    """``fn`` over ``batch`` in slices of at most ``chunk`` images, concatenated.

    With a ``reference`` batch (a full-reference ``metric``), each slice runs with the matching
    slice of the reference bound to the metric; with ``draws`` (the batch's image names, for a
    random defence's draws), with the matching slice of the names bound.
    """

    def one(start: int, stop: int) -> torch.Tensor:
        with contextlib.ExitStack() as stack:
            if reference is not None and metric is not None:
                stack.enter_context(metric.reference(reference[start:stop]))
            if draws is not None:
                stack.enter_context(draws.rows(start, stop).bound())
            return fn(batch[start:stop])

    n = batch.shape[0]
    if chunk >= n:
        return one(0, n)
    return torch.cat([one(i, min(i + chunk, n)) for i in range(0, n, chunk)])


def _shard_of(dataset: Dataset | VideoDataset, shard: tuple[int, int]) -> Dataset | VideoDataset:
    """Every n-th image (or clip) of ``dataset`` from the k-th: one image shard of a case."""
    field = "clips" if isinstance(dataset, VideoDataset) else "items"
    kept = take_shard(getattr(dataset, field), shard)
    if not kept:
        raise ValueError(
            f"image shard {shard[0]}/{shard[1]} of dataset {dataset.name!r} is empty ({len(dataset)} images); "
            "use fewer image shards"
        )
    reasons = getattr(dataset, "skip_reasons", None)
    if reasons:  # an unreadable file is reported by one shard: every n-th by name, from the k-th
        named = dict(take_shard(tuple(sorted(reasons.items())), shard))
        return dataclasses.replace(dataset, **{field: kept, "skip_reasons": named})
    return dataclasses.replace(dataset, **{field: kept})


#: What a metric raises on an input it cannot take: check_input's ValueError, a linear-algebra
#: RuntimeError, pyiqa's asserts on the input.
_PER_IMAGE_ERRORS = (ValueError, RuntimeError, AssertionError)


def too_small_reason(metric_name: str, min_side: int | None, shape: tuple[int, int]) -> str | None:
    """Why an input of ``shape`` (H, W) is too small for the metric, or None when it is not."""
    if min_side is None or min(shape) >= min_side:
        return None
    height, width = shape
    return f"too small for {metric_name}: {width}x{height} px, needs at least {min_side} px"


def _decode_failure(item: ImageItem) -> str:
    """The reason an image of a dataset that skips decoding errors gave no tensor."""
    try:
        item.load()
    except ImageReadError as exc:
        return f"unreadable: {exc.bad.get(item.image_name, str(exc))}"
    return "unreadable: the image failed to decode"


@dataclasses.dataclass(frozen=True)
class Screened:
    """An image set as one metric takes it.

    Attributes:
        dataset: the images the metric scores (clean scores finite).
        clean: raw clean scores of the images scored clean (a skipped NaN or infinite one included).
        skipped: image name -> reason, for the images set aside (in the order they were found).
    """

    dataset: Dataset
    clean: dict[str, float]
    skipped: dict[str, str]


class Resources:
    """Caches of one session, keyed so that every case sharing a model, a set or a perturbation shares it."""

    def __init__(self, config: SuiteConfig) -> None:
        self.config = config
        self._mos: dict[tuple[str, str | None], tuple[dict[str, float], Path] | None] = {}
        self.device = config.resolved_device()
        # on the CPU the metric's buffers stay in the process between calls; what the allocator is, in words
        self.allocator = tune_allocator() if self.device.type == "cpu" else None
        self.batch_size = config.resolved_batch_size(self.device)
        self._metrics: dict[str, Metric] = {}
        self._datasets: dict[tuple[str, bool], Dataset | VideoDataset] = {}
        self._clean: dict[tuple[str, str], dict[str, float]] = {}
        self._screened: dict[tuple[str, str], Screened] = {}
        self._perturbations: dict[tuple[str, str, str], Perturbation] = {}
        self._chunk: dict[str, int] = {}  # per metric: largest slice that fitted in memory

    # -- memory ---------------------------------------------------------------------------
    def run_batched(
        self,
        metric_name: str,
        fn: Callable[[torch.Tensor], torch.Tensor],
        batch: torch.Tensor,
        reference: torch.Tensor | None = None,
        draws: ImageDraws | None = None,
    ):
        """``fn(batch)``; on CUDA out-of-memory, retried in halves (remembered for the metric) down to 1 image.

        Attacks and scores are per image (losses are summed over the batch), so slicing a batch
        does not change any result. ``reference``: the reference images of a full-reference
        metric, bound to it (slice by slice) while ``fn`` runs; ``draws``: whose images the rows are,
        for a random defence (:meth:`image_draws`), bound likewise.
        """
        metric = self.metric(metric_name) if reference is not None else None
        while True:
            chunk = self._chunk.get(metric_name, batch.shape[0])
            try:
                return call_in_chunks(fn, batch, chunk, metric, reference, draws)
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

    def image_draws(self, names: Sequence[str], attack: bool = False) -> ImageDraws:
        """Whose images a batch's rows are, for the draws of a random defence: seeded by the session seed
        and each image's name, so any batch, shard or worker draws alike (:mod:`iqa_robustness.defences.base`).

        Args:
            names: the image of each row.
            attack: the calls attack the images (fresh draws) rather than score them (each image's own draw).
        """
        return ImageDraws(tuple(names), self.config.seed, attack)

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

    def average_draws(self, name: str, draws: int) -> Metric:
        """From now on, the metric ``name`` attacked on the mean of ``draws`` of its scores (EoT, a random metric).

        Scoring is unchanged (one draw per call): :class:`~iqa_robustness.metrics.draws.MeanOfDraws`
        averages only where gradients are taken.
        """
        model = self.metric(name)
        if not isinstance(model, MeanOfDraws):
            log.info("%s scores draws: gradient attacks take the mean of %d draws (--eot)", name, draws)
            self._metrics[name] = model = MeanOfDraws(model, draws)
        return model

    def video_metric(self, name: str) -> Metric:
        """The video metric itself, scoring a clip (T, 3, H, W) as one clip."""
        wrapped = self.metric(name)
        if not isinstance(wrapped, FramesAsClips):
            raise ValueError(f"{name} is an image metric; it scores frames as images, not clips")
        return wrapped.video_metric

    # -- data -----------------------------------------------------------------------------
    def jpeg_qualities(self, metric: str) -> tuple[int, ...] | None:
        """The JPEG qualities ``metric`` is tested at: ``--jpeg-quality``, else 80 for a full-reference
        metric (docs/methodology.md, "Full-reference metrics": its distorted inputs are JPEG copies), else none."""
        if self.config.jpeg_quality:
            return tuple(self.config.jpeg_quality)
        return (DEFAULT_QUALITY,) if get_spec(metric).is_full_reference else None

    def dataset(self, name: str, metric: str) -> Dataset | VideoDataset:
        """The set ``metric`` is tested on: clips for a video metric on a video set, images otherwise
        (a video set's frames for an image metric), as JPEG copies at :meth:`jpeg_qualities`; with an
        image shard, this session's share of it."""
        clips = get_spec(metric).is_video and is_video_dataset(name)
        return self._open(name, clips=clips, sharded=True, qualities=None if clips else self.jpeg_qualities(metric))

    def image_dataset(self, name: str) -> Dataset:
        """``name`` as images (a video set's frames), whole and clean: what universal attacks train on."""
        return self._open(name, clips=False, sharded=False)

    def _open(self, name: str, clips: bool, sharded: bool, qualities: tuple[int, ...] | None = None) -> Any:
        key = (name, clips, sharded, qualities)
        if key not in self._datasets:
            on_error = "skip" if self.config.skip_bad_images else "raise"
            opened = resolve_any_dataset(
                name,
                max_images=self.config.max_images,
                max_frames=self.config.max_frames,
                size=self.config.image_size,
                on_error=on_error,
            )
            if not clips and isinstance(opened, VideoDataset):
                opened = dataclasses.replace(opened.frames(), on_error=on_error)
            if qualities:  # test images only: training stays clean
                opened = jpeg_dataset(opened, qualities, self.config.jpeg_colour)  # type: ignore[arg-type]
            if sharded and self.config.image_shard is not None:
                opened = _shard_of(opened, self.config.image_shard)
            self._datasets[key] = opened
        return self._datasets[key]

    def mos(self, dataset: Dataset | VideoDataset) -> tuple[dict[str, float], Path] | None:
        """The dataset's subjective scores (``--mos``, else its folder's ``mos.csv``) and their file, or None.

        Read once per dataset folder. Raises ValueError for a malformed file (see :func:`read_mos`).
        """
        root = getattr(dataset, "root", None)
        key = (str(root), self.config.mos_file)
        if key not in self._mos:
            self._mos[key] = dataset_mos(root, self.config.mos_file)
        return self._mos[key]

    def batches(self, dataset: Dataset) -> Iterator[tuple[list[str], torch.Tensor]]:
        """Equal-size batches of the dataset's images, on the device."""
        for names, batch in iter_batches(dataset, self.batch_size):
            yield names, batch.to(self.device)

    def metric_batches(
        self, dataset: Dataset, metric_name: str
    ) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor | None]]:
        """:meth:`batches` with, for a full-reference metric, the reference batch: each JPEG copy's clean image.

        Yields:
            ``(names, batch, reference)``; ``reference`` is None for a no-reference metric.
        """
        full_reference = get_spec(metric_name).is_full_reference
        items = {item.image_name: item for item in dataset.items} if full_reference else {}
        for names, batch in self.batches(dataset):
            yield names, batch, self.reference_batch(items, names, metric_name) if full_reference else None

    def reference_batch(self, items: dict[str, ImageItem], names: list[str], metric_name: str) -> torch.Tensor:
        """The clean images of the JPEG copies ``names`` (``items`` by name): a full-reference metric's references.

        Raises:
            TypeError: an item is no JPEG copy of a clean image.
        """
        missing = [name for name in names if not isinstance(items[name], JpegItem)]
        if missing:
            raise TypeError(
                f"{metric_name} is a full-reference metric, but {missing[0]!r} is no JPEG copy of a clean image; "
                "open the dataset through Resources.dataset"
            )
        return torch.stack([items[name].reference() for name in names]).to(self.device)  # type: ignore[attr-defined]

    # -- clean scores ---------------------------------------------------------------------
    def clean_scores(self, metric_name: str, dataset_name: str) -> dict[str, float]:
        """Raw clean scores per image (or per clip), filled once and shared by every attack.

        Images are scored in :meth:`screened`; a clip runner fills its clips' entries itself (a
        clip is scored as it is read).
        """
        if isinstance(self.dataset(dataset_name, metric_name), Dataset):
            return self.screened(metric_name, dataset_name).clean
        return self._clean.setdefault((metric_name, dataset_name), {})

    def screened(self, metric_name: str, dataset_name: str) -> Screened:
        """The image set as the metric takes it: the images it scores, their clean scores, the rest with reasons.

        With ``on_bad_image="skip"``, an image is set aside when the dataset could not read it, when
        a side is under the metric's ``min_side``, when the metric raises on it alone (a batch it
        raises on is scored image by image), or when its clean score is NaN or infinite. With
        ``"fail"`` nothing is: the error is raised. Clean scores are computed once, in batches under
        ``torch.no_grad``.
        """
        key = (metric_name, dataset_name)
        if key in self._screened:
            return self._screened[key]
        dataset = self.dataset(dataset_name, metric_name)
        if not isinstance(dataset, Dataset):
            raise TypeError(f"{dataset_name} is a set of clips for {metric_name}; the clip runner takes it")
        skip = self.config.skip_bad_images
        skipped: dict[str, str] = {}
        if skip:
            skipped |= {name: f"unreadable: {reason}" for name, reason in dataset.skip_reasons.items()}
            min_side = get_spec(metric_name).min_side
            for item in dataset:
                reason = too_small_reason(metric_name, min_side, item.shape)
                if reason is not None:
                    skipped[item.image_name] = reason
            dataset = dataclasses.replace(dataset, items=tuple(i for i in dataset if i.image_name not in skipped))
        clean, refused = self._score_clean(metric_name, dataset, skip)
        skipped |= refused
        for item in dataset:
            name = item.image_name
            if name in skipped:
                continue
            if name not in clean:
                skipped[name] = _decode_failure(item)
            elif skip and not math.isfinite(clean[name]):
                skipped[name] = f"clean score is {clean[name]}"
        if skipped:
            log.warning(
                "%s on %s: skipping %d image(s):\n%s",
                metric_name,
                dataset_name,
                len(skipped),
                "\n".join(f"  {name}: {reason}" for name, reason in skipped.items()),
            )
        kept = tuple(item for item in dataset if item.image_name not in skipped)
        self._screened[key] = Screened(dataclasses.replace(dataset, items=kept), clean, skipped)
        return self._screened[key]

    def _score_clean(self, metric_name: str, dataset: Dataset, skip: bool) -> tuple[dict[str, float], dict[str, str]]:
        """Raw clean scores; with ``skip``, a batch the metric raises on is retried image by image.

        One image can sink a batch (NIQE's covariance of a flat image does not converge, BRISQUE
        asserts a non-zero variance); alone, the images that still raise are set aside.

        Returns:
            The scores, and image name -> reason for the images the metric raised on.
        """
        metric = self.metric(metric_name)
        scores: dict[str, float] = {}
        refused: dict[str, str] = {}
        progress = Progress(f"clean scores of {metric_name} on {dataset.name}", len(dataset))
        with torch.no_grad():
            for names, batch, reference in self.metric_batches(dataset, metric_name):
                progress.advance(len(names))
                draws = self.image_draws(names)
                try:
                    raw = self.run_batched(metric_name, metric, batch, reference, draws).float().cpu().tolist()
                except _PER_IMAGE_ERRORS as exc:
                    if not skip or isinstance(exc, torch.cuda.OutOfMemoryError):
                        raise
                    for i, name in enumerate(names):
                        try:
                            one = None if reference is None else reference[i : i + 1]
                            with metric.reference(one), draws.rows(i, i + 1).bound():
                                scores[name] = float(metric(batch[i : i + 1]).float().cpu()[0])
                        except _PER_IMAGE_ERRORS as one:
                            if isinstance(one, torch.cuda.OutOfMemoryError):
                                raise
                            refused[name] = f"{metric_name} raised {reason_of(one)[:300]}"
                else:
                    scores.update(zip(names, raw, strict=True))
        return scores, refused

    # -- transfer targets -----------------------------------------------------------------
    def transfer_clean(self, target: str, source: str, dataset_name: str) -> dict[str, float]:
        """Raw clean scores of ``target`` on the inputs ``source`` is tested on, computed once and shared.

        When both metrics are tested on the same inputs (the same JPEG qualities, see
        :meth:`jpeg_qualities`) these are the target's own :meth:`screened` scores; otherwise (a
        no-reference target of a full-reference source: the source's inputs are JPEG copies) the
        target scores the source's inputs. Images the target cannot take are left out.

        Raises:
            ValueError: ``target`` is full-reference and the source's inputs are not JPEG copies
                (nothing to bind as its reference); the message says what to run instead.
        """
        if self.jpeg_qualities(target) == self.jpeg_qualities(source):
            screened = self.screened(target, dataset_name)
            return {n: v for n, v in screened.clean.items() if n not in screened.skipped}
        dataset = self.dataset(dataset_name, source)
        if not isinstance(dataset, Dataset):
            raise TypeError(f"{dataset_name} is a set of clips for {source}; transfer scoring takes images")
        if get_spec(target).is_full_reference and not all(isinstance(i, JpegItem) for i in dataset.items):
            raise ValueError(
                f"{target} is a full-reference metric: it scores an image against its reference, but {source} is "
                f"tested on the clean images of {dataset_name} (no JPEG copies, nothing to bind as the reference); "
                f"add --jpeg-quality 80 so every metric is tested on JPEG copies, or leave {target} "
                "out of --transfer-to"
            )
        key = (f"transfer:{target}", f"{dataset_name}|{self.jpeg_qualities(source)}")
        if key not in self._clean:
            min_side = get_spec(target).min_side
            taken = tuple(i for i in dataset if too_small_reason(target, min_side, i.shape) is None)
            scores, _ = self._score_clean(target, dataclasses.replace(dataset, items=taken), skip=True)
            self._clean[key] = {n: v for n, v in scores.items() if math.isfinite(v)}
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
                    distortions=self._training_distortions(metric_name),
                )
        return self._perturbations[key]

    def _training_distortions(self, metric_name: str) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        """A full-reference metric trains on JPEG copies of the training batch at each test quality
        (the benchmark's code: one step per batch and quality); a no-reference metric on the clean batch."""
        if not get_spec(metric_name).is_full_reference:
            return []
        colour = self.config.jpeg_colour
        qualities = self.jpeg_qualities(metric_name) or ()
        return [(f"jpeg{q}-{colour}", functools.partial(compress, quality=q, colour=colour)) for q in qualities]
