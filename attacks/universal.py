"""Universal attacks: a perturbation (or a generator) trained once per metric, then added to any image.

The four fast attacks of Shumitskaya et al., "Towards adversarial robustness verification of
no-reference image- and video-quality metrics", CVIU 2024, as the MSU Metrics Robustness
Benchmark (Antsiferova et al., AAAI 2024) trains and applies them. This module holds what they
share; each attack is one file (:mod:`attacks.uap`, :mod:`attacks.cumulative_uap`,
:mod:`attacks.generative_uap`, :mod:`attacks.cnn`).

Training (:meth:`UniversalAttack.fit`): images are prepared by
:func:`iqa_robustness.data.images.uap_train_transform` (256x256: resize when a side is under 512, else a
centre crop); each step draws a fresh random batch (``batch_size`` distinct images, a seeded
:class:`torch.Generator`); an epoch is ``ceil(N / batch_size)`` steps; the loss is the mean of
J(x) = 1 - q(x) / range over the batch. Training runs on the metric's device.

Application (:meth:`UniversalAttack.apply`): the perturbation is tiled from the top-left corner to
the image size (no resize), multiplied by the amplitude k (the benchmark uses 0.2, 0.4 and 0.8)
and added. The MSU code does not clamp the result to [0, 1], so by default neither does this;
``clamp=True`` does. A video (T, 3, H, W) is a batch of frames and gets the same perturbation on
every frame.

Artefacts: a :class:`Perturbation` saves as float32 ``.npy`` (H, W, 3) RGB, the MSU layout, plus
a PNG view in the CVIU encoding ``(delta + 0.5) * 255``; a generator saves as a ``.pt`` state
dict. With ``cache_dir``, :meth:`UniversalAttack.fit` keys a run by metric, weights, training data,
hyperparameters and seed, and reuses the saved result instead of retraining.
:func:`load_perturbation` reads MSU ``.npy`` files, the CVIU paper's PNGs (``png / 255 - 0.5``)
and generator files, including the published FACPA generators.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqa_robustness.conventions import AMPLITUDES, orient
from iqa_robustness.metrics.base import Metric

from ._unet import GRANULE, UNetGenerator
from .base import Attack

log = logging.getLogger(__name__)

#: ways to run an image-conditioned generator on sides that are not multiples of 256
TEST_TIME_MODES = ("tile", "pad")
_CACHE_FORMAT = 1
_GENERATOR_CHUNK = 8


# --------------------------------------------------------------------------- tiling and application


def tile_perturbation(delta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Repeat ``delta`` (..., h, w) from the top-left corner and crop to (..., height, width).

    This is the MSU benchmark's ``np.tile(uap, (H // h + 1, W // w + 1, 1))[:H, :W]``; nothing is
    resized, so a 256x256 perturbation keeps its pixels on a 299x299 image.
    """
    h, w = delta.shape[-2:]
    reps = [1] * (delta.ndim - 2) + [math.ceil(height / h), math.ceil(width / w)]
    return delta.repeat(*reps)[..., :height, :width]


def _clamp_passing_gradient(x: torch.Tensor) -> torch.Tensor:
    """``clamp(x, 0, 1)`` in value with an identity gradient.

    The MSU code clamps ``res.data`` in place, which the autograd graph does not see: the metric
    gets the clamped image, the perturbation gets the gradient as if there were no clamp.
    """
    return x + (x.clamp(0.0, 1.0) - x).detach()


# --------------------------------------------------------------------------- the artefact


