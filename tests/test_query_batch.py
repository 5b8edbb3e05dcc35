"""The oracle's query batch: measured from its own calls, the largest batch no slower than the fastest."""

from __future__ import annotations

import time

import pytest
import torch

from iqa_robustness.attacks.queries import Oracle
from iqa_robustness.attacks.query_batch import (
    LONG_CALL_S,
    MAX_TIMED_CALLS,
    TIMED_CALLS,
    WATCHED_CALLS,
    QueryBatch,
    query_batch,
)
from iqa_robustness.metrics.base import Metric, MetricSpec


def climb(batch: QueryBatch, per_image: dict[int, float]) -> None:
    """Feed ``batch`` calls of the size it measures, each taking ``per_image[size]`` per image."""
    while batch.probe is not None and batch.probe in per_image:
        size = batch.probe
        for _ in range(TIMED_CALLS + 1):
            batch.observe(size, per_image[size] * size)


def test_a_flat_curve_climbs_to_the_largest_size_measured() -> None:
    batch = QueryBatch()
    climb(batch, {1: 5e-3, 2: 5.2e-3, 4: 4.9e-3, 8: 5.3e-3, 16: 5.0e-3})
    assert batch.probe == 32  # still measuring: no call has offered 32 candidates yet
    assert batch.limit is None
    assert batch.next_call(100) == 32
    assert batch.next_call(20) == 20  # a smaller call is scored whole


def test_the_climb_ends_at_the_first_size_slower_than_the_fastest_and_keeps_the_largest_fast_one() -> None:
    batch = QueryBatch()
    climb(batch, {1: 4.5e-3, 2: 4.2e-3, 4: 4.4e-3, 8: 7.0e-3, 16: 9e-3})
    assert batch.probe is None
    assert batch.limit == 4  # 4.4 is within 10 % of 4.2; 8 is not
    assert batch.next_call(300) == 4
    assert batch.next_call(3) == 3
    assert batch.next_call(10) == 4  # 4, 3, 3: the fewest calls of at most 4, evenly
    assert batch.next_call(6) == 3
    assert "at most 4" in batch.describe()


def test_calls_that_never_reach_the_size_measured_still_measure_it_when_above_half_of_it() -> None:
    batch = QueryBatch()
    climb(batch, {2: 0.3e-3, 4: 0.3e-3, 8: 0.3e-3, 16: 0.3e-3, 32: 0.3e-3, 64: 0.3e-3})
    assert batch.probe == 128
    for _ in range(TIMED_CALLS + 1):  # side-by-side searches offer 100 candidates, never 128
        batch.observe(100, 100 * 0.6e-3)
    for _ in range(MAX_TIMED_CALLS):
        batch.observe(100, 100 * 0.6e-3)
    assert batch.probe is None
    assert batch.limit == 64  # 100 candidates a call were twice as slow per image: calls of 100 are split
    batch = QueryBatch()
    climb(batch, {2: 4e-3, 4: 4e-3, 8: 4e-3})
    for _ in range(MAX_TIMED_CALLS + 1):
        batch.observe(5, 5 * 8e-3)  # 5 is not above half of 16: it tells nothing of 16
    assert batch.probe == 16


def test_a_settled_batch_whose_calls_turn_much_slower_is_halved_and_noise_halves_nothing() -> None:
    batch = QueryBatch()
    climb(batch, {2: 0.3e-3, 4: 0.3e-3, 8: 0.3e-3, 16: 0.3e-3, 32: 0.3e-3, 64: 0.3e-3, 128: 0.6e-3})
    assert batch.limit == 64
    for k in range(5 * WATCHED_CALLS):  # another process's load: up to 20 % slower, now and then
        batch.observe(64, 64 * 0.3e-3 * (1.2 if k % 3 == 0 else 1.0))
    assert batch.limit == 64
    for _ in range(2 * WATCHED_CALLS):
        batch.observe(20, 20 * 0.6e-3)  # a call of 20 says nothing of 64
    assert batch.limit == 64
    for k in range(WATCHED_CALLS):  # the heap's layout changed: every call of 40 to 64 twice as slow per image
        batch.observe(40 + 3 * k, (40 + 3 * k) * 0.6e-3)
    assert batch.limit == 32
    assert "halved once" in batch.describe()
    for _ in range(3 * WATCHED_CALLS):
        batch.observe(32, 32 * 0.6e-3)  # the whole machine slowed down: every size is slower, halving once is enough
    assert batch.limit == 32


