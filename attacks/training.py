"""Training data of the universal attacks: the benchmark's preprocessing and the batch sampler.

As the MSU Metrics Robustness Benchmark (Antsiferova et al., AAAI 2024) trains the universal
attacks of Shumitskaya et al. (CVIU 2024): every training image is brought to 256x256
(:func:`uap_train_transform`: resized when a side is under 512, else centre-cropped); each step
draws a fresh random batch of distinct images (:class:`Batches`); an epoch is
``ceil(N / batch_size)`` steps.

Training data is anything :func:`prepare_training_set` accepts: an opened image dataset (any
object with the :class:`ImageSource` members, such as :class:`iqa_robustness.data.images.Dataset`;
opening a dataset by name or path is the caller's job), a tensor batch, or an iterable of images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from iqa_robustness.progress import Progress

log = logging.getLogger(__name__)

#: side of the square training images
UAP_TRAIN_SIDE = 256
_UAP_CROP_MIN_SIDE = 512


def uap_train_transform(img: torch.Tensor, *, antialias: bool = False) -> torch.Tensor:
    """Prepare a training image for a universal attack: 256x256, as the benchmark's code does.

    When either side is under 512 pixels the whole image is resized to 256x256 (aspect ratio not
    kept); otherwise the central 256x256 crop is taken (offset ``(side - 256) // 2``). The resize
    is bilinear with half-pixel centres and, like ``cv2.resize`` in the reference code, no
    antialiasing unless ``antialias=True``.

    Args:
        img: (3, H, W) or (N, 3, H, W) float tensor.
        antialias: low-pass before shrinking (not the reference behaviour).

    Returns:
        (3, 256, 256) or (N, 3, 256, 256), same dtype and device.
    """
    if img.ndim not in (3, 4) or img.shape[-3] != 3:
        raise ValueError(f"expected an image (3, H, W) or a batch (N, 3, H, W), got shape {tuple(img.shape)}")
    height, width = img.shape[-2:]
    side = UAP_TRAIN_SIDE
    if height < _UAP_CROP_MIN_SIDE or width < _UAP_CROP_MIN_SIDE:
        batch = img if img.ndim == 4 else img.unsqueeze(0)
        out = F.interpolate(batch, size=(side, side), mode="bilinear", align_corners=False, antialias=antialias)
        return out if img.ndim == 4 else out[0]
    top, left = (height - side) // 2, (width - side) // 2
    return img[..., top : top + side, left : left + side]


def clamp_passing_gradient(x: torch.Tensor) -> torch.Tensor:
    """``clamp(x, 0, 1)`` in value with an identity gradient.

    The MSU code clamps ``res.data`` in place, which the autograd graph does not see: the metric
    gets the clamped image, the perturbation gets the gradient as if there were no clamp.
    """
    return x + (x.clamp(0.0, 1.0) - x).detach()


@runtime_checkable
class ImageSource(Protocol):
    """What training needs of an image dataset (:class:`iqa_robustness.data.images.Dataset` has it).

    ``items`` are the images in order, each with ``image_name`` and ``shape`` (H, W);
    ``load(item)`` decodes one (``None`` for an image the dataset skips); ``images()`` yields
    ``(image_name, tensor (3, H, W))``.
    """

    name: str
    items: Sequence[Any]

    def __len__(self) -> int: ...

    def images(self) -> Iterable[tuple[str, torch.Tensor]]: ...

    def load(self, item: Any) -> torch.Tensor | None: ...


# --------------------------------------------------------------------------- the training set


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """Training images after the benchmark's preprocessing, and what identifies them for the cache.

    Small sets are decoded once and kept in memory; a dataset of more than
    :data:`PRELOAD_LIMIT` images (COCO, VOC) is decoded batch by batch, as the MSU loader does.

    An attack that trains on the images as given (:attr:`UniversalAttack.trains_at_native_size`, Square-UAP
    as its source does) gets them unprepared, each at its own size (:meth:`as_given`).

    Attributes:
        identity: dataset name and (image name, H, W) of every source image, or a content hash
            for unnamed tensors.
        images: (N, 3, 256, 256) float32 on the CPU, when kept in memory.
        dataset: the dataset decoded lazily otherwise.
        native: the images as given, (3, H, W) float32 on the CPU each, for an attack that trains on them.
    """

    identity: dict[str, Any]
    images: torch.Tensor | None = None
    dataset: ImageSource | None = None
    native: tuple[torch.Tensor, ...] | None = None

    def __len__(self) -> int:
        if self.images is not None:
            return int(self.images.shape[0])
        return len(self.native) if self.native is not None else len(self.dataset)

    def as_given(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """The images at ``indices`` as given, each (3, H, W) at its own size; undecodable ones are left out
        when the dataset skips errors."""
        if self.native is not None:
            return [self.native[i] for i in indices]
        if self.dataset is None:
            raise ValueError("this training set keeps only the prepared 256x256 copies: prepare it with native=True")
        return [t for t in (self.dataset.load(self.dataset.items[i]) for i in indices) if t is not None]

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """The prepared images at ``indices`` (N, 3, 256, 256); undecodable ones are left out when
        the dataset skips errors."""
        if self.images is not None:
            return self.images[list(indices)]
        if self.dataset is None:
            raise ValueError(
                "this training set keeps the images as given: use as_given(), or prepare it with native=False"
            )
        loaded = (self.dataset.load(self.dataset.items[i]) for i in indices)
        tensors = [uap_train_transform(t) for t in loaded if t is not None]
        if not tensors:
            raise ValueError(f"no image of a training batch of {self.dataset.name!r} could be decoded")
        return torch.stack(tensors)


#: at most this many points of a training loss curve are kept (window means beyond)
LOSS_CURVE_POINTS = 2000

#: datasets up to this many images are decoded once and kept in memory (about 0.8 MB each)
PRELOAD_LIMIT = 512


def prepare_training_set(train_images: Any, *, native: bool = False) -> TrainingSet:
    """Turn the training data into a :class:`TrainingSet` (256x256 by :func:`uap_train_transform`).

    Args:
        train_images: an opened image dataset (any :class:`ImageSource`, such as
            :class:`iqa_robustness.data.images.Dataset`), a tensor batch (N, 3, H, W) in [0, 1], or
            an iterable of images (3, H, W) or of ``(name, image)`` pairs. A dataset name or path is
            refused: opening it (``iqa_robustness.data.images.resolve_dataset``) is the caller's job.
        native: keep the images as given (:attr:`TrainingSet.native`) instead of preparing them.
    """
    if isinstance(train_images, TrainingSet):
        return train_images
    if isinstance(train_images, (str, Path)):
        raise TypeError(
            f"training data {str(train_images)!r} is a name or a path: open the dataset first "
            "(iqa_robustness.data.images.resolve_dataset) and pass the opened dataset"
        )
    if isinstance(train_images, ImageSource):
        if len(train_images) == 0:
            raise ValueError(f"dataset {train_images.name!r} has no images to train on")
        identity = {
            "dataset": train_images.name,
            "images": [[item.image_name, *item.shape] for item in train_images.items],
        }
        if len(train_images) > PRELOAD_LIMIT:
            return TrainingSet(identity, dataset=train_images)
        named: list[tuple[str | None, torch.Tensor]] = list(train_images.images())
    elif isinstance(train_images, torch.Tensor):
        if train_images.ndim != 4 or train_images.shape[1] != 3:
            raise ValueError(f"training images must be a batch (N, 3, H, W) in [0, 1], got {tuple(train_images.shape)}")
        named = [(None, img) for img in train_images]
        identity = {}
    else:
        named = [_as_named(entry) for entry in train_images]
        identity = {}
    if not named:
        raise ValueError("no training images: give at least one image")
    given = tuple(img.detach().float().cpu().contiguous() for _, img in named)
    prepared = None if native else torch.stack([uap_train_transform(img) for img in given]).contiguous()
    if not identity:
        sizes = [[int(s) for s in img.shape[-2:]] for _, img in named]
        if all(name is not None for name, _ in named):
            identity = {
                "dataset": None,
                "images": [[name, *size] for (name, _), size in zip(named, sizes, strict=True)],
            }
        else:
            content = [prepared] if prepared is not None else given
            digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in content)).hexdigest()
            identity = {"dataset": None, "n_images": len(named), "sizes": sizes, "sha256": digest}
    return TrainingSet(identity, images=prepared, native=given if native else None)


def _as_named(entry: Any) -> tuple[str | None, torch.Tensor]:
    if isinstance(entry, torch.Tensor):
        image, name = entry, None
    elif isinstance(entry, Sequence) and len(entry) == 2 and isinstance(entry[1], torch.Tensor):
        name, image = str(entry[0]), entry[1]
    else:
        raise TypeError(
            f"training images must be tensors (3, H, W) or (name, tensor) pairs, got {type(entry).__name__}"
        )
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"each training image must be (3, H, W) RGB in [0, 1], got shape {tuple(image.shape)}")
    return name, image


def training_summary(identity: dict[str, Any]) -> dict[str, Any]:
    """A short description of the training data for provenance (the cache key uses all of it)."""
    images = identity.get("images")
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    n_images = len(images) if images is not None else identity.get("n_images")
    return {"dataset": identity.get("dataset"), "n_images": n_images, "digest": digest}


class Batches:
    """Fresh random training batches, one per step, with progress logging: what ``_train`` iterates.

    Each draw takes the first ``batch_size`` indices of a new random permutation (the MSU code's
    ``next(iter(shuffled_loader))``), so the images of a batch are distinct. For a full-reference
    metric each draw ``y`` is yielded once per distortion, as ``distort(y)`` with ``y`` bound to the
    metric as its reference while the step runs (the benchmark's loss
    ``1 - mean S(y, clamp(jpeg(y) + delta)) / range``, one step per batch and JPEG quality): ``total``
    draws then make ``total * len(distortions)`` steps.
    """

    def __init__(
        self,
        data: TrainingSet,
        batch_size: int,
        total: int,
        per_epoch: int,
        sampler: torch.Generator,
        device: torch.device,
        attack: str,
        metric: str,
        reference_metric: Any = None,
        distortions: Sequence[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = (),
    ) -> None:
        if distortions and reference_metric is None:
            raise ValueError("distorted training batches need the full-reference metric to bind their references to")
        self.data = data
        self.batch_size = batch_size
        self.total = total
        self.sampler = sampler
        self.device = device
        self._metric = reference_metric
        self._distortions = list(distortions)
        per_draw = max(1, len(self._distortions))
        self.per_epoch = per_epoch * per_draw
        self._label = f"{attack} vs {metric}"
        self._losses: list[float] = []
        self._steps = total * per_draw
        self._progress = Progress(f"training {self._label}", self._steps, unit="steps")

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.data)
        for _ in range(self.total):
            index = torch.randperm(n, generator=self.sampler)[: self.batch_size]
            clean = self.data.batch(index.tolist()).to(self.device)
            if not self._distortions:
                yield clean
                continue
            for _label, distort in self._distortions:
                with self._metric.reference(clean):
                    yield distort(clean)

    @property
    def distortions(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The distortions a full-reference metric is trained through (empty for a no-reference one)."""
        return [distort for _label, distort in self._distortions]

    def report(self, step: int, loss: float) -> None:
        """Log the loss of step ``step`` (0-based): every epoch's mean and, on long runs, progress."""
        self._losses.append(loss)
        done = step + 1
        log.debug("%s: step %d/%d, loss %.5f", self._label, done, self._steps, loss)
        if done % self.per_epoch == 0 or done == self._steps:
            losses = self._losses[-(((done - 1) % self.per_epoch) + 1) :]
            log.info(
                "%s: epoch %d/%d, step %d/%d, mean loss %.5f",
                self._label,
                math.ceil(done / self.per_epoch),
                math.ceil(self._steps / self.per_epoch),
                done,
                self._steps,
                sum(losses) / len(losses),
            )
        self._progress.advance(note=f"loss {loss:.5f}")

    @property
    def losses(self) -> list[float]:
        return list(self._losses)

    def loss_curve(self, max_points: int = LOSS_CURVE_POINTS) -> list[list[float]]:
        """``[[step, loss], ...]``: every step's loss, or window means when there are more than ``max_points`` steps.

        Steps are 1-based; a window's point is at its last step. MLflow shows it as the metric
        history ``train_loss``.
        """
        losses = self._losses
        width = max(1, math.ceil(len(losses) / max_points))
        return [
            [min(i + width, len(losses)), sum(losses[i : i + width]) / len(losses[i : i + width])]
            for i in range(0, len(losses), width)
        ]
