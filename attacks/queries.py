"""Query-based (black-box) attacks: the base class, the query oracle and the record of queries made.

A black-box attack sees only the metric's scores: it calls ``metric(x)`` (under ``torch.no_grad``),
never a gradient, so it runs on every metric, differentiable or not, no-reference or full-reference
(the oracle binds each candidate's own reference row, :meth:`~iqa_robustness.metrics.base.Metric.reference_rows`).
It maximises the oriented score q as the source's code does (docs/methodology.md, "Black-box attacks";
what differs from that code: docs/differences.md), counts every score of one image as one query and
never exceeds its budget ``queries``.

Randomness is per image: every image of a batch draws from its own ``torch.Generator`` seeded with the
attack's ``seed``, so an image gets the same result in any batch, or alone.

The queries an attack made reach the runner through one channel, :func:`recording_queries`: inside the
block every black-box call appends one :class:`QueryRecord` per image (queries used, best q against
queries) to the :class:`QueryLog` it yields. Attacks stay pure functions of their inputs; outside the
block nothing is recorded.

A query curve holds, after the queries made so far, the q of the image the attack would return if it
stopped there: the best so far for a search that keeps only improvements (Square, Patch-RS, One-pixel),
the current iterate for one that always steps (Parsimonious's mini-batches; NES, whose curve is the mean
of each iteration's probe scores around its iterate, since the source spends no query on the iterate).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Generator, Iterator
from typing import ClassVar, TypeVar

import torch

from iqa_robustness.metrics.base import Metric

from .base import Attack
from .query_batch import query_batch, score_in_batches

#: a sequential search's proposal (what :class:`Lookahead` hands back to the search that drew it)
P = TypeVar("P")


class QueryBudgetError(RuntimeError):
    """An attack asked for more queries than its budget allows (a bug in the attack, not in the metric)."""


@dataclasses.dataclass
class QueryRecord:
    """What one black-box run did on one image.

    Attributes:
        used: queries made (scores of this image).
        curve: ``(queries so far, q held)`` points, in query order (see the module docstring).
    """

    used: int = 0
    curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class QueryLog:
    """The records of every black-box call made inside :func:`recording_queries`, in image order."""

    records: list[QueryRecord] = dataclasses.field(default_factory=list)

    def extend(self, records: list[QueryRecord]) -> None:
        self.records.extend(records)


_ACTIVE_LOG: contextvars.ContextVar[QueryLog | None] = contextvars.ContextVar("query_log", default=None)


@contextlib.contextmanager
def recording_queries() -> Iterator[QueryLog]:
    """Collect the :class:`QueryRecord` of every image a black-box attack runs on inside the block."""
    log = QueryLog()
    token = _ACTIVE_LOG.set(log)
    try:
        yield log
    finally:
        _ACTIVE_LOG.reset(token)


def publish(records: list[QueryRecord]) -> None:
    """Hand the records of one call to the active :class:`QueryLog` (none outside :func:`recording_queries`)."""
    active = _ACTIVE_LOG.get()
    if active is not None:
        active.extend(records)


class Oracle:
    """The metric as a black box: oriented scores of candidates, counted per image against the budget.

    The candidates of one call go to the metric in the batch that is fastest for it, measured from these
    calls themselves (:mod:`attacks.query_batch`); the batch changes no count and no draw.

    Args:
        metric: the attacked metric (a bound full-reference batch is sliced per candidate).
        n_images: images of the attacked batch; candidates name their image by index.
        budget: queries allowed per image.
    """

    def __init__(self, metric: Metric, n_images: int, budget: int) -> None:
        self.metric = metric
        self.budget = budget
        self.used = [0] * n_images
        self.curves: list[list[tuple[int, float]]] = [[] for _ in range(n_images)]

    def left(self, image: int) -> int:
        """Queries image ``image`` may still make."""
        return self.budget - self.used[image]

    def __call__(self, candidates: torch.Tensor, owners: list[int] | None = None) -> torch.Tensor:
        """q of each candidate (M, 3, H, W); ``owners[j]`` is the image candidate ``j`` belongs to.

        Every candidate is one query of its image.

        Args:
            candidates: images to score, in [0, 1].
            owners: image index per candidate; default: candidate ``j`` belongs to image ``j``.

        Returns:
            Oriented scores (M,), float32 on the CPU.

        Raises:
            QueryBudgetError: an image would exceed its budget.
        """
        owners = list(range(candidates.shape[0])) if owners is None else owners
        scores = self.score_ahead(candidates, owners)
        for i, n in collections.Counter(owners).items():
            self.spend(i, n)
        return scores

    def score_ahead(self, candidates: torch.Tensor, owners: list[int]) -> torch.Tensor:
        """q of candidates a sequential search may not use, counted only as :meth:`spend` says.

        A search that proposes one candidate per iteration and moves on from the first it accepts
        (:class:`Lookahead`) scores its next iterations' candidates in one call, each built as if every
        earlier one is rejected; those after an accepted one are dropped unread, and their draws made
        again from the accepted state. The queries the search spends are then exactly the sequential
        search's, and its result the same; the dropped candidates cost time, not queries.

        Raises:
            QueryBudgetError: an image has more candidates in the call than queries left.
        """
        if len(owners) != candidates.shape[0]:
            raise ValueError(f"{len(owners)} owners for {candidates.shape[0]} candidates")
        for i, n in collections.Counter(owners).items():
            self._within_budget(i, n)

        def score(rows: slice) -> torch.Tensor:
            with self.metric.reference_rows(torch.tensor(owners[rows], dtype=torch.long)):
                return self.metric.quality(candidates[rows]).detach().float().cpu()

        with torch.no_grad():
            scores = score_in_batches(self.metric, candidates, score) if owners else []
        return torch.cat(scores) if scores else torch.empty(0)

    def spend(self, image: int, queries: int = 1) -> None:
        """Count ``queries`` scores of image ``image`` as queries it made.

        Raises:
            QueryBudgetError: the image would exceed its budget.
        """
        self._within_budget(image, queries)
        self.used[image] += queries

    def _within_budget(self, image: int, queries: int) -> None:
        if queries > self.left(image):
            raise QueryBudgetError(
                f"image {image} would make {self.used[image] + queries} queries, over the budget of {self.budget}"
            )

    def report(self, image: int, held: float) -> None:
        """Mark the q of the image ``image``'s search holds after the queries it has made so far (a curve point)."""
        self.curves[image].append((self.used[image], float(held)))

    def report_all(self, held: torch.Tensor) -> None:
        """:meth:`report` for every image of the batch at once (``held``: one q per image)."""
        for i, value in enumerate(held.tolist()):
            self.report(i, value)

    def records(self) -> list[QueryRecord]:
        return [QueryRecord(used=u, curve=list(c)) for u, c in zip(self.used, self.curves, strict=True)]


