"""Attack configuration objects, their registry, and the math the attacks share.

An attack is a frozen dataclass of hyperparameters (defaults = the MSU benchmark code); the
metric arrives at call time: ``attack(metric, images)``. Its ``repr`` and :meth:`params`
serve as the pytest id and the MLflow params. Each class declares its perturbation budget
(:mod:`attacks.budget`), and the base class checks every result against it.

An L-inf budget ``b`` (``--eps``) puts an attack at that budget by one rule,
:meth:`Attack.values_at_budget`: the benchmark's preset for that level when the class declares
``presets`` (:mod:`attacks.presets`), otherwise the field of the class's L-inf bound becomes ``b``, and
the step the class names in ``budget_step`` becomes ``b / iterations``. A class declares all three as data.

Losses are summed over the batch so that each image gets exactly its own gradient: running a
batch gives the same per-image result as running each image alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import torch

from iqa_robustness.metrics.base import Metric
from iqa_robustness.registry import Registry

from .budget import Budget, active_budgets, declared_budgets
from .presets import Presets


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
            perturbations), ``learned`` (image-conditioned generator) or ``blackbox`` (query-based, scores
            only: :mod:`attacks.queries`).
        universal: trained once, then applied to any image (``fit`` + ``apply``).
        needs_gradient: requires a differentiable metric.
        learned: trains a generator network (generative-uap, cnn): the ``learned`` marker.
        iterations_attr: name of the field holding the number of forward+backward passes (``queries``
            for a query-based attack: its budget of metric calls per image).
        budget: the bound every result keeps (:class:`~attacks.budget.Budget`), a tuple of bounds that
            all hold, or ``None`` when the attack's code guarantees none. Every registered class declares it.
        budget_step: ``(step field, iterations field)`` when the step scales with an L-inf budget
            (``("alpha", "iters")``: ``alpha = b / iters``); ``None`` when no step does.
        opt_in: selected only by its own name, never by ``all`` or a glob (the ``certify`` kind, which
            is no attack of the benchmark's and costs many metric calls per image).
        budget_axis: False for a class whose cases run once whatever the L-inf budgets of ``--eps``
            (``certify`` has an L2 radius of its own); :meth:`AttackSpec.at_budget
            <attacks.spec.AttackSpec.at_budget>` then leaves its spec as it is.
        presets: the follow-up benchmark's calibrated value per budget level (:class:`~attacks.presets.Presets`),
            which a budget takes before the L-inf rule; ``None`` when the benchmark has none.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "iterative"
    universal: ClassVar[bool] = False
    needs_gradient: ClassVar[bool] = True
    learned: ClassVar[bool] = False
    iterations_attr: ClassVar[str | None] = "iters"
    budget: ClassVar[Budget | tuple[Budget, ...] | None] = None
    budget_step: ClassVar[tuple[str, str] | None] = None
    opt_in: ClassVar[bool] = False
    budget_axis: ClassVar[bool] = True
    presets: ClassVar[Presets | None] = None

    def hyperparameters(self) -> dict[str, Any]:
        """Every field with its value; an optional bound left unset (``linf=None``) is no hyperparameter of the run."""
        unset = {b.field for b in declared_budgets(self.budget) if not b.active(self)}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unset}

    def params(self) -> dict[str, Any]:
        """Hyperparameters as a flat dict (MLflow params)."""
        return {"attack": self.name, **self.hyperparameters()}

    @classmethod
    def budget_field(cls) -> str | None:
        """The hyperparameter an L-inf budget sets: the field of the first L-inf bound the class declares."""
        return next((b.field for b in declared_budgets(cls.budget) if b.bounds_linf), None)

    @classmethod
    def values_at_budget(
        cls, budget: float, values: Mapping[str, Any], metric: str | None = None
    ) -> dict[str, Any] | None:
        """The hyperparameters that put this attack at the L-inf budget ``budget`` (``--eps``).

        The rule: a class with ``presets`` takes the benchmark's preset for that level and metric, where
        there is one (:meth:`attacks.presets.Presets.value`); otherwise the field of the class's L-inf bound
        (:meth:`budget_field`) takes ``budget``; with a ``budget_step`` ``(step, iterations)``, the step
        takes ``budget / values[iterations]``, so the steps still add up to the budget. Universal attacks
        bound their perturbation at amplitude 1, so ``budget`` is their bound at amplitude 1.

        Args:
            budget: the L-inf radius, in [0, 1] pixel units (4/255 = 0.0157).
            values: every hyperparameter of the attack as it would run (defaults and given values).
            metric: the attacked metric's name, for a preset calibrated per metric.

        Returns:
            Field -> value (the field the budget bounds first), or ``None`` when the class has neither a
            preset at this level nor an L-inf bound a budget could set.
        """
        if cls.presets is not None:
            preset = cls.presets.value(budget, metric)
            if preset is not None:
                return {cls.presets.field: preset}
        field = cls.budget_field()
        if field is None:
            return None
        derived: dict[str, Any] = {field: budget}
        if cls.budget_step is not None:
            step, iterations = cls.budget_step
            derived[step] = budget / values[iterations]
        return derived

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every hyperparameter with its default, in declaration order."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @property
    def iterations(self) -> int:
        return int(getattr(self, self.iterations_attr)) if self.iterations_attr else 1

    def check_metric(self, metric: Metric) -> None:
        if self.needs_gradient and not metric.spec.differentiable:
            raise NotDifferentiableError(
                f"{self.name} needs gradients, but metric {metric.name!r} is declared non-differentiable"
            )

    def __call__(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        """Attack a batch (N, 3, H, W) in [0, 1]; returns the adversarial batch, detached.

        Raises:
            BudgetExceededError: the result leaves the budget the class declares.
        """
        self.check_metric(metric)
        images = images.detach()
        adversarial = self.run(metric, images).detach()
        for budget in active_budgets(self):
            budget.check(self, images, adversarial)
        return adversarial

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


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Each image's ``delta`` of a batch scaled onto the L2 ball of radius ``eps`` (unchanged inside it).

    A scale of at most 1 keeps ``x + delta`` in [0, 1] when ``x`` and ``x + delta`` are: the result
    lies on the segment between them.
    """
    norms = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.ndim - 1)))
    return delta * (eps / norms.clamp_min(1e-12)).clamp(max=1.0)