@dataclasses.dataclass
class Perturbation:
    """A trained universal perturbation, or an image-conditioned generator that makes one per image.

    Exactly one of ``delta`` and ``generator`` is set.

    Attributes:
        delta: (1, 3, H, W) float32 perturbation, applied tiled.
        generator: U-Net whose output times ``scale`` is the perturbation of its input image.
        scale: L-inf bound of a generator's output (10/255).
        meta: provenance: attack, metric, hyperparameters, training data, seed, training time.
        from_cache: True when :meth:`UniversalAttack.fit` reused a saved run instead of training.
        path: the file this was loaded from, if any.
    """

    delta: torch.Tensor | None = None
    generator: UNetGenerator | None = None
    scale: float = 10 / 255
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    from_cache: bool = False
    path: Path | None = None

    def __post_init__(self) -> None:
        if (self.delta is None) == (self.generator is None):
            raise ValueError("a Perturbation holds either a delta or a generator, not both or neither")
        if self.delta is not None:
            delta = self.delta.detach().float()
            if delta.ndim == 3:
                delta = delta.unsqueeze(0)
            if delta.ndim != 4 or delta.shape[:2] != (1, 3):
                raise ValueError(f"a perturbation delta must be (1, 3, H, W) or (3, H, W), got {tuple(delta.shape)}")
            self.delta = delta
        if self.generator is not None:
            self.generator.eval()
            for p in self.generator.parameters():
                p.requires_grad_(False)

    # -- facts ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``delta`` (one perturbation for every image) or ``generator`` (one per image)."""
        return "delta" if self.delta is not None else "generator"

    @property
    def linf(self) -> float:
        """The largest absolute pixel value of the perturbation (before the amplitude)."""
        return float(self.delta.abs().max()) if self.delta is not None else float(self.scale)

    def to_numpy(self) -> np.ndarray:
        """The delta as (H, W, 3) float32 RGB, the MSU ``.npy`` layout."""
        if self.delta is None:
            raise TypeError("a generator has no single delta; call perturbation_for(images) instead")
        return np.ascontiguousarray(self.delta[0].permute(1, 2, 0).cpu().numpy().astype(np.float32))

    # -- use -----------------------------------------------------------------------------
    def perturbation_for(self, images: torch.Tensor, *, test_time: str = "tile") -> torch.Tensor:
        """The perturbation at the size of ``images`` (N, 3, H, W): (1, 3, H, W) or (N, 3, H, W).

        Args:
            images: the clean batch (frames of a video are a batch too).
            test_time: for a generator, how sides that are not multiples of 256 are handled:
                ``tile`` (CVIU code): run the generator on the top-left crop whose sides are the
                largest multiples of 256 (sides under 256 are edge-padded up to 256) and tile its
                output over the image; ``pad``: edge-pad the image to the next multiples of 256,
                run the generator once on all of it and crop the output.
        """
        height, width = images.shape[-2:]
        if self.delta is not None:
            return tile_perturbation(self.delta.to(images.device, images.dtype), height, width)
        if test_time not in TEST_TIME_MODES:
            raise ValueError(f"test_time must be one of {TEST_TIME_MODES}, got {test_time!r}")
        generator = self.generator.to(images.device)
        if test_time == "tile":
            crop_h, crop_w = (max(GRANULE, s // GRANULE * GRANULE) for s in (height, width))
        else:
            crop_h, crop_w = (math.ceil(s / GRANULE) * GRANULE for s in (height, width))
        source = images[..., : min(crop_h, height), : min(crop_w, width)]
        pad = (0, crop_w - source.shape[-1], 0, crop_h - source.shape[-2])
        if any(pad):
            source = F.pad(source, pad, mode="replicate")
        with torch.no_grad():
            chunks = [generator(chunk) for chunk in source.split(_GENERATOR_CHUNK)]
        delta = torch.cat(chunks) * self.scale
        return tile_perturbation(delta, height, width).to(images.dtype)

    def to(self, device: str | torch.device) -> Perturbation:
        if self.delta is not None:
            self.delta = self.delta.to(device)
        else:
            self.generator.to(device)
        return self

    # -- files ---------------------------------------------------------------------------
    def save(self, stem: str | Path) -> list[Path]:
        """Write the artefact next to ``stem`` (a path without suffix); returns the files written.

        A delta gives ``stem.npy`` (H, W, 3) float32 RGB, ``stem.png`` (CVIU view,
        ``(delta + 0.5) * 255``) and ``stem.json`` (``meta``); a generator gives ``stem.pt``
        (``{"state_dict", "scale", "meta"}``) and ``stem.json``.
        """
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        if self.delta is not None:
            array = self.to_numpy()
            written.append(_atomic(_with(stem, ".npy"), lambda f: np.save(f, array)))
            view = np.clip(np.round((array + 0.5) * 255.0), 0, 255).astype(np.uint8)
            written.append(_atomic(_with(stem, ".png"), lambda f: Image.fromarray(view).save(f, format="PNG")))
        else:
            state = {k: v.detach().cpu() for k, v in self.generator.state_dict().items()}
            payload = {"state_dict": state, "scale": self.scale, "meta": self.meta}
            written.append(_atomic(_with(stem, ".pt"), lambda f: torch.save(payload, f)))
        text = json.dumps({"kind": self.kind, "scale": self.scale, **self.meta}, indent=1, default=str)
        written.append(_atomic(_with(stem, ".json"), lambda f: f.write(text.encode())))
        return written

    @classmethod
    def from_numpy(cls, array: np.ndarray, **kwargs: Any) -> Perturbation:
        """From an (H, W, 3) RGB array (the MSU layout)."""
        array = np.asarray(array)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB perturbation (the MSU layout), got shape {array.shape}")
        delta = torch.from_numpy(np.ascontiguousarray(array.astype(np.float32).transpose(2, 0, 1)))
        return cls(delta=delta, **kwargs)

    @classmethod
    def from_msu_npy(cls, path: str | Path) -> Perturbation:
        """An MSU benchmark perturbation: ``.npy`` (H, W, 3) float32 RGB (within [-0.1, 0.1] for UAPs)."""
        path = Path(path)
        return cls.from_numpy(np.load(path), meta=_sidecar_meta(path, fmt="msu-npy"), path=path)

    @classmethod
    def from_cviu_png(cls, path: str | Path) -> Perturbation:
        """A CVIU paper perturbation PNG: RGB pixels decode as ``png / 255 - 0.5``."""
        path = Path(path)
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        perturbation = cls.from_numpy(pixels / 255.0 - 0.5, meta=_sidecar_meta(path, fmt="cviu-png"), path=path)
        if perturbation.linf > 11 / 255:
            log.warning(
                "%s decodes to values up to %.3f, beyond the 10/255 bound of the CVIU perturbations; "
                "check that it is a perturbation PNG (png / 255 - 0.5) and not a picture",
                path.name,
                perturbation.linf,
            )
        return perturbation

    @classmethod
    def from_generator_file(cls, path: str | Path) -> Perturbation:
        """A generator: a file saved by :meth:`save`, or a bare U-Net state dict (the published
        FACPA generators, output scaled by 10/255)."""
        path = Path(path)
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict):
            raise ValueError(f"{path} is not a generator state dict")
        state = payload.get("state_dict", payload)
        generator = UNetGenerator()
        try:
            generator.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"{path} does not hold the U-Net generator of the CNN-based attack (8 down / 8 up, "
                f"64 base channels, modules conv1..conv8 and dconv1..dconv8): {exc}"
            ) from exc
        meta = dict(payload.get("meta", {})) or _sidecar_meta(path, fmt="generator")
        return cls(generator=generator, scale=float(payload.get("scale", 10 / 255)), meta=meta, path=path)