#: a lookahead's depth times its image's acceptance rate stays under this: about 5 % of its candidates wasted
LOOKAHEAD_WASTE = 0.1


class Lookahead:
    """How many iterations ahead each image of a sequential search is scored in the next oracle call.

    Square and Patch-RS propose one candidate per image and iteration and keep it when q rises. Scored
    one iteration at a time, a call holds one candidate per image: five images make calls of five, slower
    per candidate than the metric's best batch, which is larger (:mod:`attacks.query_batch`). Scored ahead
    (:meth:`Oracle.score_ahead`), a call holds each image's next ``depth`` iterations, each built from the
    state the search holds now, as if every earlier one were rejected: that is each one's candidate exactly
    up to the first accepted one, after which the rest are dropped and drawn again. The search's draws,
    queries and result are the sequential search's; only the dropped candidates cost time.

    The call is sized to the oracle's batch (the size it is measuring, or the one it settled on), shared
    among the images still searching. An image's depth is capped so that, at its acceptance rate so far
    (accepted + 1/2 over iterations + 1), about 5 % of its candidates are dropped (:data:`LOOKAHEAD_WASTE`):
    a search that accepts often is scored nearly one iteration at a time. A metric whose scores are draws
    (:attr:`~iqa_robustness.metrics.base.Metric.random_scores`) is scored one iteration at a time, so that
    every query's draw is the one the sequential search gets.

    Args:
        oracle: the oracle the search queries (an image's iteration is the queries it has made).
        candidate: the shape (C, H, W) of a candidate.
    """

    def __init__(self, oracle: Oracle, candidate: torch.Size) -> None:
        self.oracle = oracle
        self.candidate = candidate
        self.accepted = [0] * len(oracle.used)

    def plan(self) -> dict[int, int]:
        """Depth per image still searching (iterations scored in the next call); empty when all are done."""
        active = [i for i in range(len(self.accepted)) if self.oracle.left(i) > 0]
        if not active:
            return {}
        if self.oracle.metric.random_scores:
            return dict.fromkeys(active, 1)
        batch = query_batch(self.oracle.metric, self.candidate)
        target = max(batch.limit or batch.probe or 1, len(active))
        share, extra = divmod(target, len(active))
        plan = {}
        for rank, i in enumerate(active):
            cap = _power_of_two(LOOKAHEAD_WASTE * (self.oracle.used[i] + 1) / (self.accepted[i] + 0.5))
            plan[i] = max(1, min(share + (rank < extra), cap, self.oracle.left(i)))
        return plan

    def run(
        self,
        propose: Callable[[int, int], P],
        candidates: Callable[[list[int], list[P]], torch.Tensor],
        keep: Callable[[int, P], None],
        held: list[float],
        rngs: list[torch.Generator],
    ) -> None:
        """Run the search to every image's budget, keeping a proposal when its q rises above the held q.

        Args:
            propose: ``propose(i, it)`` draws image ``i``'s proposal for iteration ``it`` from ``rngs[i]``,
                from the state the search holds (it must not change that state).
            candidates: the images to score for proposals of the images ``owners``.
            keep: makes image ``i``'s proposal the state the search holds.
            held: each image's held q (updated in place).
            rngs: each image's generator.
        """
        while plan := self.plan():
            owners, proposals, after = [], [], []
            for i, depth in plan.items():
                for m in range(depth):
                    proposals.append(propose(i, self.oracle.used[i] + m))
                    after.append(rngs[i].get_state())
                    owners.append(i)
            q = self.oracle.score_ahead(candidates(owners, proposals), owners).tolist()
            first = 0
            for i, depth in plan.items():
                for j in range(first, first + depth):
                    self.oracle.spend(i)
                    if q[j] > held[i]:
                        held[i] = q[j]
                        keep(i, proposals[j])
                        self.accepted[i] += 1
                        rngs[i].set_state(after[j])  # the later proposals assumed a rejection: drawn again
                        self.oracle.report(i, held[i])
                        break
                    self.oracle.report(i, held[i])
                first += depth


