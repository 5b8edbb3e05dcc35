"""Attack configuration objects, their registry, and the math the attacks share.

An attack is a frozen dataclass of hyperparameters (defaults = the MSU benchmark code); the
metric arrives at call time: ``attack(metric, images)``. Its ``repr`` and :meth:`params`
serve as the pytest id and the MLflow params.

Losses are summed over the batch so that each image gets exactly its own gradient: running a
batch gives the same per-image result as running each image alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, TypeVar

import torch

from iqa_robustness.metrics.base import Metric
from iqa_robustness.metrics.registry import select_names


class UnknownAttackError(ValueError):
    """Raised for an attack name the registry does not know; the message suggests close matches."""


class NotDifferentiableError(RuntimeError):
    """A gradient attack was asked to run on a metric without a usable gradient."""


@dataclasses.dataclass(frozen=True)
class Attack:
    """Base class: hyperparameters only. Subclasses are frozen dataclasses too.

    Class attributes (facts, not hyperparameters):
        name: registry name (``ifgsm``).
        family: ``iterative`` (FGSM family), ``perceptual`` (korhonen, madc), ``uap`` (universal
            perturbations) or ``learned`` (image-conditioned generator).
        universal: trained once, then applied to any image (``fit`` + ``apply``).
        needs_gradient: requires a differentiable metric.
        learned: trains a generator network (generative-uap, cnn): the ``learned`` marker.
        iterations_attr: name of the field holding the number of forward+backward passes.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "iterative"
    universal: ClassVar[bool] = False
    needs_gradient: ClassVar[bool] = True
    learned: ClassVar[bool] = False
    iterations_attr: ClassVar[str | None] = "iters"

    def params(self) -> dict[str, Any]:
        """Hyperparameters as a flat dict (MLflow params)."""
        return {"attack": self.name, **dataclasses.asdict(self)}

    @property
    def iterations(self) -> int:
        return int(getattr(self, self.iterations_attr)) if self.iterations_attr else 1

    def check_metric(self, metric: Metric) -> None:
        if self.needs_gradient and not metric.spec.differentiable:
            raise NotDifferentiableError(
                f"{self.name} needs gradients, but metric {metric.name!r} is declared non-differentiable"
            )

    def __call__(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        """Attack a batch (N, 3, H, W) in [0, 1]; returns the adversarial batch, detached."""
        self.check_metric(metric)
        return self.run(metric, images.detach()).detach()

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


# --- shared math ------------------------------------------------------------------------


_RESEARCH_CODE_GRADIENTS = contextvars.ContextVar("research_code_gradients", default=False)


def loss_grad(metric: Metric, x: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed per-image loss J with respect to the input batch only."""
    x = x.detach().requires_grad_(True)
    loss = metric.loss(x).sum()
    if _RESEARCH_CODE_GRADIENTS.get():
        loss.backward()  # also fills every parameter's .grad, as the research scripts do
        return x.grad
    (grad,) = torch.autograd.grad(loss, x)
    return grad


@contextlib.contextmanager
def research_code_gradients(metric: Metric) -> Iterator[None]:
    """Take gradients the way the MSU benchmark's research scripts do, for speed comparisons only.

    Inside the block the metric's parameters require gradients and :func:`loss_grad` calls
    ``loss.backward()``, which computes and accumulates every parameter's gradient too. The
    results are the same; the cost is what ``iqa-robustness bench`` compares the suite against.
    """
    params = [p for p in metric.parameters() if not p.requires_grad]
    for p in params:
        p.requires_grad_(True)
    token = _RESEARCH_CODE_GRADIENTS.set(True)
    try:
        yield
    finally:
        _RESEARCH_CODE_GRADIENTS.reset(token)
        for p in params:
            p.requires_grad_(False)
            p.grad = None


def project_linf(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta.clamp(-eps, eps)


# --- registry ---------------------------------------------------------------------------

_ATTACKS: dict[str, type[Attack]] = {}
A = TypeVar("A", bound=type[Attack])


def register_attack(cls: A) -> A:
    """Class decorator: make an attack available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a class attribute `name`")
    _ATTACKS[cls.name] = cls
    return cls


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    if key in _ATTACKS:
        return key
    close = difflib.get_close_matches(key, list(_ATTACKS), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownAttackError(f"unknown attack {name!r}{hint} (known: {', '.join(sorted(_ATTACKS))})")


def attack_class(name: str) -> type[Attack]:
    return _ATTACKS[_canonical(name)]


def create_attack(name: str, **hyperparameters: Any) -> Attack:
    """An attack by name with the benchmark's defaults, overridden by ``hyperparameters``."""
    cls = attack_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(hyperparameters) - fields
    if unknown:
        raise TypeError(f"attack {cls.name!r} has no hyperparameter(s) {sorted(unknown)}; it has {sorted(fields)}")
    return cls(**hyperparameters)


def list_attacks(
    patterns: str | Iterable[str] | None = None,
    where: Callable[[type[Attack]], bool] | None = None,
) -> list[str]:
    """Registered attack names, sorted; ``patterns`` as in :func:`metrics.list_metrics`."""
    names = select_names(patterns, sorted(_ATTACKS), _canonical)
    if where is not None:
        names = [n for n in names if where(_ATTACKS[n])]
    return names
