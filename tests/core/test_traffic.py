"""Route tables and error windows (core/traffic.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.model import (
    Backend,
    InstanceObservation,
    InstanceState,
    Pool,
    RouteTable,
    VersionCounters,
)
from conveyor.core.traffic import normalized, route_table, same_split, window

from .builders import NEW, OLD, inst


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({}, {}),
        ({"a": 0}, {}),
        ({"a": -5, "b": 0}, {}),
        ({"a": 100}, {"a": 1}),
        ({"a": 2, "b": 2}, {"a": 1, "b": 1}),
        ({"b": 6, "a": 4}, {"a": 2, "b": 3}),
        ({"a": 3, "b": 0}, {"a": 1}),
        ({"a": 3, "b": -1}, {"a": 1}),
        ({"a": 7, "b": 5}, {"a": 7, "b": 5}),
    ],
)
def test_normalized(weights: dict[str, int], expected: dict[str, int]) -> None:
    assert normalized(weights) == expected
    assert list(normalized(weights)) == sorted(expected)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({}, {}, True),
        ({"a": 0}, {}, True),
        ({"a": 100}, {"a": 1}, True),
        ({"a": 1, "b": 3}, {"b": 30, "a": 10}, True),
        ({"a": 1, "b": 3}, {"a": 1, "b": 2}, False),
        ({"a": 100}, {"b": 100}, False),
        ({"a": 100}, {}, False),
        ({"a": 1, "b": 0}, {"a": 5}, True),
    ],
)
def test_same_split(a: dict[str, int], b: dict[str, int], same: bool) -> None:
    assert same_split(a, b) is same
    assert same_split(b, a) is same


weight_maps = st.dictionaries(st.sampled_from("abcd"), st.integers(-3, 50), max_size=4)


@given(weight_maps, st.integers(1, 20))
def test_scaling_keeps_the_split(weights: dict[str, int], factor: int) -> None:
    scaled = {v: w * factor for v, w in weights.items()}
    assert same_split(weights, scaled)
    assert normalized(normalized(weights)) == normalized(weights)


def _backend(instance_id: str) -> Backend:
    return inst(instance_id).backend


def test_route_table_keeps_only_ready_running_non_draining_instances() -> None:
    instances = [
        inst("o2"),
        inst("o1"),
        inst("o3", ready=False),
        inst("o4", state="stopping"),
        inst("o5", state="backoff"),
        inst("o6"),
    ]
    table = route_table({OLD: 100}, instances, draining=frozenset({"o6"}))
    assert table == RouteTable(pools=(Pool(OLD, 100, (_backend("o1"), _backend("o2"))),))


@pytest.mark.parametrize("state", ["starting", "backoff", "stopping", "stopped", "failed"])
def test_route_table_ignores_a_ready_flag_on_a_process_that_is_not_running(
    state: InstanceState,
) -> None:
    table = route_table({OLD: 1}, [inst("o1", state=state, ready=True)])
    assert table.pools == (Pool(OLD, 1, ()),)


def test_route_table_gives_ready_versions_without_weight_a_zero_pool() -> None:
    table = route_table({NEW: 100}, [inst("n1"), inst("o1"), inst("o2", ready=False)])
    assert table.pools == (
        Pool(NEW, 100, (_backend("n1"),)),
        Pool(OLD, 0, (_backend("o1"),)),
    )


def test_route_table_keeps_weighted_versions_without_backends() -> None:
    # The router skips an empty pool, so the weight is harmless, and keeping it shows
    # in `status` that users were meant to be there.
    table = route_table({NEW: 1, OLD: 3}, [inst("o1")])
    assert table.pools == (Pool(NEW, 1, ()), Pool(OLD, 3, (_backend("o1"),)))


def test_route_table_drops_versions_with_zero_weight_and_no_backends() -> None:
    table = route_table({NEW: 0, OLD: 5, "tgone": 0}, [inst("o1"), inst("n1", ready=False)])
    assert table.pools == (Pool(OLD, 5, (_backend("o1"),)),)


@pytest.mark.parametrize(
    ("weights", "instances", "expected"),
    [
        pytest.param(
            {NEW: 100},
            [inst("n1", ready=False), inst("o1"), inst("o2")],
            (Pool(NEW, 100, ()), Pool(OLD, 1, (_backend("o1"), _backend("o2")))),
            id="crashed-new-falls-back-to-warm-old",
        ),
        pytest.param(
            {NEW: 100, OLD: 0},
            [inst("o1"), inst("x1")],
            (
                Pool(NEW, 100, ()),
                Pool(OLD, 1, (_backend("o1"),)),
                Pool(inst("x1").version, 1, (_backend("x1"),)),
            ),
            id="all-warm-versions-equally",
        ),
        pytest.param({}, [inst("o1")], (Pool(OLD, 1, (_backend("o1"),)),), id="no-weights"),
        pytest.param(
            {NEW: 1, OLD: 0},
            [inst("n1"), inst("o1")],
            (Pool(NEW, 1, (_backend("n1"),)), Pool(OLD, 0, (_backend("o1"),))),
            id="no-fallback-while-a-weighted-version-serves",
        ),
        pytest.param(
            {NEW: 100}, [inst("n1", ready=False)], (Pool(NEW, 100, ()),), id="nothing-warm"
        ),
    ],
)
def test_route_table_falls_back_to_warm_versions_when_no_weighted_one_serves(
    weights: dict[str, int], instances: list[InstanceObservation], expected: tuple[Pool, ...]
) -> None:
    assert route_table(weights, instances).pools == expected


def test_route_table_fallback_never_promotes_the_preview_version() -> None:
    table = route_table({}, [inst("n1")], preview_version=NEW)
    assert table.preview == (_backend("n1"),)
    assert all(p.weight == 0 for p in table.pools if p.version == NEW)


def test_route_table_empty() -> None:
    assert route_table({}, []) == RouteTable()


def test_route_table_preview_backends() -> None:
    instances = [inst("n2"), inst("n1"), inst("n3", ready=False), inst("o1")]
    table = route_table({OLD: 100}, instances, preview_version=NEW)
    assert table.preview == (_backend("n1"), _backend("n2"))
    assert table.preview_version == NEW
    # The preview version has ready instances, so it also appears, unweighted, in the pools.
    assert table.pools == (
        Pool(NEW, 0, (_backend("n1"), _backend("n2"))),
        Pool(OLD, 100, (_backend("o1"),)),
    )


def test_route_table_preview_excludes_draining_and_unknown_version() -> None:
    instances = [inst("n1"), inst("n2")]
    table = route_table({}, instances, draining=frozenset({"n1"}), preview_version=NEW)
    assert table.preview == (_backend("n2"),)
    assert route_table({}, instances, preview_version="tmissing").preview == ()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["n", "o", "x"]),
            st.booleans(),
            st.sampled_from(["running", "starting", "stopping"]),
        ),
        max_size=8,
    ),
    weight_maps.map(lambda w: {{"a": NEW, "b": OLD}.get(k, k): v for k, v in w.items()}),
)
def test_route_table_properties(
    specs: list[tuple[str, bool, InstanceState]], weights: dict[str, int]
) -> None:
    instances = [
        inst(f"{prefix}{i}", ready=ready, state=state)
        for i, (prefix, ready, state) in enumerate(specs)
    ]
    table = route_table(weights, instances)
    served = {b.instance_id for pool in table.pools for b in pool.backends}
    assert served == {i.instance_id for i in instances if i.ready and i.state == "running"}
    assert [p.version for p in table.pools] == sorted({p.version for p in table.pools})
    weighted_serves = any(
        w > 0 and p.version == v and p.backends for p in table.pools for v, w in weights.items()
    )
    for pool in table.pools:
        if weighted_serves or not pool.backends:
            assert pool.weight == max(0, weights.get(pool.version, 0))
        else:
            assert pool.weight == 1  # fallback: every warm version, equally
        assert pool.weight > 0 or pool.backends
        assert all(
            next(i for i in instances if i.instance_id == b.instance_id).version == pool.version
            for b in pool.backends
        )
    if served:
        assert any(p.weight > 0 and p.backends for p in table.pools)


def c(requests: int, errors: int = 0, proxy_errors: int = 0) -> VersionCounters:
    return VersionCounters(requests=requests, responses_5xx=errors, proxy_errors=proxy_errors)


@pytest.mark.parametrize(
    ("samples", "now", "expected"),
    [
        pytest.param([], 100.0, None, id="no-history"),
        pytest.param([(100.0, c(50, 5))], 100.0, (0, 0, 0.0), id="one-sample"),
        pytest.param(
            [
                (80.0, c(10, 1)),
                (88.0, c(20, 2)),
                (90.0, c(30, 3)),
                (95.0, c(60, 4)),
                (100.0, c(70, 9)),
            ],
            100.0,
            (40, 6, 10.0),
            id="baseline-at-window-start",
        ),
        pytest.param(
            [(80.0, c(10, 1)), (89.0, c(20, 2)), (91.0, c(30, 3)), (100.0, c(70, 9))],
            100.0,
            (50, 7, 11.0),
            id="newest-before-start-never-shorter",
        ),
        pytest.param(
            [(95.0, c(10)), (97.0, c(15, 1)), (100.0, c(30, 3))],
            100.0,
            (20, 3, 5.0),
            id="short-history-uses-oldest",
        ),
        pytest.param(
            [(85.0, c(1000, 100)), (95.0, c(10, 1)), (100.0, c(30, 3))],
            100.0,
            (0, 0, 15.0),
            id="router-restart-clamps",
        ),
        pytest.param(
            [(80.0, c(10)), (100.0, c(30, 1, proxy_errors=2))],
            100.0,
            (20, 3, 20.0),
            id="proxy-errors-count",
        ),
        pytest.param(
            [(80.0, c(10)), (90.0, c(30, 3))],
            120.0,
            (0, 0, 0.0),
            id="stale-history-is-quiet",
        ),
    ],
)
def test_window(
    samples: list[tuple[float, VersionCounters]],
    now: float,
    expected: tuple[int, int, float] | None,
) -> None:
    result = window(samples, now, 10.0)
    if expected is None:
        assert result is None
        return
    assert result is not None
    assert (result.requests, result.errors, result.seconds) == expected


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=20),
    st.floats(1.0, 30.0),
)
def test_window_of_growing_counters(steps: list[tuple[int, int]], seconds: float) -> None:
    samples, requests, errors = [], 0, 0
    for t, (r, e) in enumerate(steps):
        requests, errors = requests + r + e, errors + e
        samples.append((float(t), c(requests, errors)))
    now = float(len(steps) - 1)
    result = window(samples, now, seconds)
    assert result is not None
    assert 0 <= result.errors <= result.requests <= requests
    assert 0.0 <= result.error_rate <= 1.0
    if now - seconds >= 0:  # enough history: never shorter than asked (up to float rounding)
        assert result.seconds >= seconds - 1e-9
    assert result.seconds <= max(seconds + 1.0, now)