#: a region of one candidate (channel, rows, columns), as slices or indices
Region = tuple[slice | int, ...]
#: regions a row of :class:`CandidateRows` remembers before it is copied whole again
_DIRTY_REGIONS = 8


class CandidateRows:
    """A reused buffer of candidates, each its image's held state with one region written in.

    Square's candidate is the best image so far with one window set, Patch-RS's the clean image with the
    patch pasted at its place. Gathering every candidate's image anew for each call copies whole images, and
    a gather by a list of indices copies them pixel by pixel (0.47 ms for five 256 x 256 images, 0.98 ms for
    ten, against 0.05 ms for a clone of five: about as much as all the rest Square does per call outside the
    metric). The rows here keep the image they held last, and only the regions written since are restored
    from it. A torch gather does not know which pixels differ, so this is written here.

    Args:
        held: the images (N, C, H, W) the candidates are made from; the search changes them in place and
            says where with :meth:`held_changed`.
    """

    def __init__(self, held: torch.Tensor) -> None:
        self.held = held
        self.rows = held.new_empty((0, *held.shape[1:]))
        self.owner: list[int | None] = []
        self.dirty: list[list[Region]] = []

    def build(self, owners: list[int], edits: list[tuple[Region, torch.Tensor]]) -> torch.Tensor:
        """Candidate ``j``: ``held[owners[j]]`` with ``edits[j] = (region, values)`` written in; a view of the
        buffer, valid until the next call."""
        if len(owners) > self.rows.shape[0]:
            grown = self.held.new_empty((len(owners), *self.held.shape[1:]))
            grown[: self.rows.shape[0]] = self.rows
            self.rows = grown
            self.owner += [None] * (len(owners) - len(self.owner))
            self.dirty += [[] for _ in range(len(owners) - len(self.dirty))]
        for j, (i, (region, values)) in enumerate(zip(owners, edits, strict=True)):
            row, source = self.rows[j], self.held[i]
            if self.owner[j] != i or len(self.dirty[j]) > _DIRTY_REGIONS:
                row.copy_(source)
                self.owner[j] = i
            else:
                for old in self.dirty[j]:
                    row[old] = source[old]
            row[region] = values
            self.dirty[j] = [region]
        return self.rows[: len(owners)]

    def held_changed(self, image: int, region: Region) -> None:
        """``held[image]`` changed inside ``region``: the rows built from it restore that region too."""
        for j, i in enumerate(self.owner):
            if i == image:
                self.dirty[j].append(region)