def test_a_size_slowed_down_by_another_process_is_timed_again_before_it_ends_the_climb() -> None:
    batch = QueryBatch()
    climb(batch, {2: 5e-3})
    batch.observe(4, 1.0)  # warm-up
    for _ in range(TIMED_CALLS):  # two calls slowed down by the load of another process
        batch.observe(4, 4 * 9e-3)
    assert batch.probe == 4
    assert batch.limit is None
    batch.observe(4, 4 * 5e-3)  # the load is gone: as fast as batch 2
    assert batch.probe == 8


def test_a_size_still_slower_after_the_most_calls_ends_the_climb() -> None:
    batch = QueryBatch()
    climb(batch, {2: 5e-3})
    for _ in range(MAX_TIMED_CALLS + 1):
        batch.observe(4, 4 * 9e-3)
    assert batch.probe is None
    assert batch.limit == 2


def test_a_long_call_ends_the_climb_at_its_size() -> None:
    per_image = 0.6 * LONG_CALL_S
    batch = QueryBatch()
    climb(batch, {1: per_image, 2: per_image, 4: per_image})
    assert batch.limit == 2  # a call of 2 already takes longer than LONG_CALL_S


def test_the_warm_up_call_of_a_size_is_not_counted() -> None:
    batch = QueryBatch()
    batch.observe(2, 10.0)  # first call: warm-up
    for _ in range(TIMED_CALLS):
        batch.observe(2, 2e-3)
    assert batch.seconds == {2: 1e-3}
    assert batch.probe == 4


def test_out_of_memory_halves_the_batch_below_the_size_that_failed() -> None:
    batch = QueryBatch()
    climb(batch, {1: 3e-3, 2: 2e-3, 4: 1e-3})
    batch.out_of_memory(8)
    assert batch.limit == 4
    batch.out_of_memory(4)
    assert batch.limit == 2


def test_the_climb_starts_at_two_and_no_candidate_of_a_call_of_several_is_scored_alone() -> None:
    metric = SlowInLargeBatches()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    oracle = Oracle(metric, 1, budget=40 * 5 + 1)
    for _ in range(40):
        oracle(x, [0] * 5)
    oracle(x[:1], [0])  # a call of one candidate is scored alone

    assert min(query_batch(metric, x.shape[1:]).seconds) == 2  # the climb measured no batch of 1
    assert query_batch(metric, x.shape[1:]).limit == 2  # 4 + 1 together are 5: slow in this metric
    assert 1 not in metric.calls[:-1]  # calls of 5 went as 2 + 3 and 4 + 1 together, never with one alone
    assert metric.calls[-1] == 1
    assert set(metric.calls[:-1]) <= {2, 3, 4, 5}


class SlowInLargeBatches(Metric):
    """A score that costs 3 ms per image in calls of up to 4 images and 30 ms per image in larger ones.

    Long enough that a sleep's overshoot on a loaded machine (a fraction of a millisecond a call) cannot
    make calls of 4 look 1.3 times slower than measured and halve the batch (``QueryBatch._watch``).
    """

    spec = MetricSpec(name="slow-in-large-batches", differentiable=False)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def score(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        time.sleep(x.shape[0] * (3e-3 if x.shape[0] <= 4 else 30e-3))
        return x.mean(dim=(1, 2, 3))


def test_the_oracle_finds_the_fastest_batch_from_its_own_calls_without_an_extra_query() -> None:
    metric = SlowInLargeBatches()
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    oracle = Oracle(metric, 1, budget=10 * 64)
    scores = [oracle(x, [0] * 64) for _ in range(10)]

    assert sum(metric.calls) == oracle.used[0] == 10 * 64  # every scored candidate is a query, and only those
    assert all(torch.equal(s, x.mean(dim=(1, 2, 3))) for s in scores)
    assert query_batch(metric, x.shape[1:]).limit == 4
    assert metric.calls[-16:] == [4] * 16  # the last call of 64 went in batches of 4


@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 16, 8)])
def test_each_candidate_shape_is_measured_on_its_own(shape: tuple[int, ...]) -> None:
    metric = SlowInLargeBatches()
    assert query_batch(metric, shape) is query_batch(metric, shape)
    assert query_batch(metric, shape) is not query_batch(metric, (3, 4, 4))