def project_onto_ball(x: torch.Tensor, center: torch.Tensor, radius: float | None) -> torch.Tensor:
    """``x`` moved onto the L-inf ball of ``radius`` around ``center`` (unchanged for ``None``: no ball)."""
    return x if radius is None else center + project_linf(x - center, radius)


# --- registry ---------------------------------------------------------------------------


def attack_key(name: str) -> str:
    """The attack registry's key rule: case-insensitive, ``_`` and ``-`` alike (``cumulative_UAP``)."""
    return name.strip().lower().replace("_", "-")


ATTACKS: Registry[type[Attack]] = Registry(
    "attack",
    error=UnknownAttackError,
    normalise=attack_key,
    hint=lambda: f"known: {', '.join(ATTACKS.names())}",
)
A = TypeVar("A", bound=type[Attack])


def register_attack(cls: A) -> A:
    """Class decorator: make an attack available by its ``name``.

    The class must declare its ``budget`` (a :class:`~attacks.budget.Budget`, or ``None`` when its
    code guarantees no bound), so that no attack is left unchecked by accident.
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a class attribute `name`")
    if attack_key(cls.name) != cls.name:
        raise ValueError(f"attack name {cls.name!r} must be lower case with dashes: {attack_key(cls.name)!r}")
    # declared by the class or a registrable ancestor, not inherited from an abstract base (no name)
    if not any("budget" in vars(k) for k in cls.__mro__ if getattr(k, "name", "")):
        raise TypeError(
            f'{cls.__name__} must declare its budget: `budget = Budget.linf("eps")` '
            "(or None, saying in the docstring why its code guarantees no bound)"
        )
    ATTACKS.register(cls.name, cls)
    return cls


def unregister_attack(name: str) -> None:
    """Remove an attack (plugins and tests that register one temporarily)."""
    ATTACKS.unregister(name)


def attack_class(name: str) -> type[Attack]:
    """The class registered under ``name`` (any case, ``_`` for ``-``); a typo raises with suggestions."""
    return ATTACKS[name]


def unknown_hyperparameter_message(cls: type[Attack], name: str) -> str:
    """``attack 'ifgsm' has no hyperparameter 'epz'; did you mean 'eps'? Its hyperparameters: ...``."""
    defaults = cls.defaults()
    close = difflib.get_close_matches(name.replace("-", "_"), list(defaults), n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(f"{k}={_show(v)}" for k, v in defaults.items()) or "none"
    return f"attack {cls.name!r} has no hyperparameter {name!r}{hint} (its hyperparameters and defaults: {known})"


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def create_attack(name: str, **hyperparameters: Any) -> Attack:
    """An attack by name with the benchmark's defaults, overridden by ``hyperparameters``.

    For values given as text (``eps=4/255``) use :class:`attacks.spec.AttackSpec`, which also
    converts them to the fields' types.
    """
    cls = attack_class(name)
    for key in hyperparameters:
        if key not in cls.defaults():
            raise TypeError(unknown_hyperparameter_message(cls, key))
    return cls(**hyperparameters)


def list_attacks(
    patterns: str | Iterable[str] | None = None,
    where: Callable[[type[Attack]], bool] | None = None,
) -> list[str]:
    """Registered attack names, sorted.

    Args:
        patterns: ``None`` or ``"all"`` for every attack, a glob (``*fgsm``), a comma list, or an
            iterable of those; an exact name that is not registered raises with suggestions.
        where: keep only the attacks whose class passes this test (``lambda cls: cls.universal``).
    """
    names = ATTACKS.select(patterns)
    if where is not None:
        names = [n for n in names if where(ATTACKS[n])]
    return names
