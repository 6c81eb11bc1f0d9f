"""Adding up the router's processes: counters and in-flight add, the dead are retired, the
newest latencies of each process end the merged samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.model import VersionCounters
from conveyor.traffic.builtin.merge import (
    interleave_samples,
    merge_series,
    retire,
    route_counters,
)
from conveyor.traffic.builtin.metrics import SeriesSnapshot


def counters(requests: int) -> VersionCounters:
    return VersionCounters(
        requests, responses_2xx=requests, latency_buckets=((0.1, requests), (math.inf, requests))
    )


def series(version: str, requests: int, in_flight: int = 0, env: str = "prod") -> SeriesSnapshot:
    return SeriesSnapshot("shop", env, version, counters(requests), in_flight)


def test_series_add_up_per_route_and_version() -> None:
    merged = merge_series(
        [
            [series("v1", 10, 1), series("v2", 1)],
            [series("v1", 5, 2), series("v1", 7, env="dev")],
            [],
        ]
    )
    by_key = {(s.env, s.version): (s.counters.requests, s.in_flight) for s in merged}
    assert by_key == {("prod", "v1"): (15, 3), ("prod", "v2"): (1, 0), ("dev", "v1"): (7, 0)}
    assert route_counters(merged, "shop", "prod")["v1"].latency_buckets == (
        (0.1, 15),
        (math.inf, 15),
    )
    assert set(route_counters(merged, "shop", "dev")) == {"v1"}
    assert route_counters(merged, "shop", "staging") == {}


def test_a_dead_workers_counters_stay_and_its_in_flight_goes() -> None:
    base = retire([], [series("v1", 10, in_flight=4)])
    assert [(s.counters.requests, s.in_flight) for s in base] == [(10, 0)]
    base = retire(base, [series("v1", 3, in_flight=1), series("v2", 2)])
    assert {s.version: s.counters.requests for s in base} == {"v1": 13, "v2": 2}
    assert all(s.in_flight == 0 for s in base)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50)), max_size=30))
def test_merged_counters_never_go_backwards(events: list[tuple[int, int]]) -> None:
    """Workers 0..3 count up, are read, die and are replaced, in any order: the merged total
    read after each event is never below the one before."""
    actual = [0, 0, 0, 0]  # what each live worker has counted
    last_read = [0, 0, 0, 0]
    retired: list[SeriesSnapshot] = []
    previous = 0
    for worker, amount in events:
        if amount == 0:  # the worker dies; a new one starts at zero
            retired = retire(retired, [series("v1", last_read[worker])])
            actual[worker] = last_read[worker] = 0
        elif amount % 2:  # it serves requests nobody has read yet
            actual[worker] += amount
        else:  # the router process reads it
            last_read[worker] = actual[worker]
        parts = [retired, *([series("v1", n)] for n in last_read)]
        total = sum(s.counters.requests for s in merge_series(parts))
        assert total >= previous
        previous = total


@pytest.mark.parametrize(
    ("parts", "size", "expected"),
    [
        ([], 10, ()),
        ([[1.0, 2.0, 3.0]], 10, (1.0, 2.0, 3.0)),
        ([[1.0, 2.0, 3.0]], 2, (2.0, 3.0)),
        # the newest of each process last, in turn
        ([[1.0, 2.0], [10.0, 20.0]], 10, (10.0, 1.0, 20.0, 2.0)),
        # each process gives at most size // processes, its newest
        ([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0]], 4, (20.0, 3.0, 30.0, 4.0)),
        # a process with fewer samples fills the older end only
        ([[1.0, 2.0, 3.0], [30.0]], 10, (1.0, 2.0, 30.0, 3.0)),
        ([[], [5.0]], 10, (5.0,)),
    ],
)
def test_samples_interleave_from_the_newest(
    parts: list[list[float]], size: int, expected: tuple[float, ...]
) -> None:
    assert interleave_samples(parts, size) == expected


def test_merged_samples_tail_holds_every_process() -> None:
    daemon = [-1.0 - i for i in range(2048)]  # negative: the router process's own
    worker = [1.0 + i for i in range(2048)]
    merged = interleave_samples([daemon, worker], 2048)
    assert len(merged) == 2048
    tail = merged[-100:]
    assert sum(1 for s in tail if s > 0) == 50  # half of a window's tail is the worker's
    assert min(s for s in tail if s > 0) == worker[-50]  # and it is the worker's newest
    assert merged[-1] == daemon[-1] and merged[-2] == worker[-1]