def load_perturbation(path: str | Path) -> Perturbation:
    """Read a perturbation, telling the format from the file.

    - ``.npy``: MSU layout, (H, W, 3) float32 RGB;
    - ``.png`` / ``.bmp`` / ``.jpg``: the CVIU paper's encoding, ``png / 255 - 0.5`` (RGB). The
      MSU code's PNG views (``(uap + 0.1) * 255`` written with OpenCV) are pictures only: use the
      ``.npy`` next to them;
    - ``.pt`` / ``.pth``: a generator (a file saved by :meth:`Perturbation.save`, or a published
      FACPA U-Net state dict).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no perturbation file at {path}; give an MSU .npy, a CVIU .png or a generator .pt")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return Perturbation.from_msu_npy(path)
    if suffix in (".png", ".bmp", ".jpg", ".jpeg"):
        return Perturbation.from_cviu_png(path)
    if suffix in (".pt", ".pth"):
        return Perturbation.from_generator_file(path)
    raise ValueError(f"unknown perturbation format {path.name!r}: expected .npy (MSU), .png (CVIU) or .pt (generator)")


def _sidecar_meta(path: Path, *, fmt: str) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        with contextlib.suppress(ValueError):
            meta = json.loads(sidecar.read_text())
            meta.pop("kind", None)
            meta.pop("scale", None)
            return meta
    return {"format": fmt, "source": str(path)}


def _with(stem: Path, suffix: str) -> Path:
    """``stem`` plus a suffix, keeping any dots already in the name (``uap_run.v2`` -> ``uap_run.v2.npy``)."""
    return stem.with_name(stem.name + suffix)


def _atomic(path: Path, write: Any) -> Path:
    """Write through a temporary file and rename, so a reader never sees half an artefact."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        write(f)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- training data


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """Training images after the benchmark's preprocessing, and what identifies them for the cache.

    Small sets are decoded once and kept in memory; a dataset of more than
    :data:`PRELOAD_LIMIT` images (COCO, VOC) is decoded batch by batch, as the MSU loader does.

    Attributes:
        identity: dataset name and (image name, H, W) of every source image, or a content hash
            for unnamed tensors.
        images: (N, 3, 256, 256) float32 on the CPU, when kept in memory.
        dataset: the dataset decoded lazily otherwise.
    """

    identity: dict[str, Any]
    images: torch.Tensor | None = None
    dataset: Any = None

    def __len__(self) -> int:
        return int(self.images.shape[0]) if self.images is not None else len(self.dataset)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """The prepared images at ``indices`` (N, 3, 256, 256); undecodable ones are left out when
        the dataset skips errors."""
        if self.images is not None:
            return self.images[list(indices)]
        from iqa_robustness.data.images import uap_train_transform

        loaded = (self.dataset.load(self.dataset.items[i]) for i in indices)
        tensors = [uap_train_transform(t) for t in loaded if t is not None]
        if not tensors:
            raise ValueError(f"no image of a training batch of {self.dataset.name!r} could be decoded")
        return torch.stack(tensors)


