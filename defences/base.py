"""Defences as data, their registry, and the defended metric ``S_d(x) = S(d(x))`` every attack sees.

A defence (docs/methodology.md, "Defences", after the follow-up benchmark of defences for IQA metrics) is an input
transformation in front of a metric. Each is a frozen dataclass whose fields are its parameters, and
declares two facts the adaptive attacks read:

- ``differentiable``: False for a step with no useful gradient (JPEG coding, quantisation). The
  defended metric then passes the gradient straight through that step (BPDA, Athalye et al., ICML
  2018): forward ``d(x)``, backward the identity.
- ``random``: True for a transformation that draws (a crop position, an angle). A random defence
  splits into :meth:`Defence.draw` (the numbers of one image's draw) and :meth:`Defence.apply`.

Every defence takes the parameter ``float32`` (default false): the defended metric first writes its input
to 8 bits as an 8-bit PNG would (``round(255 x) / 255``), as the source benchmark defends the PNG files its
attacks wrote, and defends the float image only with ``float32=true``. The rounding passes the gradient
straight through.

Draws (docs/differences.md, "Defences"): the runner says whose images a batch's rows are
(:class:`ImageDraws`), and a random defence draws per image from generators seeded with the session
seed and the image's name, never its position in a batch, so shards, ``--resume`` and xdist workers
draw alike:

- scoring (no attack): an image's one draw, the same in every call, so its clean and its attacked
  copy see the same transformation, as the source shares one draw between them;
- an attack with gradients: the mean over ``eot`` fresh draws per image and step (expectation over
  transformation, Athalye et al.), so a gradient attack's step is the mean of the draws' gradients;
- an attack without gradients (a query of a black-box attack): a fresh draw per query, from the
  queried image's own stream, as the source's defences draw on every call; the attack never sees
  the draw its result is scored with.

Outside a binding (training a universal perturbation, a metric called by hand) every call draws
afresh from the defended metric's own generator.

So every gradient attack attacks a defended metric unchanged, and adaptively. A defence that changes
the image size (``resize``, ``random-crop``) hands the metric the smaller image; the metric's own
minimum side then applies to it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
#: the seed of a defended metric's own generator: its draws outside an :class:`ImageDraws` binding
UNBOUND_SEED = 0
#: what one draw of a random defence is for an image: ``{"angle": -3.2}``, ``{"top": 5, "left": 17}``
Draw = Mapping[str, Any]
#: registered defended metrics: name -> (defence label, undefended metric)
_DEFENDED: dict[str, tuple[str, str]] = {}


class DefenceSpecError(ValueError):
    """A defence spec that cannot be read, an unknown defence or parameter, or a value it refuses."""


@dataclasses.dataclass(frozen=True)
class Defence:
    """An input transformation; subclasses are frozen dataclasses whose fields are the parameters.

    A deterministic defence implements :meth:`transform`; a random one :meth:`draw` and :meth:`apply`
    (:meth:`transform` then draws each image in turn).

    Class attributes:
        name: registry name (``jpeg``, ``median-blur``).
        short: the label's stem (``jpeg`` -> ``jpeg50``); the name when empty.
        label_field: the parameter whose value follows the stem in the label, if any.
        differentiable: False: the gradient passes straight through (BPDA).
        random: True: the defence draws (:meth:`draw`); gradients average ``eot`` draws (EoT).
        aliases: other names on the command line (``median`` for ``median-blur``).

    Attributes:
        float32: defend the float image as it is; by default (false) the defended metric writes it to
            8 bits first, as the source benchmark defends 8-bit PNG files.
    """

    name: ClassVar[str] = ""
    short: ClassVar[str] = ""
    label_field: ClassVar[str | None] = None
    differentiable: ClassVar[bool] = True
    random: ClassVar[bool] = False
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    float32: bool = dataclasses.field(default=False, kw_only=True)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``d(x)`` of an (N, 3, H, W) batch in [0, 1]; a random defence draws each image from ``generator``."""
        return self.apply_draws(x, [self.draw(image, generator) for image in x])

    def draw(self, image: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:  # pragma: no cover
        """A random defence's draw for one (3, H, W) image: the numbers :meth:`apply` needs (recorded per image)."""
        raise NotImplementedError(f"{self.name} is not a random defence: it has no draw")

    def apply(self, image: torch.Tensor, draw: Draw) -> torch.Tensor:  # pragma: no cover
        """A random defence on one (3, H, W) image, with the numbers of ``draw``."""
        raise NotImplementedError(f"{self.name} is not a random defence: call transform")

    def apply_draws(self, x: torch.Tensor, draws: Sequence[Draw]) -> torch.Tensor:
        """A random defence on a batch: image ``i`` with ``draws[i]``."""
        return torch.stack([self.apply(image, draw) for image, draw in zip(x, draws, strict=True)])

    # -- shared ---------------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every parameter and its default, the defence's own first, then ``float32``."""
        fields = sorted(dataclasses.fields(cls), key=lambda f: f.name in _SHARED)
        return {f.name: f.default for f in fields}

    def asdict(self) -> dict[str, Any]:
        """Every parameter and its value, in the order of :meth:`defaults`."""
        return {k: getattr(self, k) for k in self.defaults()}

    def values(self) -> dict[str, Any]:
        """The parameters that differ from the defaults."""
        defaults = self.defaults()
        return {k: v for k, v in self.asdict().items() if v != defaults[k]}

    @property
    def label(self) -> str:
        """The prefix of defended metric names: stem, the label field's value, then other non-defaults."""
        stem = self.short or self.name
        params = self.asdict()
        if self.label_field is not None:
            stem += _label_value(params[self.label_field])
        extra = [f"{k.replace('_', '')}{_label_value(v)}" for k, v in self.values().items() if k != self.label_field]
        return "-".join([stem, *extra])

    @property
    def text(self) -> str:
        """The spec as the command line writes it, with every parameter: ``jpeg(q=50,float32=false)``."""
        params = ",".join(f"{k}={_text(v)}" for k, v in self.asdict().items())
        return f"{self.name}({params})" if params else self.name

    def params(self) -> dict[str, Any]:
        """What results record of the defence."""
        return {
            "defence": self.name,
            "defence_label": self.label,
            "defence_spec": self.text,
            "defence_differentiable": self.differentiable,
            "defence_random": self.random,
            **{f"defence_{k}": v for k, v in self.asdict().items()},
        }


#: parameters every defence takes (listed after its own)
_SHARED = frozenset({"float32"})


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


# ----------------------------------------------------------------------------- draws


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (a session seed, an image's name, a purpose), the same on every machine."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


#: the purposes of an image's draws (each its own stream)
SCORING, GRADIENT, QUERIES = "scoring", "eot", "queries"


@dataclasses.dataclass
class ImageDraws:
    """Whose images the rows of the next calls to a defended metric are, and whether the calls attack them.

    Bound with :meth:`bound` around the calls (any defended metric called inside reads it). A random
    defence then draws for image ``name`` from generators seeded with ``(seed, name, purpose)``: the
    scoring draw anew in every call (so always the same), the gradient and query draws from one stream
    per image that every call moves on (so fresh each time).

    Attributes:
        names: the image of each row of the next calls, in order.
        seed: the session seed.
        attack: the calls are an attack (fresh draws); otherwise they score (each image's own draw).
    """

    names: tuple[str, ...]
    seed: int = 0
    attack: bool = False
    _streams: dict[tuple[str, str], torch.Generator] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def rows(self, start: int, stop: int) -> ImageDraws:
        """The binding of rows ``start:stop`` (a slice of the batch, scored on its own)."""
        return ImageDraws(self.names[start:stop], self.seed, self.attack)

    def generator(self, name: str, purpose: str) -> torch.Generator:
        """Image ``name``'s generator for ``purpose``: a new one for scoring, its running stream otherwise."""
        if purpose == SCORING:
            return torch.Generator().manual_seed(derived_seed(self.seed, name, purpose))
        key = (name, purpose)
        if key not in self._streams:
            self._streams[key] = torch.Generator().manual_seed(derived_seed(self.seed, name, purpose))
        return self._streams[key]

    @contextlib.contextmanager
    def bound(self) -> Iterator[ImageDraws]:
        """Make this the binding of the defended metrics called inside the block (blocks nest)."""
        token = _BOUND.set(self)
        try:
            yield self
        finally:
            _BOUND.reset(token)


_BOUND: contextvars.ContextVar[ImageDraws | None] = contextvars.ContextVar("image_draws", default=None)


# ----------------------------------------------------------------------------- the defended metric


class DefendedMetric(Metric):
    """``S(d(q(x)))``: ``q`` the 8-bit round trip, BPDA through a non-differentiable defence, EoT over a random one.

    Args:
        spec: the defended metric's facts (:func:`defended_spec`).
        base: the undefended metric.
        defence: the transformation.
        eot: draws averaged per evaluation with gradients on, for a random defence.
        seed: the seed of the metric's own generator (draws outside an :class:`ImageDraws` binding).
    """

    def __init__(
        self, spec: MetricSpec, base: Metric, defence: Defence, eot: int = DEFAULT_EOT, seed: int = UNBOUND_SEED
    ):
        super().__init__(spec, base.weights_mode)
        if eot < 1:
            raise ValueError(f"--eot must be a positive number of draws, not {eot}")
        self.base = base
        self.defence = defence
        self.eot = eot
        self.seed = seed
        self._draws = torch.Generator().manual_seed(seed)  # unbound draws: fresh ones every call
        self._owners: list[int] | None = None  # the image of each candidate a query attack scores

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def random_scores(self) -> bool:
        return self.defence.random or self.base.random_scores

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        """The image the defence receives: written to 8 bits (``round(255 x) / 255``) unless ``float32``.

        The rounding is an 8-bit PNG's (OpenCV's ``imwrite`` of the source benchmark rounds to nearest and
        saturates); the forward value is exactly the 8-bit image, the gradient passes straight through.
        """
        if self.defence.float32:
            return x
        pixels = torch.round(x.detach().clamp(0, 1) * 255) / 255
        return pixels + (x - x.detach())

    def defend(self, x: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """``d(x)`` with the gradient rule of the defence's facts (BPDA: straight through).

        Args:
            x: the batch, as the defence receives it (:meth:`as_input`).
            generators: a random defence's generator per row.
        """
        if self.defence.differentiable:
            return self._transform(x, generators)
        with torch.no_grad():
            moved = self._transform(x.detach(), generators)
        return moved + (x - x.detach()) if moved.shape == x.shape else moved

    def _transform(self, x: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
        if not self.defence.random:
            return self.defence.transform(x, None)
        gens = generators if generators is not None else [self._draws] * x.shape[0]
        return self.defence.apply_draws(x, [self.defence.draw(image, g) for image, g in zip(x, gens, strict=True)])

    def generators(self, n: int, purpose: str) -> list[torch.Generator]:
        """The generator of each of ``n`` rows for ``purpose``, from the bound :class:`ImageDraws`.

        Rows are the bound images, or, inside :meth:`reference_rows` (a query attack's candidates), the
        images the rows name. Without a binding, or in an attack whose rows cannot be told apart, every
        row draws afresh from the metric's own generator.

        Raises:
            RuntimeError: scoring ``n`` rows while another number of images is bound (a runner bug).
        """
        bound = _BOUND.get()
        names = None if bound is None else self._row_names(bound.names, n)
        if bound is not None and names is None and not bound.attack:
            raise RuntimeError(
                f"{self.name}: {n} images scored while {len(bound.names)} are bound to draw for; "
                "bind ImageDraws for exactly the rows scored"
            )
        if bound is None or names is None:
            return [self._draws] * n
        return [bound.generator(name, SCORING if not bound.attack else purpose) for name in names]

    def _row_names(self, names: Sequence[str], n: int) -> list[str] | None:
        if self._owners is not None:
            return [names[i] for i in self._owners] if len(self._owners) == n else None
        return list(names) if len(names) == n else None

    @contextlib.contextmanager
    def reference_rows(self, index: torch.Tensor) -> Iterator[Metric]:
        """:meth:`Metric.reference_rows`, and the image of each row: a query draws from its own image's stream."""
        previous, self._owners = self._owners, [int(i) for i in index.tolist()]
        try:
            with super().reference_rows(index):
                yield self
        finally:
            self._owners = previous

    def scoring_draws(self, x: torch.Tensor) -> list[dict[str, Any]]:
        """Each image's draw as scoring makes it (a random defence; empty dicts otherwise), for the rows."""
        if not self.defence.random:
            return [{} for _ in range(x.shape[0])]
        gens = self.generators(x.shape[0], SCORING)
        return [self.defence.draw(image, g) for image, g in zip(x, gens, strict=True)]

    def defended_images(self, x: torch.Tensor) -> torch.Tensor:
        """``d(q(x))`` as scoring sees it: no gradient, a random defence's draw of each bound image."""
        with torch.no_grad():
            inputs = self.as_input(x)
            if not self.defence.random:
                return self.defence.transform(inputs, None)
            return self.defence.apply_draws(inputs, self.scoring_draws(inputs))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        inputs = self.as_input(x)
        with self.base.reference(self._reference):
            if not self.defence.random:
                return self.base(self.defend(inputs))
            bound = _BOUND.get()
            if bound is not None and not bound.attack:  # scoring: every image its own draw
                return self.base(self.defend(inputs, self.generators(x.shape[0], SCORING)))
            if not torch.is_grad_enabled():  # a query: one fresh draw per row
                return self.base(self.defend(inputs, self.generators(x.shape[0], QUERIES)))
            gens = self.generators(x.shape[0], GRADIENT)  # EoT: streams move on with every draw
            draws = [self.base(self.defend(inputs, gens)) for _ in range(self.eot)]
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
