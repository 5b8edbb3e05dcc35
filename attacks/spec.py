"""Attacks with hyperparameters, written as text: ``ifgsm(eps=4/255,iters=20)``.

The command line selects attacks with the registry's syntax (a name, a glob such as ``*fgsm``,
``all``, comma lists) and may give an attack hyperparameter values in parentheses:

    --attack 'ifgsm(eps=4/255,iters=20),mifgsm,amifgsm(bound=niqe)'

Values are ints (``20``), floats (``0.005``, ``1e-3``), fractions (``4/255``), ``true`` /
``false`` and strings, bare or quoted (``bound=niqe``, ``bound='niqe'``). Each is converted to the
type its dataclass field declares: an int field refuses ``4/255``, a ``Literal`` field refuses a
value outside its choices, and a name that is no field of the attack fails with the closest field
("did you mean 'eps'?") and every field with its default. Field names take ``-`` for ``_``.

An :class:`AttackSpec` keeps only the values that differ from the defaults, so ``ifgsm`` and
``ifgsm(eps=10/255)`` are the same spec, with the same case id and the same trained-perturbation
cache key. Its :attr:`AttackSpec.label` names cases and result files: the name alone for the
defaults, else ``ifgsm(eps=0.01569,iters=20)`` (floats to 4 significant digits, no ``/`` or ``_``,
since ids are file stems and MSU result files are ``<attack>_<metric>_test.csv``). Its
:attr:`AttackSpec.text` is exact and parses back to the same spec.

:meth:`AttackSpec.at_budget` is the spec at an L-inf budget of ``--eps``: the values the attack class
derives for the budget (:meth:`attacks.base.Attack.values_at_budget`: the benchmark's preset, or the
bound) under the values given here, which win (``ifgsm(alpha=0.002)`` keeps its step at every budget).
The field the budget sets cannot be given as well: the budget is that value.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from iqa_robustness.conventions import budget_in_units
from iqa_robustness.registry import GLOB_CHARACTERS, split_commas

from .base import ATTACKS, Attack, attack_class, unknown_hyperparameter_message
from .budget import budget_slug, describe_budgets


class AttackSpecError(ValueError):
    """An attack spec that cannot be parsed, or a value its attack's field does not accept."""


class NoBudgetError(AttackSpecError):
    """An L-inf budget was asked of an attack whose class declares no L-inf bound to set."""


