"""Defences as data, their registry, and the defended metric ``S_d(x) = S(d(x))`` every attack sees.

A defence (docs/methodology.md, "Defences", after the follow-up benchmark of defences for IQA metrics) is an input
transformation in front of a metric. Each is a frozen dataclass whose fields are its parameters, and
declares two facts the adaptive attacks read:

- ``differentiable``: False for a step with no useful gradient (JPEG coding, quantisation). The
  defended metric then passes the gradient straight through that step (BPDA, Athalye et al., ICML
  2018): forward ``d(x)``, backward the identity.
- ``random``: True for a transformation that draws (a crop position, a flip). With gradients on,
  the defended metric scores the mean over ``eot`` independent draws (expectation over
  transformation, Athalye et al.), so a gradient attack's step is the mean of the draws' gradients.
  Without gradients (scoring, query-based attacks) every image gets the first draw of a generator
  seeded afresh with the defence's seed: a clean image and its attacked copy see the same
  transformation, as the source's protocol wants, however they are batched.

So every gradient attack attacks a defended metric unchanged, and adaptively. A defence that changes
the image size (``resize``, ``random-crop``) hands the metric the smaller image; the metric's own
minimum side then applies to it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from iqa_robustness.attacks.spec import coerce_values, parse_value, split_call
from iqa_robustness.conventions import DEFAULT_EOT
from iqa_robustness.metrics import Metric, MetricSpec, create_metric, get_spec, register_metric
from iqa_robustness.registry import Registry, split_commas

#: the name that keeps the undefended metric in a session (``--defence none,jpeg``)
NONE = "none"
#: joins a defence's label and the metric's name: ``jpeg50+niqe``
SEPARATOR = "+"
#: the seed of a random defence's draws without gradients (scoring), unless the defence is given one
EVAL_SEED = 0
#: registered defended metrics: name -> (defence label, undefended metric)
_DEFENDED: dict[str, tuple[str, str]] = {}


class DefenceSpecError(ValueError):
    """A defence spec that cannot be read, an unknown defence or parameter, or a value it refuses."""


@dataclasses.dataclass(frozen=True)
class Defence:
    """An input transformation; subclasses are frozen dataclasses whose fields are the parameters.

    Class attributes:
        name: registry name (``jpeg``, ``median-blur``).
        short: the label's stem (``jpeg`` -> ``jpeg50``); the name when empty.
        label_field: the parameter whose value follows the stem in the label, if any.
        differentiable: False: the gradient passes straight through (BPDA).
        random: True: gradients average ``eot`` draws (EoT); scoring makes one seeded draw per call.
        aliases: other names on the command line (``median`` for ``median-blur``).
    """

    name: ClassVar[str] = ""
    short: ClassVar[str] = ""
    label_field: ClassVar[str | None] = None
    differentiable: ClassVar[bool] = True
    random: ClassVar[bool] = False
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:  # pragma: no cover
        """``d(x)`` of an (N, 3, H, W) batch in [0, 1]; a random defence draws from ``generator``."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def values(self) -> dict[str, Any]:
        """The parameters that differ from the defaults."""
        defaults = self.defaults()
        return {k: v for k, v in dataclasses.asdict(self).items() if v != defaults[k]}

    @property
    def label(self) -> str:
        """The prefix of defended metric names: stem, the label field's value, then other non-defaults."""
        stem = self.short or self.name
        params = dataclasses.asdict(self)
        if self.label_field is not None:
            stem += _label_value(params[self.label_field])
        extra = [f"{k.replace('_', '')}{_label_value(v)}" for k, v in self.values().items() if k != self.label_field]
        return "-".join([stem, *extra])

    @property
    def text(self) -> str:
        """The spec as the command line writes it, with every parameter: ``jpeg(q=50)``."""
        params = ",".join(f"{k}={_text(v)}" for k, v in dataclasses.asdict(self).items())
        return f"{self.name}({params})" if params else self.name

    def params(self) -> dict[str, Any]:
        """What results record of the defence."""
        return {
            "defence": self.name,
            "defence_label": self.label,
            "defence_spec": self.text,
            "defence_differentiable": self.differentiable,
            "defence_random": self.random,
            **{f"defence_{k}": v for k, v in dataclasses.asdict(self).items()},
        }


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


