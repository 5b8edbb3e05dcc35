"""Universal attacks: a perturbation (or a generator) trained once per metric, then added to any image.

The four fast attacks of Shumitskaya et al., "Towards adversarial robustness verification of
no-reference image- and video-quality metrics", CVIU 2024, as the MSU Metrics Robustness
Benchmark (Antsiferova et al., AAAI 2024) trains and applies them. This module holds their base
class; each attack is one file (:mod:`attacks.uap`, :mod:`attacks.cumulative_uap`,
:mod:`attacks.generative_uap`, :mod:`attacks.cnn`), the artefact and its formats are in
:mod:`attacks.perturbation`, the training data and batches in :mod:`attacks.training`.

Training (:meth:`UniversalAttack.fit`): images prepared by
:func:`attacks.training.uap_train_transform`; each step draws a fresh random batch; an epoch is
``ceil(N / batch_size)`` steps; the loss is the mean of J(x) = 1 - q(x) / range over the batch.
Training runs on the metric's device. With ``cache_dir``, a run is keyed by metric, weights,
training data, hyperparameters and seed, and the saved result is reused instead of retraining.

Application (:meth:`UniversalAttack.apply`): the perturbation is tiled from the top-left corner to
the image size (no resize), multiplied by the amplitude k (the benchmark uses 0.2, 0.4 and 0.8)
and added. The MSU code does not clamp the result to [0, 1], so by default neither does this;
``clamp=True`` does. A video (T, 3, H, W) is a batch of frames and gets the same perturbation on
every frame. Every result is checked against the budget the attack class declares.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from iqa_robustness.metrics.base import Metric, metric_identity

from .base import Attack
from .budget import BudgetExceededError, active_budgets
from .perturbation import Perturbation, add_suffix, load_perturbation
from .training import Batches, prepare_training_set, training_summary

log = logging.getLogger(__name__)

_CACHE_FORMAT = 1


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
    #: trains on the training images as given, each at its own size, not on the benchmark's 256x256 copies
    trains_at_native_size: ClassVar[bool] = False

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
        distortions: Sequence[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = (),
    ) -> Perturbation:
        """Train the perturbation (or generator) against ``metric``.

        Args:
            metric: the attacked metric; training runs on its device.
            train_images: see :func:`prepare_training_set`.
            seed: seeds batch sampling, initial noise and generator weights and dropout.
            steps: total optimisation steps instead of ``epochs * ceil(N / batch_size)`` (short CI runs).
            max_steps: at most this many steps (the suite's CPU default); ``steps`` wins when given.
            cache_dir: folder of saved runs; a run with the same key is loaded instead of retrained.
            distortions: ``(label, distort)`` pairs for a full-reference metric (required for one):
                each drawn batch ``y`` gives one optimisation step per distortion, on
                ``distort(y)`` with ``y`` bound as the reference, as the benchmark trains FR metrics
                on JPEG copies at each quality. Labels key the cache.

        Returns:
            The trained :class:`Perturbation`, with provenance in ``meta``.

        Raises:
            ValueError: a full-reference metric without distortions, or distortions for a
                no-reference one.
        """
        self.check_metric(metric)
        if metric.spec.is_full_reference != bool(distortions):
            raise ValueError(
                f"{metric.name} is a full-reference metric: give distortions=[(label, distort)], the inputs it is "
                "trained on with the clean batch as the reference (the suite uses JPEG copies)"
                if metric.spec.is_full_reference
                else f"{metric.name} is a no-reference metric: it trains on the clean images, without distortions"
            )
        for label, value in (("steps", steps), ("max_steps", max_steps)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be a positive number of optimisation steps, got {value}")
        data = prepare_training_set(train_images, native=self.trains_at_native_size)
        per_epoch = math.ceil(len(data) / (self.batch_size or len(data)))  # batch_size 0: the whole set
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
            "metric_identity": metric_identity(metric),
            "training_data": data.identity,
            "seed": seed,
            "steps": total,
        }
        if distortions:  # older no-reference keys stay valid
            key_fields["distortions"] = [label for label, _ in distortions]
        if self.trains_at_native_size:
            key_fields["training_images"] = "as given"
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
        batches = Batches(
            data, self.batch_size, total, per_epoch, sampler, device, self.name, metric.name, metric, distortions
        )
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
            training_data=training_summary(data.identity),
            seed=seed,
            steps=total,
            distortions=[label for label, _ in distortions],
            full_epochs=steps is None and total == self.epochs * per_epoch,
            device=str(device),
            train_seconds=round(seconds, 3),
            key=key,
            loss_curve=batches.loss_curve(),
        )
        log.info("trained %s against %s in %.1f s", self.name, metric.name, seconds)
        if stem is not None:
            perturbation.path = perturbation.save(stem)[0]
            log.info("saved %s", perturbation.path)
        return perturbation

    def _train(self, metric: Metric, batches: Batches) -> Perturbation:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_cached(self, stem: Path, key: str) -> Perturbation | None:
        for suffix in (".npy", ".pt"):
            path = add_suffix(stem, suffix)
            if path.is_file() and add_suffix(stem, ".json").is_file():
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

        Raises:
            BudgetExceededError: the result leaves the budget the class declares (a perturbation
                trained or published with a larger bound than this attack's hyperparameters).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W) or video frames (T, 3, H, W), got {tuple(images.shape)}")
        with torch.no_grad():
            delta = self._perturbation_for(perturbation, images)
            out = images + amplitude * delta
            out = (out.clamp(0.0, 1.0) if clamp else out).detach()
        for budget in active_budgets(self):
            try:
                budget.check(self, images, out, amplitude)
            except BudgetExceededError as exc:
                source = f" (perturbation from {perturbation.path})" if perturbation.path is not None else ""
                raise BudgetExceededError(f"{exc}{source}") from None
        return out

    def _perturbation_for(self, perturbation: Perturbation, images: torch.Tensor) -> torch.Tensor:
        return perturbation.perturbation_for(images)

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            f"{self.name} is a universal attack: train it once with attack.fit(metric, train_images) "
            "and apply the result with attack.apply(perturbation, images, amplitude)"
        )