_NAME = re.compile(r"^\s*([^()\s]+)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """An attack name and the hyperparameter values that differ from its defaults.

    Attributes:
        name: the registered attack name (canonical spelling).
        values: ``(field, value)`` pairs, in the class's field order, converted to the fields'
            types; values equal to the default are dropped. A mapping is accepted too.
    """

    name: str
    values: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        cls = attack_class(self.name)
        given = dict(self.values.items() if isinstance(self.values, Mapping) else self.values)
        checked = coerce_values(cls, given)
        defaults = cls.defaults()
        kept = tuple((k, checked[k]) for k in defaults if k in checked and not _same(checked[k], defaults[k]))
        object.__setattr__(self, "name", cls.name)
        object.__setattr__(self, "values", kept)

    @property
    def cls(self) -> type[Attack]:
        return attack_class(self.name)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The non-default values as keyword arguments of the attack class."""
        return dict(self.values)

    def create(self, **overrides: Any) -> Attack:
        """The attack object: the class's defaults, these values, then ``overrides``."""
        kwargs = {**self.kwargs, **coerce_values(self.cls, overrides)}
        try:
            return self.cls(**kwargs)
        except (TypeError, ValueError) as exc:  # the class's own checks (a madc pull_step above eps, ...)
            raise AttackSpecError(f"{self.text}: {exc}") from exc

    def at_budget(self, budget: float, metric: str | None = None) -> AttackSpec:
        """This attack at the L-inf budget ``budget``: the class's derived values, then the values given here.

        Args:
            budget: the L-inf radius in [0, 1] pixel units (``4 / 255``).
            metric: the attacked metric, for a preset the benchmark calibrated per metric
                (:mod:`attacks.presets`); ``None``: the median over its metrics.

        A class off the budget axis (``budget_axis = False``) gives this spec unchanged.

        Raises:
            NoBudgetError: the class has no preset at this level and declares no L-inf bound
                (:meth:`~attacks.base.Attack.values_at_budget` gives none).
            AttackSpecError: this spec gives the value the budget sets (the bound, or the preset's field).
        """
        cls = self.cls
        if not cls.budget_axis:
            return self
        derived = cls.values_at_budget(budget, {**cls.defaults(), **self.kwargs}, metric)
        if derived is None:
            levels = ""
            if cls.presets is not None:
                levels = f"the benchmark's presets are at {', '.join(map(_in_255ths, cls.presets.budgets))} only; "
            raise NoBudgetError(
                f"{self.name} has no value at {_in_255ths(budget)}: {levels}it declares no L-inf bound "
                f"({describe_budgets(cls.budget)}), so --eps cannot set its budget: run it without --eps, or "
                'declare one on the class (budget = Budget.linf("eps"), or Budget.linf("linf", optional=True) '
                "with a projection)"
            )
        field = next(iter(derived))  # the value the budget sets: the bound, or the preset's field
        if field in self.kwargs:
            what = "L-inf bound" if field == cls.budget_field() else "benchmark's preset"
            raise AttackSpecError(
                f"{self.text}: {field} is the {what} that --eps sets to each budget ({budget_slug(budget)} "
                f"= {budget:.6g}); drop {field}= from the attack, or drop --eps"
            )
        return AttackSpec(self.name, {**derived, **self.kwargs})

    @property
    def label(self) -> str:
        """Short, file-name-safe name for case ids: ``ifgsm`` or ``ifgsm(eps=0.007843,iters=20)``."""
        if not self.values:
            return self.name
        body = ",".join(f"{k.replace('_', '-')}={_label_value(v)}" for k, v in self.values)
        return f"{self.name}({body})"

    @property
    def text(self) -> str:
        """Exact spec that :func:`parse_attack_specs` reads back: ``ifgsm(eps=0.00784313725490196)``."""
        if not self.values:
            return self.name
        return f"{self.name}({','.join(f'{k}={_text_value(v)}' for k, v in self.values)})"

    def __str__(self) -> str:
        return self.text

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AttackSpec:
        """The spec of an attack's :meth:`~attacks.base.Attack.params` (the attack's fields read from it)."""
        base = parse_attack_spec(str(params["attack"]))
        fields = base.cls.defaults()
        return cls(base.name, {**base.kwargs, **{k: params[k] for k in fields if k in params}})


def split_call(
    text: str, error: type[ValueError] = AttackSpecError, what: str = "attack spec", noun: str = "field"
) -> tuple[str, str | None, list[tuple[str, str]]]:
    """``name(key=value,...)`` -> ``(name, body, [(key, raw value), ...])``, keys with ``_`` for ``-``.

    Shared by attack and defence specs. Raises ``error`` for a text that is no call, an item without
    ``=``, or a key given twice.
    """
    match = _NAME.match(text)
    if match is None:
        raise error(f"cannot read {what} {text!r}: expected name or name({noun}=value,...)")
    name, body = match.groups()
    items: list[tuple[str, str]] = []
    for item in split_commas(body or ""):
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not raw.strip():
            raise error(f"{text!r}: expected {noun}=value inside the parentheses, got {item!r}")
        if key in dict(items):
            raise error(f"{text!r}: {key} is given twice")
        items.append((key, raw))
    return name, body, items


def parse_attack_spec(text: str) -> AttackSpec:
    """One spec, ``name`` or ``name(field=value,...)``; no globs (see :func:`parse_attack_specs`)."""
    name, _, items = split_call(text)
    if any(ch in name for ch in GLOB_CHARACTERS):
        raise AttackSpecError(f"{text!r}: a glob selects attacks by name and takes no values; name one attack")
    cls = attack_class(name)
    values = {key: coerce_values(cls, {key: parse_value(raw)}, shown=raw.strip())[key] for key, raw in items}
    return AttackSpec(cls.name, values)


def parse_attack_specs(specs: str | Iterable[str | AttackSpec] | None) -> list[AttackSpec]:
    """Every spec of a selection: ``all``, globs, names and ``name(field=value,...)``, comma-separated.

    Args:
        specs: ``None`` or ``"all"`` for every attack with its defaults, a string, or an iterable of
            strings and :class:`AttackSpec` objects. ``all`` and globs leave out the opt-in classes
            (``certify``), which only their own name selects.

    Returns:
        The distinct specs, sorted by name, then label.

    Raises:
        UnknownAttackError: an unknown name (with suggestions).
        AttackSpecError: a malformed spec, an unknown field (with a suggestion), a value of the wrong type,
            or two different specs that would share a case id.
    """
    if specs is None:
        specs = ["all"]
    elif isinstance(specs, str):
        specs = [specs]
    found: list[AttackSpec] = []
    for chunk in specs:
        if isinstance(chunk, AttackSpec):
            found.append(chunk)
            continue
        for item in split_commas(chunk):
            if "(" in item or ")" in item:
                found.append(parse_attack_spec(item))
            else:
                names = ATTACKS.select(item)
                if item.lower() == "all" or any(ch in item for ch in GLOB_CHARACTERS):
                    names = [name for name in names if not ATTACKS[name].opt_in]
                found.extend(AttackSpec(name) for name in names)
    unique = sorted(set(found), key=lambda s: (s.name, s.label, s.text))
    labels: dict[str, AttackSpec] = {}
    for spec in unique:
        if spec.label in labels:
            raise AttackSpecError(
                f"{labels[spec.label].text} and {spec.text} would share the case id {spec.label!r}: "
                "make their values differ in the first 4 significant digits"
            )
        labels[spec.label] = spec
    return unique


# --------------------------------------------------------------------------- values


def parse_value(raw: str) -> Any:
    """Text to a Python value: int, float, fraction ``a/b`` (a float), ``true``/``false``, or a string."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    numerator, slash, denominator = text.partition("/")
    if slash and _is_number(numerator) and _is_number(denominator):
        if float(denominator) == 0:
            raise AttackSpecError(f"fraction {text!r} divides by zero")
        return float(numerator) / float(denominator)  # 4/255 gives the same float as Python's 4 / 255
    return text


def coerce_values(cls: type[Attack], values: Mapping[str, Any], *, shown: str | None = None) -> dict[str, Any]:
    """``values`` checked against ``cls``'s fields and converted to their declared types.

    Args:
        cls: the attack class.
        values: field (``_`` or ``-``) -> value.
        shown: how the value was written, for the error message (``4/255`` rather than its float).
    """
    types = _field_types(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        field = key.replace("-", "_")
        if field not in types:
            raise AttackSpecError(unknown_hyperparameter_message(cls, key))
        out[field] = _coerce(cls, field, types[field], value, shown)
    return out


@functools.cache
def _field_types(cls: type[Attack]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _coerce(cls: type[Attack], field: str, declared: Any, value: Any, shown: str | None) -> Any:
    def refuse(wanted: str) -> AttackSpecError:
        return AttackSpecError(f"{cls.name}: {field} takes {wanted}, got {shown or _text_value(value)}")

    origin = typing.get_origin(declared)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(declared):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None  # an optional field left unset: korhonen(linf=none) is korhonen
        (inner, *others) = [a for a in typing.get_args(declared) if a is not type(None)]
        return value if others else _coerce(cls, field, inner, value, shown)
    if origin is typing.Literal:
        choices = typing.get_args(declared)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise refuse("one of " + ", ".join(repr(c) for c in choices))
        return value
    if declared is bool:
        if not isinstance(value, bool):
            raise refuse("true or false")
        return value
    if declared is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("an integer")
        return int(value)
    if declared is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("a number (int, float or a/b)")
        return float(value)
    if declared is str:
        if not isinstance(value, str):
            raise refuse("a string")
        return value
    return value  # a type this parser does not know: the class's own checks decide


def _in_255ths(budget: float) -> str:
    return f"{budget_in_units(budget):g}/255"


def _is_number(text: str) -> bool:
    return bool(_INT.match(text.strip()) or _FLOAT.match(text.strip()))


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return _LABEL_UNSAFE.sub("-", str(value))


def _text_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if re.fullmatch(r"[A-Za-z][\w.+-]*", text) and text.lower() not in ("true", "false") else repr(text)
