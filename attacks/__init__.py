"""Adversarial attacks on quality metrics, by name: ``create_attack("ifgsm")(metric, images)``.

Every module in this package registers its attack on import, so a new attack is one new file.
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
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base" and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "Attack",
    "NotDifferentiableError",
    "UnknownAttackError",
    "attack_class",
    "create_attack",
    "list_attacks",
    "register_attack",
]