def _power_of_two(limit: float) -> int:
    """The largest power of two not above ``limit`` (at least 1): depths, and so the sizes of the metric
    calls, take few values: fewer batch sizes for the backend to set up and for the query batch to time."""
    return 1 << max(0, int(limit).bit_length() - 1)


#: one image's search as a generator: it yields the candidates (M, C, H, W) it wants scored, receives
#: their q, and returns the image it ends with
Search = Generator[torch.Tensor, list[float], torch.Tensor]


def interleave(oracle: Oracle, searches: list[Search]) -> list[torch.Tensor]:
    """Run one search per image side by side: each round scores every search's pending candidates in one call.

    A search whose queries depend on its own scores (Parsimonious's lazy greedy re-measurements, one
    candidate at a time) cannot batch its candidates with the next image's when the images are searched
    one after the other; as generators they wait together, and the oracle gets their candidates at once.
    Image ``i``'s search is ``searches[i]``; its queries count for image ``i``, its draws are its own, so
    its result is the one it gets alone.

    Returns:
        The image each search returned, in order.
    """
    results: list[torch.Tensor | None] = [None] * len(searches)
    pending: dict[int, torch.Tensor] = {}

    def advance(i: int, scores: list[float] | None) -> None:
        try:
            pending[i] = searches[i].send(scores)  # type: ignore[arg-type]  # None starts it
        except StopIteration as stop:
            pending.pop(i, None)
            results[i] = stop.value

    for i in range(len(searches)):
        advance(i, None)
    while pending:
        asks = list(pending.items())
        owners = [i for i, candidates in asks for _ in range(candidates.shape[0])]
        q = oracle(torch.cat([candidates for _, candidates in asks]), owners).tolist()
        start = 0
        for i, candidates in asks:
            advance(i, q[start : start + candidates.shape[0]])
            start += candidates.shape[0]
    return results  # type: ignore[return-value]  # every search has returned


def generators(seed: int, n: int) -> list[torch.Generator]:
    """One generator per image, each seeded with ``seed``: an image's draws do not depend on its batch."""
    return [torch.Generator().manual_seed(seed) for _ in range(n)]


