"""Metric facts as data, the wrapper every attack talks to, and the one place scores are oriented.

Conventions follow the MSU Metrics Robustness Benchmark (Antsiferova et al., AAAI 2024):
an image batch is float32 (N, 3, H, W), RGB in [0, 1]; "quality" q(x) is the metric score
oriented so that higher means better, and every attack minimises J(x) = 1 - q(x) / range.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from iqa_robustness.conventions import orient

MetricKind = Literal["nr-image", "nr-video", "fr"]
WeightsMode = Literal["pretrained", "random"]


@dataclass(frozen=True)
class MetricSpec:
    """Everything the suite needs to know about a metric without building it.

    Attributes:
        name: registry name (``paq2piq``, ``cnniqa-live``, ...).
        kind: ``nr-image``, ``nr-video`` or ``fr``.
        lower_better: True when a lower raw score means better quality (NIQE, BRISQUE, DMOS).
        bounds: (low, high) score bounds; ``range = high - low`` scales the attack loss.
        differentiable: False when the gradient is unusable (zero or undefined); gradient
            attacks then skip the metric with this fact as the reason.
        min_side: smallest image side the metric accepts, if any.
        fixed_size: (H, W) the metric resizes to or requires, if any.
        weight_files: parameter files the metric loads (names as the original release or pyiqa
            cache spells them); tests and the weights resolver use them.
        heavy: a large model that should stay in one pytest-xdist worker.
        needs_gpu: impractically slow on CPU; grid cases are marked ``gpu``.
        source: where the implementation comes from (``own``, ``pyiqa``, ``piq``, ``torchmetrics``,
            ``module:...``); a library's metric needs that library installed (``metrics/_libraries.py``).
        description: one line for ``list`` output and docs.
    """

    name: str
    kind: MetricKind = "nr-image"
    lower_better: bool = False
    bounds: tuple[float, float] = (0.0, 1.0)
    differentiable: bool = True
    min_side: int | None = None
    fixed_size: tuple[int, int] | None = None
    weight_files: tuple[str, ...] = ()
    heavy: bool = False
    needs_gpu: bool = False
    source: str = "own"
    description: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def range(self) -> float:
        low, high = self.bounds
        return float(high - low)

    @property
    def is_video(self) -> bool:
        return self.kind == "nr-video"

    @property
    def is_full_reference(self) -> bool:
        return self.kind == "fr"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError that says what to do when ``x`` does not fit this metric."""
        expected = "(T, 3, H, W) frames of one clip" if self.is_video else "(N, 3, H, W) image batch"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.name}: expected a torch.Tensor {expected}, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{self.name}: expected a {expected} with 3 RGB channels, got shape {tuple(x.shape)}; "
                "convert grayscale/RGBA images to RGB and add a batch dimension"
            )
        if self.min_side is not None and min(x.shape[-2:]) < self.min_side:
            raise ValueError(
                f"{self.name}: images must be at least {self.min_side} px on each side, got "
                f"{tuple(x.shape[-2:])}; resize or choose a larger dataset"
            )