#: datasets up to this many images are decoded once and kept in memory (about 0.8 MB each)
PRELOAD_LIMIT = 512


def prepare_training_set(train_images: Any) -> TrainingSet:
    """Turn the training data into a :class:`TrainingSet` (256x256 by
    :func:`iqa_robustness.data.images.uap_train_transform`).

    Args:
        train_images: a :class:`iqa_robustness.data.images.Dataset` (or a name/path that
            :func:`iqa_robustness.data.images.resolve_dataset` opens), a tensor batch (N, 3, H, W) in [0, 1],
            or an iterable of images (3, H, W) or of ``(name, image)`` pairs.
    """
    from iqa_robustness.data.images import Dataset, uap_train_transform
    from iqa_robustness.data.registry import resolve_dataset

    if isinstance(train_images, TrainingSet):
        return train_images
    if isinstance(train_images, (str, Path)):
        train_images = resolve_dataset(train_images)
    if isinstance(train_images, Dataset):
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
    prepared = torch.stack([uap_train_transform(img.detach().float().cpu()) for _, img in named]).contiguous()
    if not identity:
        sizes = [[int(s) for s in img.shape[-2:]] for _, img in named]
        if all(name is not None for name, _ in named):
            identity = {
                "dataset": None,
                "images": [[name, *size] for (name, _), size in zip(named, sizes, strict=True)],
            }
        else:
            digest = hashlib.sha256(prepared.numpy().tobytes()).hexdigest()
            identity = {"dataset": None, "n_images": len(named), "sizes": sizes, "sha256": digest}
    return TrainingSet(identity, images=prepared)


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


def _summary(identity: dict[str, Any]) -> dict[str, Any]:
    """A short description of the training data for provenance (the cache key uses all of it)."""
    images = identity.get("images")
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    n_images = len(images) if images is not None else identity.get("n_images")
    return {"dataset": identity.get("dataset"), "n_images": n_images, "digest": digest}