@dataclasses.dataclass(frozen=True)
class BlackBoxAttack(Attack):
    """Base class of the query-based attacks: scores only, a query budget, per-image randomness.

    Subclasses implement :meth:`search`; :meth:`run` builds the oracle, runs the search without
    gradients and publishes the query records (:func:`recording_queries`).

    Attributes:
        queries: the query budget per image (every score of one image is one query).
        seed: seeds every image's own generator.
    """

    family: ClassVar[str] = "blackbox"
    needs_gradient: ClassVar[bool] = False
    iterations_attr: ClassVar[str | None] = "queries"

    queries: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.queries < 1:
            raise ValueError(f"{self.name}: queries must be a positive number of metric calls per image")

    def run(self, metric: Metric, images: torch.Tensor) -> torch.Tensor:
        oracle = Oracle(metric, images.shape[0], self.queries)
        with torch.no_grad():
            adversarial = self.search(oracle, images, generators(self.seed, images.shape[0]))
        publish(oracle.records())
        return adversarial

    def search(
        self, oracle: Oracle, images: torch.Tensor, rngs: list[torch.Generator]
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def square_fraction(p_init: float, it: int, n_iters: int) -> float:
    """Square's schedule: ``p_init`` halved at iterations 10, 50, 200, 500, 1k, 2k, 4k, 6k, 8k of every 10k.

    The iteration is rescaled to a 10 000-iteration run first (Andriushchenko et al.'s
    ``p_selection``), so a shorter budget goes through the same halvings.
    """
    it = int(it / max(n_iters, 1) * 10_000)
    halvings = sum(it > t for t in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


def random_int(low: int, high: int, rng: torch.Generator) -> int:
    """A uniform integer in ``[low, high]`` (both included) from ``rng``."""
    return int(torch.randint(low, high + 1, (1,), generator=rng))


@dataclasses.dataclass(frozen=True)
class SquareWindows:
    """Where Square-style searches draw their windows: a fixed grid, or the image itself.

    The follow-up benchmark's Square and Square-UAP work on a 3 x 256 x 256 grid: the window side is
    ``round(sqrt(p * 256 * 256))`` (at most 255) and the window's top-left corner is drawn in
    ``[0, 256 - side)``, as ``np.random.randint(0, h - s)`` draws it. On an image that grid is the
    image's top-left 256 x 256 region; on an image smaller than the grid the region is the image, and
    the side at most the region's side less one (the source would waste a query on every window that
    leaves the image). ``grid=0`` puts the grid on the whole image: windows of ``sqrt(p * H * W)``.

    Attributes:
        area: pixels the fraction ``p`` is taken of (``grid**2``, or ``H * W``).
        height, width: the region the windows lie in.
    """

    area: int
    height: int
    width: int

    @classmethod
    def on(cls, grid: int, height: int, width: int) -> SquareWindows:
        if grid == 0:
            return cls(height * width, height, width)
        return cls(grid * grid, min(grid, height), min(grid, width))

    def side(self, fraction: float) -> int:
        """The window side for the area fraction ``fraction``, in ``[1, region side - 1]``."""
        return max(1, min(round((fraction * self.area) ** 0.5), self.height - 1, self.width - 1))

    def corner(self, side: int, rng: torch.Generator) -> tuple[slice, slice]:
        """A random window of ``side`` in the region, as (row, column) slices."""
        top = random_int(0, max(0, self.height - side - 1), rng)
        left = random_int(0, max(0, self.width - side - 1), rng)
        return slice(top, top + side), slice(left, left + side)


def check_grid(attack: Attack) -> None:
    """Refuse a negative ``grid`` (0 is the whole image, a positive value the grid's side in pixels)."""
    if attack.grid < 0:
        raise ValueError(
            f"{attack.name}: grid is the side of the grid the search works on (the source's 256) or 0 for the "
            f"whole image, got {attack.grid}"
        )


#: sign draws before a window that changes nothing is queried anyway (only reached with eps = 0: with
#: eps > 0 at least 7 of the 8 per-channel sign choices change a window)
_REDRAWS = 64


def signs_that_change(
    make: Callable[[torch.Tensor], torch.Tensor], held: torch.Tensor, channels: int, rng: torch.Generator
) -> torch.Tensor:
    """``make(signs)`` for per-channel signs (C, 1, 1) in {-1, 1} redrawn until it differs from ``held``.

    The benchmark's Square and Square-UAP redraw a window's signs ``while`` it would leave the image (or
    the perturbation) unchanged, so that no query is wasted on a repeat.
    """
    for _ in range(_REDRAWS):
        signs = torch.randint(0, 2, (channels, 1, 1), generator=rng).to(held) * 2 - 1
        window = make(signs)
        if not torch.equal(window, held):
            break
    return window


#: points a query curve keeps at most (case results, MLflow histories and plots stay small)
CURVE_POINTS = 200


def thin_curve(points: list[tuple[int, float]], max_points: int = CURVE_POINTS) -> list[list[float]]:
    """``[[queries, best q], ...]`` with at most ``max_points`` points, the last one always kept.

    ``points`` are ascending in queries; where one query count appears several times the last value
    (the best after it) stands.
    """
    last: dict[int, float] = {}
    for queries, best in points:
        last[int(queries)] = float(best)
    steps = sorted(last)
    if len(steps) > max_points:
        stride = -(-len(steps) // max_points)
        steps = [*steps[stride - 1 :: stride][: max_points - 1], steps[-1]]
        steps = sorted(set(steps))
    return [[s, last[s]] for s in steps]


def mean_curve(records: list[QueryRecord], max_points: int = CURVE_POINTS) -> list[list[float]]:
    """The mean over images of the best q against queries: ``[[queries, mean best q], ...]``.

    Each image's best q is carried forward from its last point (an image whose search stopped early
    keeps its final value); the curve is evaluated at up to ``max_points`` query counts.
    """
    curves = [sorted(r.curve) for r in records if r.curve]
    if not curves:
        return []
    end = max(c[-1][0] for c in curves)
    steps = sorted({c[0][0] for c in curves} | {max(1, round(end * k / max_points)) for k in range(1, max_points + 1)})
    columns = [([q for q, _ in c], [b for _, b in c]) for c in curves]
    out = []
    for step in steps:
        values = [best[max(0, bisect.bisect_right(queries, step) - 1)] for queries, best in columns]
        out.append([step, sum(values) / len(values)])
    return out


def tile_to(pattern: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """``pattern`` (..., t, t) repeated from the top-left corner over ``size`` (H, W), cut to it."""
    t_h, t_w = pattern.shape[-2:]
    reps = (-(-size[0] // t_h), -(-size[1] // t_w))
    return pattern.repeat(*([1] * (pattern.ndim - 2)), *reps)[..., : size[0], : size[1]]