class Metric(nn.Module):
    """A quality metric as the attacks see it: raw scores, oriented quality and the attack loss.

    Subclasses implement :meth:`score` on a batch in [0, 1] and return a (N,) tensor
    (one value per clip for video metrics). Parameters are frozen: attacks differentiate
    with respect to the input only.

    The spec is passed to the constructor or declared once as a class attribute
    (``spec = MetricSpec(...)``); a subclass with a class attribute can be built as ``MyMetric()``
    and named on the command line as ``--metric my_module:MyMetric``.

    A full-reference metric (``kind="fr"``) scores S(reference, distorted) but is called like any
    other, on the distorted batch alone, while its reference batch is bound
    (``with metric.reference(clean): metric(distorted)``): every attack then works on it
    unchanged, and its loss and gradient are taken with respect to the distorted input only.
    Subclasses of :class:`FullReferenceMetric` implement :meth:`FullReferenceMetric.compare`.
    """

    spec: MetricSpec

    def __init__(self, spec: MetricSpec | None = None, weights_mode: WeightsMode = "pretrained") -> None:
        super().__init__()
        spec = spec if spec is not None else getattr(type(self), "spec", None)
        if not isinstance(spec, MetricSpec):
            raise TypeError(
                f"{type(self).__name__} has no MetricSpec: pass one to Metric.__init__ or declare a class "
                "attribute `spec = MetricSpec(name=..., bounds=(low, high), lower_better=...)`"
            )
        self.spec = spec
        self.weights_mode: WeightsMode = weights_mode
        self.autocast_dtype: torch.dtype | None = None
        self.channels_last = False
        self._reference: torch.Tensor | None = None

    # -- to implement -------------------------------------------------------------------
    def score(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared behaviour ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def lower_better(self) -> bool:
        return self.spec.lower_better

    @property
    def is_random(self) -> bool:
        """True in smoke mode: scores from random weights are never benchmark numbers."""
        return self.weights_mode == "random"

    @property
    def random_scores(self) -> bool:
        """True when a score is a random draw that a query attack must not spend ahead of its use.

        A random defence draws each query from its image's own stream (docs/defences.md); a query
        attack that scored candidates it then drops (:class:`~attacks.queries.Lookahead`) would move that
        stream on. Such a metric is queried one iteration at a time. False for a deterministic metric.
        """
        return False

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def freeze(self) -> Metric:
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def set_speed_options(self, *, autocast: torch.dtype | None = None, channels_last: bool = False) -> Metric:
        """Mixed precision and memory layout for :meth:`forward` (off by default: scores then differ).

        Args:
            autocast: run :meth:`score` under ``torch.autocast`` with this dtype (``torch.float16``
                or ``torch.bfloat16``); scores come back as float32.
            channels_last: convert the parameters and every input to the channels-last layout.
        """
        self.autocast_dtype = autocast
        self.channels_last = channels_last
        self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.spec.check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            out = self.score(x)
        else:
            with torch.autocast(x.device.type, dtype=self.autocast_dtype):
                out = self.score(x)
            out = out.float()
        return out.reshape(-1)

    # -- full-reference metrics ----------------------------------------------------------
    @contextlib.contextmanager
    def reference(self, images: torch.Tensor | None) -> Iterator[Metric]:
        """Bind the reference batch of a full-reference metric for the calls inside the block.

        ``None`` binds nothing (so callers need not ask the metric's kind first); on a
        no-reference metric a reference is refused. Blocks nest: the outer binding comes back.

        Raises:
            TypeError: a reference for a no-reference metric.
        """
        if images is None:
            yield self
            return
        if not self.spec.is_full_reference:
            raise TypeError(f"{self.name} is a no-reference metric ({self.spec.kind}); it takes no reference images")
        previous, self._reference = self._reference, images.detach()
        try:
            yield self
        finally:
            self._reference = previous

    @contextlib.contextmanager
    def reference_rows(self, index: torch.Tensor) -> Iterator[Metric]:
        """Bind rows ``index`` of the bound reference batch for the calls inside the block.

        A query-based attack scores many candidates of one image at a time; each candidate needs its
        own image's reference. On a no-reference metric, or with nothing bound, this binds nothing.

        Args:
            index: one row of the bound reference batch per input of the next calls (``LongTensor``).
        """
        if self._reference is None:
            yield self
            return
        with self.reference(self._reference[index.to(self._reference.device)]):
            yield self

    def bound_reference(self, distorted: torch.Tensor) -> torch.Tensor:
        """The reference batch bound by :meth:`reference`, on the device and dtype of ``distorted``.

        Raises:
            RuntimeError: no reference is bound.
            ValueError: its shape is not the distorted batch's.
        """
        reference = self._reference
        if reference is None:
            raise RuntimeError(
                f"{self.name} is a full-reference metric: bind the reference images first, "
                f"`with metric.reference(clean): metric(distorted)`, or call metric.score_pair(distorted, clean)"
            )
        if reference.shape != distorted.shape:
            raise ValueError(
                f"{self.name}: the reference batch {tuple(reference.shape)} does not match the distorted batch "
                f"{tuple(distorted.shape)}; bind one reference image per distorted image, of the same size"
            )
        return reference.to(device=distorted.device, dtype=distorted.dtype)

    def score_pair(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Raw scores S(reference, distorted) of a full-reference metric, through :meth:`forward`."""
        with self.reference(reference):
            return self(distorted)

    def orient(self, scores: torch.Tensor) -> torch.Tensor:
        """Raw scores -> quality q (higher is better). The only place orientation happens."""
        return orient(scores, self.spec.lower_better)

    def quality(self, x: torch.Tensor) -> torch.Tensor:
        return self.orient(self(x))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image attack loss J(x) = 1 - q(x) / range (MSU code); sum it for per-image gradients."""
        return 1.0 - self.quality(x) / self.spec.range

    def extra_repr(self) -> str:
        return f"name={self.spec.name!r}, weights={self.weights_mode!r}"


class FullReferenceMetric(Metric):
    """Base class of full-reference metrics: implement :meth:`compare` on (distorted, reference).

    The suite calls it on the distorted batch while the reference is bound (see :class:`Metric`);
    :meth:`score` hands both to :meth:`compare`, which returns one raw score per image pair.
    """

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.compare(x, self.bound_reference(x))

    def compare(self, distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def metric_identity(metric: Metric) -> str:
    """Digest of a built metric: name, class, weights mode and the exact bytes of every parameter and buffer.

    Two metrics with the same identity compute the same scores (up to the code of their class),
    so it keys what is computed from a metric: a case's fingerprint (``--resume``) and the cache
    of universal perturbations trained against it. A metric wrapping a video metric (scoring
    images as one-frame clips) is identified by the wrapped metric's class.
    """
    import hashlib

    cls = type(getattr(metric, "video_metric", metric))
    digest = hashlib.sha256(f"{metric.name}|{cls.__module__}.{cls.__qualname__}|{metric.weights_mode}".encode())
    with torch.no_grad():
        for name, tensor in metric.state_dict().items():
            values = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(values.shape)}:{values.dtype};".encode())
            if values.numel():
                digest.update(values.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