DEFENCES: Registry[type[Defence]] = Registry(
    "defence", error=DefenceSpecError, hint="; `iqa-robustness list defences` lists them, `none` keeps the metric"
)


def register_defence(cls: type[Defence]) -> type[Defence]:
    """Class decorator: add a defence under its name and aliases."""
    DEFENCES.register(cls.name, cls, aliases=cls.aliases)
    return cls


def list_defences() -> list[str]:
    return DEFENCES.select(None)


def defence_class(name: str) -> type[Defence]:
    return DEFENCES[name]


def parse_defence(text: str) -> Defence | None:
    """``jpeg``, ``jpeg(q=30)``, ``median(k=5)``; ``none`` gives ``None`` (the undefended metric)."""
    name, body, items = split_call(text, DefenceSpecError, "defence", "parameter")
    if name.lower() == NONE:
        if body:
            raise DefenceSpecError("`none` takes no parameters: it keeps the undefended metric")
        return None
    cls = defence_class(name)
    values: dict[str, Any] = {}
    for key, raw in items:
        if key not in cls.defaults():
            close = difflib.get_close_matches(key, list(cls.defaults()), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(f"{k}={_text(v)}" for k, v in cls.defaults().items()) or "none"
            raise DefenceSpecError(f"defence {cls.name!r} has no parameter {key!r}{hint} (its parameters: {known})")
        try:
            values.update(coerce_values(cls, {key: parse_value(raw)}, shown=raw.strip()))  # type: ignore[arg-type]
        except ValueError as exc:
            raise DefenceSpecError(str(exc)) from None
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise DefenceSpecError(f"{text!r}: {exc}") from None


def parse_defences(specs: str | Iterable[str] | None) -> list[Defence | None]:
    """Every defence of ``--defence`` (comma-separated; ``none`` is ``None``), in the order given, distinct."""
    if specs is None:
        return []
    chunks = [specs] if isinstance(specs, str) else list(specs)
    found: list[Defence | None] = []
    for chunk in chunks:
        for item in split_commas(chunk):
            defence = parse_defence(item)
            if defence not in found:
                found.append(defence)
    labels = [d.label for d in found if d is not None]
    if len(set(labels)) != len(labels):
        raise DefenceSpecError(f"two defences share a label in {', '.join(labels)}: make their parameters differ")
    return found


# ----------------------------------------------------------------------------- the defended metric


class DefendedMetric(Metric):
    """``S(d(x))``, with BPDA through a non-differentiable defence and EoT over a random one.

    Args:
        spec: the defended metric's facts (:func:`defended_spec`).
        base: the undefended metric.
        defence: the transformation.
        eot: draws averaged per evaluation with gradients on, for a random defence.
        seed: the seed of each evaluation's draw without gradients.
    """

    def __init__(self, spec: MetricSpec, base: Metric, defence: Defence, eot: int = DEFAULT_EOT, seed: int = EVAL_SEED):
        super().__init__(spec, base.weights_mode)
        if eot < 1:
            raise ValueError(f"--eot must be a positive number of draws, not {eot}")
        self.base = base
        self.defence = defence
        self.eot = eot
        self.seed = seed
        self._draws = torch.Generator()  # gradient draws: fresh ones every step
        self._draws.manual_seed(seed + 1)

    @property
    def device(self) -> torch.device:
        return self.base.device

    def defend(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``d(x)`` with the gradient rule of the defence's facts (BPDA: straight through)."""
        if self.defence.differentiable:
            out = self.defence.transform(x, generator)
        else:
            with torch.no_grad():
                moved = self.defence.transform(x.detach(), generator)
            out = x + (moved - x).detach() if moved.shape == x.shape else moved
        return out

    def scoring_generator(self) -> torch.Generator:
        """The generator of one evaluation without gradients: the same draw for every call."""
        return torch.Generator().manual_seed(self.seed)

    def defended_images(self, x: torch.Tensor) -> torch.Tensor:
        """``d(x)`` as scoring sees it (no gradient; a random defence's seeded draw, image by image)."""
        with torch.no_grad():
            if not self.defence.random:
                return self.defence.transform(x, None)
            return torch.cat([self.defence.transform(x[i : i + 1], self.scoring_generator()) for i in range(len(x))])

    def score(self, x: torch.Tensor) -> torch.Tensor:
        with self.base.reference(self._reference):
            if not torch.is_grad_enabled():  # scoring: the seeded draw of every image
                return self.base(self.defended_images(x))
            if not self.defence.random:
                return self.base(self.defend(x))
            draws = [self.base(self.defend(x, self._draws)) for _ in range(self.eot)]
            return torch.stack(draws).mean(dim=0)


def defended_spec(defence: Defence, base: MetricSpec, eot: int = DEFAULT_EOT) -> MetricSpec:
    """The facts of ``defence + base``: the base's, differentiable through BPDA / EoT, named ``label+base``."""
    if base.is_video:
        raise DefenceSpecError(
            f"{base.name} is a video metric, attacked clip by clip; defences go in front of image metrics: "
            "leave it out of --metric or --defence"
        )
    source = f"{defence.text} in front of {base.name}"
    scale = getattr(defence, "scale", None) if getattr(defence, "shrinks", False) else None
    min_side = base.min_side
    if min_side is not None and scale:
        min_side = int(-(-min_side // scale))  # the metric sees the smaller image
    side = getattr(defence, "side", None)
    if min_side is not None and side is not None and side < min_side:
        raise DefenceSpecError(
            f"{defence.text} crops to {side} px, below {base.name}'s minimum side of {min_side} px: "
            f"give it side={min_side} or more"
        )
    if base.is_full_reference and getattr(defence, "changes_size", False):
        raise DefenceSpecError(
            f"{defence.text} changes the image size, but {base.name} compares the image with a reference of the "
            "input's size: use a defence that keeps the size (upscale instead of resize, ...)"
        )
    if defence.random:
        source += f", {eot} draws per gradient (EoT)"
    return dataclasses.replace(
        base,
        name=f"{defence.label}{SEPARATOR}{base.name}",
        min_side=min_side,
        aliases=(),
        source=source,
        description=f"{base.name} behind {defence.text}",
    )


def register_defended(defence: Defence, metric: str, eot: int = DEFAULT_EOT) -> str:
    """Register ``<label>+<metric>`` (idempotent) and return its name."""
    base_spec = get_spec(metric)
    spec = defended_spec(defence, base_spec, eot)

    def build(spec_: MetricSpec, device: torch.device, weights_dir: Any, random: bool) -> Metric:
        weights = "random" if random else (weights_dir if weights_dir is not None else None)
        base = create_metric(base_spec.name, device=device, weights=weights)
        return DefendedMetric(spec_, base, defence, eot=eot)

    register_metric(spec, build)
    _DEFENDED[spec.name] = (defence.label, base_spec.name)
    return spec.name


def split_defended(name: str) -> tuple[str, str] | None:
    """``jpeg50+niqe`` -> ``("jpeg50", "niqe")`` for a registered defended metric; ``None`` for another metric."""
    return _DEFENDED.get(get_spec(name).name)


def base_metric(name: str) -> str:
    """The undefended metric behind ``name`` (``name`` itself when it has no defence)."""
    parts = split_defended(name)
    return parts[1] if parts else get_spec(name).name