def _metric_fingerprint(metric: Metric) -> str:
    """Identify a metric's parameter values cheaply: per tensor, its name, shape and rounded sums."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in metric.state_dict().items():
            values = tensor.detach().double()
            stats = (float(values.sum()), float(values.abs().sum())) if values.numel() else (0.0, 0.0)
            digest.update(f"{name}:{tuple(tensor.shape)}:{stats[0]:.6g}:{stats[1]:.6g};".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- the attack base class


@dataclasses.dataclass(frozen=True)
class UniversalAttack(Attack):
    """Base class: trained once with :meth:`fit`, then applied to any image with :meth:`apply`.

    Attributes:
        epochs: passes over the training set; an epoch is ``ceil(N / batch_size)`` steps.
        batch_size: images per step, drawn afresh at random each step.
        eps: L-inf bound of the perturbation.
    """

    family: ClassVar[str] = "uap"
    universal: ClassVar[bool] = True
    iterations_attr: ClassVar[str | None] = "epochs"

    epochs: int = 5
    batch_size: int = 8
    eps: float = 0.1

    # -- training ------------------------------------------------------------------------
    def fit(
        self,
        metric: Metric,
        train_images: Any,
        *,
        seed: int = 0,
        steps: int | None = None,
        max_steps: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> Perturbation:
        """Train the perturbation (or generator) against ``metric``.

        Args:
            metric: the attacked metric; training runs on its device.
            train_images: see :func:`prepare_training_set`.
            seed: seeds batch sampling, initial noise and generator weights and dropout.
            steps: total optimisation steps instead of ``epochs * ceil(N / batch_size)`` (short CI runs).
            max_steps: at most this many steps (the suite's CPU default); ``steps`` wins when given.
            cache_dir: folder of saved runs; a run with the same key is loaded instead of retrained.

        Returns:
            The trained :class:`Perturbation`, with provenance in ``meta``.
        """
        self.check_metric(metric)
        for label, value in (("steps", steps), ("max_steps", max_steps)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be a positive number of optimisation steps, got {value}")
        data = prepare_training_set(train_images)
        per_epoch = math.ceil(len(data) / self.batch_size)
        total = steps if steps is not None else self.epochs * per_epoch
        if steps is None and max_steps is not None:
            total = min(total, max_steps)
        key_fields = {
            "format": _CACHE_FORMAT,
            "attack": self.name,
            "hyperparameters": dataclasses.asdict(self),
            "metric": metric.name,
            "weights_mode": metric.weights_mode,
            "weight_files": list(metric.spec.weight_files),
            "weights_fingerprint": _metric_fingerprint(metric),
            "training_data": data.identity,
            "seed": seed,
            "steps": total,
        }
        key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()
        stem = Path(cache_dir) / f"{self.name}_{metric.name}_{key[:16]}" if cache_dir is not None else None
        if stem is not None:
            cached = self._load_cached(stem, key)
            if cached is not None:
                return cached

        device = metric.device
        log.info(
            "training %s against %s on %s: %d images, %d steps (%d per epoch), batch %d",
            self.name,
            metric.name,
            device,
            len(data),
            total,
            per_epoch,
            self.batch_size,
        )
        sampler = torch.Generator().manual_seed(seed)
        batches = _Batches(data, self.batch_size, total, per_epoch, sampler, device, self.name, metric.name)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            perturbation = self._train(metric, batches)
        seconds = time.perf_counter() - start
        perturbation.meta.update(
            attack=self.name,
            metric=metric.name,
            weights_mode=metric.weights_mode,
            hyperparameters=dataclasses.asdict(self),
            training_data=_summary(data.identity),
            seed=seed,
            steps=total,
            full_epochs=steps is None and total == self.epochs * per_epoch,
            device=str(device),
            train_seconds=round(seconds, 3),
            key=key,
        )
        log.info("trained %s against %s in %.1f s", self.name, metric.name, seconds)
        if stem is not None:
            perturbation.path = perturbation.save(stem)[0]
            log.info("saved %s", perturbation.path)
        return perturbation

    def _train(self, metric: Metric, batches: _Batches) -> Perturbation:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_cached(self, stem: Path, key: str) -> Perturbation | None:
        for suffix in (".npy", ".pt"):
            path = _with(stem, suffix)
            if path.is_file() and _with(stem, ".json").is_file():
                perturbation = load_perturbation(path)
                if perturbation.meta.get("key") != key:
                    continue
                perturbation.from_cache = True
                log.info(
                    "reusing the trained %s for %s from %s (same key)",
                    self.name,
                    perturbation.meta.get("metric"),
                    path,
                )
                return perturbation
        return None

    # -- application ---------------------------------------------------------------------
    def apply(
        self, perturbation: Perturbation, images: torch.Tensor, amplitude: float, clamp: bool = False
    ) -> torch.Tensor:
        """Attack a batch (or the frames of a video) with a trained perturbation.

        Args:
            perturbation: from :meth:`fit` or :func:`load_perturbation`.
            images: (N, 3, H, W) in [0, 1].
            amplitude: the factor k of the benchmark (0.2, 0.4, 0.8).
            clamp: clamp the result to [0, 1] (the MSU code does not).

        Returns:
            ``images + amplitude * tiled perturbation``, detached.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W) or video frames (T, 3, H, W), got {tuple(images.shape)}")
        with torch.no_grad():
            delta = self._perturbation_for(perturbation, images)
            out = images + amplitude * delta
            return (out.clamp(0.0, 1.0) if clamp else out).detach()

    def _perturbation_for(self, perturbation: Perturbation, images: torch.Tensor) -> torch.Tensor:
        return perturbation.perturbation_for(images)

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            f"{self.name} is a universal attack: train it once with attack.fit(metric, train_images) "
            "and apply the result with attack.apply(perturbation, images, amplitude)"
        )


