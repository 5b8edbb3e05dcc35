"""Adversarial attacks on quality metrics, by name: ``create_attack("ifgsm")(metric, images)``.

Every module in this package registers its attack on import, so a new attack is one new file.
``parse_attack_specs("ifgsm(eps=4/255),mifgsm")`` reads attacks with hyperparameters as the command
line gives them (:mod:`attacks.spec`); every attack class declares its budget (:mod:`attacks.budget`).
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    Attack,
    NotDifferentiableError,
    UnknownAttackError,
    attack_class,
    create_attack,
    list_attacks,
    register_attack,
    unregister_attack,
)
from .budget import Budget, BudgetExceededError
from .spec import AttackSpec, AttackSpecError, parse_attack_specs

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base" and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "Attack",
    "AttackSpec",
    "AttackSpecError",
    "Budget",
    "BudgetExceededError",
    "NotDifferentiableError",
    "UnknownAttackError",
    "attack_class",
    "create_attack",
    "list_attacks",
    "parse_attack_specs",
    "register_attack",
    "unregister_attack",
]
