"""How many candidates the oracle scores in one metric call: found from the metric's own timings.

A black-box attack hands the oracle (:class:`~attacks.queries.Oracle`) candidates in calls of its own
size: each image's next iterations (Square, Patch-RS: :class:`~attacks.queries.Lookahead`, which sizes its
calls to the batch found here), a population (One-pixel: 300), the pending candidates of every image's
search (Parsimonious: a mini-batch of up to 64 blocks or a re-measurement each), a set of probes per image
(NES: both sides of 20 probes per image, every image in one call per iteration). The metric is
not equally fast at every batch: on a GPU it is faster per image in larger batches up to the device's
width; on a CPU the curve is flat while a call's buffers stay in the process and rises once they do
not (glibc returns freed memory above its thresholds to the system, so every call page-faults its
buffers in again; docs/speed.md, "Memory allocator"): cnniqa-live on 256 x 256 images on two threads
takes about 4.5 ms per image at batch 1 and 2 and 7 to 11 ms at batch 5 to 64 with glibc's defaults,
4.5 to 5 ms at every batch up to 64 with the suite's allocator setting, and 3.6 ms at 64 with tcmalloc.
No constant batch suits all of them, so the oracle measures.

The measurement costs no query and no extra metric call: it times the oracle's own calls. Per metric
and candidate shape (once per process), the batch doubles from 1 while the calls show it is no slower:
each size is timed on :data:`TIMED_CALLS` calls after one untimed warm-up call, and its per-image time is
the fastest of them (another process's load only adds time). A size that looks more than :data:`SLOWER`
times slower per image than the fastest so far is timed again, up to :data:`MAX_TIMED_CALLS` calls, before
the verdict stands: on a machine shared with other processes two calls can both be slowed down, and a
batch settled too small stays for the whole process (on two loaded CPU cores a Patch-RS run settled at 1,
scoring its five images' candidates one by one). The climb ends at the first size whose
per-image time is still more than :data:`SLOWER` times the fastest so far, at a size whose call takes
:data:`LONG_CALL_S` or longer (the fixed cost of a call is then amortised; a larger batch only costs
memory, and on a CPU time too: :data:`LONG_CALL_S`), or at a CUDA out-of-memory error. The batch then used
is the largest size measured within :data:`SLOWER` of the fastest: on a flat curve the largest, so that
noise decides nothing there. While the climb goes on, calls smaller than the size being measured are
scored whole.

The batch a metric call gets can change its scores by rounding (a kernel chosen for the batch size:
cnniqa-live's scores at 128 and 256 pixels differ by up to 2e-6 DMOS between batch 1 and larger batches,
and between larger batches in the last bits of a few scores, up to 4e-6; at 64 pixels batches of 2 or 3
differ from batches of 5 and more by up to 1e-5; docs/speed.md, "Query batch"). A measured choice differs
between runs on a loaded machine, so the climb starts at :data:`MIN_BATCH` (2), and a call of several
candidates never leaves one of them to a metric call of its own (the last two go together): a candidate is
scored alone only when the attack asks for one score. Results repeat across processes when the climb takes
the same course; where the load changes it, a search that keeps a candidate by a margin under that rounding
can take another path (Square's gain on one msu5 image at 64 pixels was 18.1 in one process and 14.8 in the
next; NES's mean gain on msu5 at 256 pixels +4.108 with the batch settled at 64, +4.066 at 32); the batch
the oracle found is recorded in a case's params (``query_batch``).
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Callable

import torch

from iqa_robustness.metrics.base import Metric

#: the smallest batch the climb measures and settles on (batch 1 rounds some metrics' scores differently)
MIN_BATCH = 2
#: a batch more than this many times slower per image than the fastest measured is too large
SLOWER = 1.10
#: a call this long (seconds) is not measured larger: its fixed cost (Python, dispatch, the copy of the
#: scores, well under a millisecond) is amortised below 1 %. A larger batch only costs memory, and on a CPU
#: the climb's calls of it cost time: cnniqa-live at 256 x 256 takes 0.11 s at 32 and 0.22 s at 64, and with
#: 0.25 here the climb went on to 128, whose calls (1.1 GB of buffers) grew the heap to 2.5 GB and made the
#: next calls page-fault: Patch-RS's first 1000 queries on msu5 made 2.6 million page faults and took 21.4 s,
#: against 0.18 million and 19.3 s with 0.1, which stops the climb at 32 (docs/speed.md, "Query batch")
LONG_CALL_S = 0.1
#: timed calls per batch size, after one untimed call that warms the size up
TIMED_CALLS = 2
#: timed calls a size that looks too slow gets before it ends the climb (its fastest call counts)
MAX_TIMED_CALLS = 6
#: calls of the settled batch whose median per-image time is compared with the fastest measured
WATCHED_CALLS = 8
#: that median this many times the fastest measured halves the batch (a cliff, not another process's noise)
CLIFF = 1.3


@dataclasses.dataclass
class QueryBatch:
    """One metric's speed on candidates of one shape, as the oracle's calls measured it, and the batch it gives.

    Attributes:
        seconds: per batch size measured, the fastest per-image time of its timed calls.
        probe: the size being measured (``None`` once the climb has ended).
        limit: the largest batch to score in one call (``None``: none found yet, calls are scored whole
            up to the size being measured).
        halved: the batch was halved after the climb, its calls having turned slow (:meth:`_watch`; once).
    """

    seconds: dict[int, float] = dataclasses.field(default_factory=dict)
    probe: int | None = MIN_BATCH
    limit: int | None = None
    halved: bool = False
    _calls: dict[int, list[float]] = dataclasses.field(default_factory=dict, repr=False)
    _recent: list[float] = dataclasses.field(default_factory=list, repr=False)

    def next_call(self, left: int) -> int:
        """How many of ``left`` candidates still to score the next metric call takes.

        Once the batch is found, the fewest calls it allows share the candidates evenly: 100 at a batch of 32
        go in four calls of 25, not in three of 32 and one of 4, which is slower per candidate.
        """
        if self.limit is not None:
            calls = -(-left // self.limit)
            return -(-left // calls)
        return min(self.probe, left) if self.probe is not None else left

    def observe(self, size: int, seconds: float) -> None:
        """Record a call of ``size`` candidates that took ``seconds``; move the climb on when it has enough.

        A call of one more than the size being measured counts for it (per image): it is that size with
        the last candidate of a call, which is never scored alone (:func:`score_in_batches`). So does a
        call larger than half of it: calls are scored whole up to the size being measured, and an attack
        whose calls never reach that size (Parsimonious's, side by side, 60 to 110) would otherwise keep
        them whole, unmeasured, for the whole process.
        """
        probe = self.probe
        if probe is None:
            self._watch(size, seconds)
            return
        if not probe // 2 < size <= probe + 1:
            return
        timed = self._calls.setdefault(probe, [])
        timed.append(seconds / size)
        if len(timed) <= TIMED_CALLS:  # the first call warms the size up and is not counted
            return
        self.seconds[probe] = min(timed[1:])
        fastest = min(self.seconds.values())
        if self.seconds[probe] * probe >= LONG_CALL_S:
            self._settle()
        elif self.seconds[probe] > SLOWER * fastest:
            if len(timed) > MAX_TIMED_CALLS:  # still slower after as many calls: the verdict stands
                self._settle()
        else:
            self.probe = probe * 2

    def out_of_memory(self, size: int) -> None:
        """A call of ``size`` candidates did not fit in the device's memory: never score more than half of it."""
        self.seconds = {s: t for s, t in self.seconds.items() if s < size}
        self.probe = None
        self.limit = max(1, size // 2)
        if self.seconds:
            fastest = min(self.seconds.values())
            self.limit = min(self.limit, max(s for s, t in self.seconds.items() if t <= SLOWER * fastest))

    def _watch(self, size: int, seconds: float) -> None:
        """After the climb: halve the batch when calls of it have become much slower than measured.

        A batch near the allocator's threshold can turn slow for the rest of a process once the heap's
        layout changes (cnniqa-live at 256 x 256, batch 64: 3.4 ms per image in one process, 7.7 in the next,
        every call). The median of the last :data:`WATCHED_CALLS` calls of more than half the batch's size,
        per image, more than :data:`CLIFF` times the fastest measured, halves it, once (never below
        :data:`MIN_BATCH`): when the whole machine slows down, every size does, and halving again would only
        end at the slow small batches.
        """
        if self.limit is None or self.halved or not self.seconds or self.limit <= MIN_BATCH:
            return  # not settled by a climb, or already halved
        if not self.limit // 2 < size <= self.limit + 1:
            return
        recent = self._recent
        recent.append(seconds / size)
        if len(recent) < WATCHED_CALLS:
            return
        if sorted(recent)[len(recent) // 2] > CLIFF * min(self.seconds.values()):
            self.limit = max(MIN_BATCH, self.limit // 2)
            self.halved = True
        recent.clear()

    def _settle(self) -> None:
        fastest = min(self.seconds.values())
        self.limit = max(s for s, t in self.seconds.items() if t <= SLOWER * fastest)
        self.probe = None

    def describe(self) -> str:
        """In words, for a case's params: the batch and what it came from."""
        if not self.seconds:
            return "not measured (calls scored whole)"
        fastest = min(self.seconds, key=self.seconds.__getitem__)
        measured = f"measured at {min(self.seconds)}-{max(self.seconds)}"
        best = f"fastest {self.seconds[fastest] * 1e3:.3g} ms per candidate at {fastest}"
        if self.limit is None:
            return f"calls scored whole ({measured}, {best}; still measuring {self.probe})"
        halved = "; halved once, its calls having turned slow" if self.halved else ""
        return f"at most {self.limit} candidates a call ({measured}, {best}{halved})"


_BATCHES: weakref.WeakKeyDictionary[Metric, dict[tuple, QueryBatch]] = weakref.WeakKeyDictionary()


def query_batch(metric: Metric, candidate: torch.Size | tuple[int, ...]) -> QueryBatch:
    """The :class:`QueryBatch` of ``metric`` for candidates of shape ``candidate`` (C, H, W): one per process."""
    per_shape = _BATCHES.setdefault(metric, {})
    key = (tuple(candidate), str(metric.device))
    if key not in per_shape:
        per_shape[key] = QueryBatch()
    return per_shape[key]


def describe_batches(metric: Metric) -> str:
    """Every candidate shape's :meth:`QueryBatch.describe` for ``metric`` (``""`` before any query)."""
    return "; ".join(
        f"{'x'.join(map(str, shape))}: {batch.describe()}" for (shape, _), batch in _BATCHES.get(metric, {}).items()
    )


def score_in_batches(
    metric: Metric, candidates: torch.Tensor, score: Callable[[slice], torch.Tensor]
) -> list[torch.Tensor]:
    """``score(rows)`` for consecutive row slices of ``candidates`` in the measured batch, timing each call.

    Args:
        metric: the metric ``score`` calls (its :class:`QueryBatch` is found and updated).
        candidates: the candidates (M, C, H, W); only their count and shape are read.
        score: scores the rows of a slice of ``candidates`` and returns them on the CPU (which waits for
            the device, so the time is the call's).

    Returns:
        The scores of each slice, in order.
    """
    batch = query_batch(metric, candidates.shape[1:])
    out, start, n = [], 0, candidates.shape[0]
    while start < n:
        size = batch.next_call(n - start)
        if n - start - size == 1:  # never one candidate alone in a call of several: the last two go together
            size += 1
        began = time.perf_counter()
        try:
            scores = score(slice(start, start + size))
        except torch.cuda.OutOfMemoryError:
            if size <= 1:
                raise
            batch.out_of_memory(size)
            torch.cuda.empty_cache()
            continue
        batch.observe(size, time.perf_counter() - began)
        out.append(scores)
        start += size
    return out