class _Batches:
    """Fresh random training batches, one per step, with progress logging.

    Each step takes the first ``batch_size`` indices of a new random permutation (the MSU code's
    ``next(iter(shuffled_loader))``), so the images of a batch are distinct.
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
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.total = total
        self.per_epoch = per_epoch
        self.sampler = sampler
        self.device = device
        self._label = f"{attack} vs {metric}"
        self._losses: list[float] = []
        self._every = max(1, total // 20)

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.data)
        for _ in range(self.total):
            index = torch.randperm(n, generator=self.sampler)[: self.batch_size]
            yield self.data.batch(index.tolist()).to(self.device)

    def report(self, step: int, loss: float) -> None:
        """Log the loss of step ``step`` (0-based): every epoch's mean and, on long runs, progress."""
        self._losses.append(loss)
        done = step + 1
        log.debug("%s: step %d/%d, loss %.5f", self._label, done, self.total, loss)
        if done % self.per_epoch == 0 or done == self.total:
            losses = self._losses[-(((done - 1) % self.per_epoch) + 1) :]
            log.info(
                "%s: epoch %d/%d, step %d/%d, mean loss %.5f",
                self._label,
                math.ceil(done / self.per_epoch),
                math.ceil(self.total / self.per_epoch),
                done,
                self.total,
                sum(losses) / len(losses),
            )
        elif done % self._every == 0:
            log.info("%s: step %d/%d, loss %.5f", self._label, done, self.total, loss)

    @property
    def losses(self) -> list[float]:
        return list(self._losses)


# --------------------------------------------------------------------------- evaluation over amplitudes


@dataclasses.dataclass
class AmplitudeSweep:
    """Raw metric scores of clean images and of the attacked images at each amplitude.

    Attributes:
        clear: (N,) raw scores of the clean images.
        attacked: amplitude -> (N,) raw scores of the attacked images.
        lower_better: the metric's orientation.
    """

    clear: torch.Tensor
    attacked: dict[float, torch.Tensor]
    lower_better: bool

    def gain(self, amplitude: float) -> float:
        """Mean raw gain in quality (higher = the metric was fooled more) at one amplitude."""
        return float(orient(self.attacked[amplitude] - self.clear, self.lower_better).mean())

    def mean_gain(self) -> float:
        """The gain averaged over the amplitudes, as the benchmark reports universal attacks."""
        return sum(self.gain(a) for a in self.attacked) / len(self.attacked)


def sweep_amplitudes(
    attack: UniversalAttack,
    perturbation: Perturbation,
    metric: Metric,
    images: torch.Tensor,
    amplitudes: Iterable[float] = AMPLITUDES,
    *,
    clamp: bool = False,
) -> AmplitudeSweep:
    """Score ``images`` clean and attacked at each amplitude (no gradients)."""
    images = images.to(metric.device)
    with torch.no_grad():
        clear = metric(images).float().cpu()
        attacked = {
            float(k): metric(attack.apply(perturbation, images, k, clamp=clamp)).float().cpu() for k in amplitudes
        }
    return AmplitudeSweep(clear, attacked, metric.lower_better)
