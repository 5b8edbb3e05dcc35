"""Perturbation budgets: what an attack promises about the distance between clean and adversarial images.

An attack class declares its budget as data, next to its hyperparameters, in the manner of
foolbox's base class (which enforces the bound on every result rather than trusting the
attack)::

    budget: ClassVar[Budget | None] = Budget.linf("eps")

The base classes check every result against it (:meth:`attacks.base.Attack.__call__`,
:meth:`attacks.universal.UniversalAttack.apply`), so an attack that breaks its promise fails
loudly instead of reporting an inflated gain. Kinds:

- ``linf``: ``max |adv - x| <= field`` per image (FGSM family);
- ``linf-amplitude``: ``max |adv - x| <= field * amplitude`` (universal perturbations applied at
  the benchmark's amplitudes, generators whose tanh output is scaled by the field);
- ``rmse``: ``sqrt(mean (adv - x)^2) <= field`` per image (MAD competition);
- ``l0``: at most ``field`` pixel positions of each image differ from the clean image in any channel
  (one-pixel attacks, Sparse-RS patches);
- ``l2``: ``sqrt(sum (adv - x)^2) <= field`` per image (the L2 ball a median-smoothing certificate
  holds in: docs/certify.md).

``None`` declares that the attack's code guarantees no bound; its docstring says why. A class may
declare several bounds as a tuple (MAD competition: an RMSE bound and an optional L-inf one), and a
bound on an *optional* field (``Budget.linf("linf", optional=True)``) holds only when the field is set:
``None`` there keeps the benchmark's unbounded behaviour, a number adds the projection onto that ball.

:func:`declared_budgets` reads a class's declaration as a tuple, :func:`active_budgets` keeps the
bounds an attack object's values switch on, and :func:`budget_slug` names an L-inf budget in case
ids (``eps4`` for 4/255).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch

from iqa_robustness.conventions import BUDGET_UNIT, budget_slug

__all__ = [
    "BUDGET_UNIT",
    "TOLERANCE",
    "Budget",
    "BudgetExceededError",
    "active_budgets",
    "budget_slug",
    "changed_pixels",
    "declared_budgets",
    "describe_budgets",
]

#: slack for float32 rounding (a sum of ``iters`` steps of ``eps / iters`` may land just past ``eps``)
TOLERANCE = 1e-5

BudgetKind = Literal["linf", "linf-amplitude", "rmse", "l0", "l2"]
_DIMS = (1, 2, 3)


class BudgetExceededError(RuntimeError):
    """An attack returned a result outside the budget its class declares."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """A bound on ``adv - x`` read from one hyperparameter of the attack.

    Attributes:
        kind: ``linf``, ``linf-amplitude``, ``rmse``, ``l0`` or ``l2`` (see the module docstring).
        field: the attack's hyperparameter that holds the bound (``eps``).
        optional: the field may be ``None``, and the bound then does not apply (:meth:`active`).
    """

    kind: BudgetKind
    field: str
    optional: bool = False

    @classmethod
    def linf(cls, field: str, *, optional: bool = False) -> Budget:
        """``max |adv - x| <= attack.<field>`` on every image (only when it is set, with ``optional``)."""
        return cls("linf", field, optional)

    @classmethod
    def linf_times_amplitude(cls, field: str) -> Budget:
        """``max |adv - x| <= attack.<field> * amplitude`` (a universal perturbation at amplitude k)."""
        return cls("linf-amplitude", field)

    @classmethod
    def rmse(cls, field: str) -> Budget:
        """``sqrt(mean (adv - x)^2) <= attack.<field>`` on every image."""
        return cls("rmse", field)

    @classmethod
    def l0(cls, field: str) -> Budget:
        """At most ``attack.<field>`` pixel positions (H x W, any channel) of every image change."""
        return cls("l0", field)

    @classmethod
    def l2(cls, field: str) -> Budget:
        """``sqrt(sum (adv - x)^2) <= attack.<field>`` on every image (over all pixels and channels)."""
        return cls("l2", field)

    @property
    def bounds_linf(self) -> bool:
        """Whether the bound is an L-inf ball (at amplitude 1 for ``linf-amplitude``): what ``--eps`` sets."""
        return self.kind in ("linf", "linf-amplitude")

    def active(self, attack: Any) -> bool:
        """Whether the bound applies to this attack object (an optional field set to ``None`` switches it off)."""
        return not self.optional or getattr(attack, self.field) is not None

    @property
    def norm(self) -> str:
        """``linf``, ``rmse``, ``l0`` or ``l2``: what :meth:`measure` computes."""
        return self.kind if self.kind in ("rmse", "l0", "l2") else "linf"

    def describe(self) -> str:
        """The bound as a formula, for listings and messages (``|adv - x|_inf <= eps * amplitude``)."""
        if self.kind == "rmse":
            return f"RMSE(adv - x) <= {self.field}"
        if self.kind == "l0":
            return f"|adv - x|_0 <= {self.field} (pixel positions changed)"
        if self.kind == "l2":
            return f"|adv - x|_2 <= {self.field}"
        suffix = " * amplitude" if self.kind == "linf-amplitude" else ""
        when = f" (when {self.field} is set)" if self.optional else ""
        return f"|adv - x|_inf <= {self.field}{suffix}{when}"

    def limit(self, attack: Any, amplitude: float | None = None) -> float:
        """The bound for this attack's hyperparameters (and the amplitude, for ``linf-amplitude``); inf when unset."""
        if not self.active(attack):
            return math.inf
        value = float(getattr(attack, self.field))
        if self.kind == "linf-amplitude":
            if amplitude is None:
                raise ValueError(f"a {self.describe()} budget needs the amplitude the perturbation was applied at")
            value *= abs(float(amplitude))
        return value

    def measure(self, clean: torch.Tensor, adversarial: torch.Tensor) -> float:
        """The largest per-image distance of the batch in this budget's norm."""
        diff = adversarial.detach().double() - clean.detach().double()
        if diff.numel() == 0:
            return 0.0
        if self.norm == "l0":  # a pixel position counts once, whichever of its channels changed
            return float(changed_pixels(clean, adversarial).max())
        diff = diff.flatten(1)
        if self.norm == "l2":
            per_image = diff.square().sum(dim=1).sqrt()
        elif self.norm == "rmse":
            per_image = diff.square().mean(dim=1).sqrt()
        else:
            per_image = diff.abs().amax(dim=1)
        return float(per_image.max())

    def check(
        self, attack: Any, clean: torch.Tensor, adversarial: torch.Tensor, amplitude: float | None = None
    ) -> float:
        """Raise :class:`BudgetExceededError` when the batch leaves the budget; returns the distance.

        Raises:
            BudgetExceededError: naming the attack, the bound, the distance found and the excess.
        """
        limit = self.limit(attack, amplitude)
        found = self.measure(clean, adversarial)
        if found > limit + TOLERANCE:
            at = f" at amplitude {amplitude:g}" if self.kind == "linf-amplitude" else ""
            raise BudgetExceededError(
                f"{attack.name} broke its budget {self.describe()}{at}: "
                f"{self.norm} distance {found:.6g} > {limit:.6g} (by {found - limit:.3g}, tolerance {TOLERANCE:g}; "
                f"{self.field}={float(getattr(attack, self.field)):.6g})"
            )
        return found


def changed_pixels(clean: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
    """Per image of a batch (N, C, H, W), how many pixel positions differ in any channel (an L0 distance)."""
    diff = (adversarial.detach().double() - clean.detach().double()).abs()
    return (diff.amax(dim=1) > 0).flatten(1).sum(dim=1)


#: What an attack class declares: one bound, several (all must hold), or ``None``.
Declared = Budget | tuple[Budget, ...] | None


def declared_budgets(declared: Declared) -> tuple[Budget, ...]:
    """A class's ``budget`` declaration as a tuple (empty for ``None``)."""
    if declared is None:
        return ()
    return declared if isinstance(declared, tuple) else (declared,)


def active_budgets(attack: Any) -> tuple[Budget, ...]:
    """The bounds the attack object's class declares that its values switch on."""
    return tuple(b for b in declared_budgets(type(attack).budget) if b.active(attack))


def describe_budgets(declared: Declared) -> str:
    """Every declared bound as a formula, joined by ``and``; ``none`` when the class declares none."""
    return " and ".join(b.describe() for b in declared_budgets(declared)) or "none"
