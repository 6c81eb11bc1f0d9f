"""The traffic-split rules, exhaustively: they are pure, so no sockets are needed."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.model import Backend, Pool
from conveyor.traffic.builtin.balancer import (
    WeightPlan,
    next_round_robin,
    pick,
    retry_candidate,
    weight_plan,
)
from conveyor.traffic.builtin.metrics import VersionStats
from conveyor.traffic.builtin.table import compile_table
from conveyor.traffic.builtin.upstream import BackendState


def _pool(version: str, weight: int, backends: int) -> Pool:
    return Pool(
        version,
        weight,
        tuple(Backend(f"{version}-{i}", "127.0.0.1", 10000 + i) for i in range(backends)),
    )


@pytest.mark.parametrize(
    ("pools", "expected"),
    [
        ([], WeightPlan()),
        ([_pool("a", 100, 1)], WeightPlan((0,), (100,))),
        ([_pool("a", 80, 2), _pool("b", 20, 1)], WeightPlan((0, 1), (80, 100))),
        # a pool without backends is skipped: its share goes to the others
        ([_pool("a", 80, 0), _pool("b", 20, 1)], WeightPlan((1,), (20,))),
        # weight 0 gets no new request, even as the only pool with backends: it is reserve
        ([_pool("a", 0, 3), _pool("b", 100, 0)], WeightPlan((), (), (0,))),
        ([_pool("a", 0, 3), _pool("b", 5, 1)], WeightPlan((1,), (5,), (0,))),
        ([_pool("a", 0, 1), _pool("b", 0, 1)], WeightPlan((), (), (0, 1))),
        ([_pool("a", -5, 1), _pool("b", 1, 1)], WeightPlan((1,), (1,), (0,))),
        ([_pool("a", 0, 0), _pool("b", 1, 1)], WeightPlan((1,), (1,))),
        ([_pool("a", 1, 1), _pool("b", 0, 1), _pool("c", 3, 1)], WeightPlan((0, 2), (1, 4), (1,))),
    ],
)
def test_weight_plan_eligibility(pools: list[Pool], expected: WeightPlan) -> None:
    assert weight_plan(pools) == expected


def test_empty_plan_has_zero_total() -> None:
    assert WeightPlan().total == 0
    assert weight_plan([_pool("a", 7, 1), _pool("b", 3, 1)]).total == 10


@given(
    st.lists(
        st.tuples(st.integers(min_value=-2, max_value=50), st.integers(min_value=0, max_value=3)),
        max_size=6,
    )
)
def test_evenly_spread_points_land_exactly_in_proportion(spec: list[tuple[int, int]]) -> None:
    pools = [_pool(f"v{i}", weight, backends) for i, (weight, backends) in enumerate(spec)]
    plan = weight_plan(pools)
    counts = Counter(plan.indices[pick(plan.cumulative, point)] for point in range(plan.total))
    expected = {i: p.weight for i, p in enumerate(pools) if p.weight > 0 and p.backends}
    assert dict(counts) == expected


@given(
    st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=5),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_pick_is_always_a_valid_position(weights: list[int], u: float) -> None:
    plan = weight_plan([_pool(f"v{i}", w, 1) for i, w in enumerate(weights)])
    position = pick(plan.cumulative, u * plan.total)
    assert 0 <= position < len(plan.indices)


def test_round_robin_cycles_through_every_instance() -> None:
    cursor, seen = 0, []
    for _ in range(7):
        seen.append(cursor)
        cursor = next_round_robin(cursor, 3)
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    assert next_round_robin(0, 1) == 0


def test_retry_prefers_the_failed_version_then_the_others() -> None:
    pools = [("v1", ["a", "b", "c"]), ("v2", ["x", "y"])]
    assert retry_candidate(pools, "v1", {"a"}, start=1) == (0, "b")
    assert retry_candidate(pools, "v1", {"a", "b"}, start=1) == (0, "c")
    assert retry_candidate(pools, "v1", {"a", "b", "c"}) == (1, "x")
    assert retry_candidate(pools, "v2", {"x"}) == (1, "y")
    assert retry_candidate(pools, "v2", {"x", "y"}) == (0, "a")
    assert retry_candidate(pools, "v9", set()) == (0, "a")
    assert retry_candidate(pools, "v1", {"a", "b", "c", "x", "y"}) is None
    assert retry_candidate([], "v1", set()) is None


@given(
    st.lists(st.lists(st.integers(0, 9), max_size=4, unique=True), max_size=4),
    st.sets(st.integers(0, 9)),
    st.integers(0, 5),
)
def test_retry_never_repeats_and_never_gives_up_early(
    groups: list[list[int]], tried: set[int], start: int
) -> None:
    pools = [(f"v{i}", backends) for i, backends in enumerate(groups)]
    found = retry_candidate(pools, "v0", tried, start)
    untried = [b for _, backends in pools for b in backends if b not in tried]
    if not untried:
        assert found is None
    else:
        assert found is not None
        position, backend = found
        assert backend not in tried
        assert backend in pools[position][1]
        if any(b not in tried for b in (groups[0] if groups else [])):
            assert position == 0  # the failed version first


def _compiled(pools: list[Pool], seed: int = 7):  # type: ignore[no-untyped-def]
    def backend_for(instance_id: str, host: str, port: int) -> BackendState:
        return BackendState(instance_id, host, port, idle_timeout=2.0, max_idle=4)

    table = compile_table(pools, VersionStats, backend_for, VersionStats("-"))
    table.random = random.Random(seed).random
    return table


def test_compiled_table_follows_weights_and_round_robins() -> None:
    table = _compiled([_pool("v1", 80, 2), _pool("v2", 20, 3)])
    versions: Counter[str] = Counter()
    instances: Counter[str] = Counter()
    for _ in range(20_000):
        pool = table.choose()
        assert pool is not None
        versions[pool.version] += 1
        instances[pool.next_backend().instance_id] += 1
    assert abs(versions["v1"] / 20_000 - 0.8) < 0.02
    # round-robin: instances of a pool are used equally (to within one request)
    assert abs(instances["v1-0"] - instances["v1-1"]) <= 1
    assert (
        max(instances[f"v2-{i}"] for i in range(3)) - min(instances[f"v2-{i}"] for i in range(3))
        <= 1
    )


@given(
    st.lists(st.tuples(st.integers(1, 100), st.integers(1, 4)), min_size=2, max_size=5),
    st.integers(0, 2**32),
)
def test_compiled_table_decides_exactly_as_the_pure_rules(
    spec: list[tuple[int, int]], seed: int
) -> None:
    """The hot path inlines ``pick`` and ``next_round_robin``: it must agree with them."""
    pools = [_pool(f"v{i}", weight, count) for i, (weight, count) in enumerate(spec)]
    table = _compiled(pools)
    points = random.Random(seed)
    table.random = points.random
    mirror = random.Random(seed)
    plan = weight_plan(pools)
    cursors = [0] * len(pools)
    for _ in range(50):
        chosen = table.choose()
        expected = plan.indices[pick(plan.cumulative, mirror.random() * plan.cumulative[-1])]
        assert chosen is not None and chosen.version == f"v{expected}"
        backend = chosen.next_backend()
        assert backend.instance_id == f"v{expected}-{cursors[expected]}"
        cursors[expected] = next_round_robin(cursors[expected], spec[expected][1])


def test_compiled_table_without_eligible_pool_chooses_nothing() -> None:
    assert _compiled([]).choose() is None
    assert _compiled([_pool("v1", 0, 2), _pool("v2", 10, 0)]).choose() is None
    only = _compiled([_pool("v1", 0, 2), _pool("v2", 10, 1)]).choose()
    assert only is not None and only.version == "v2"


def test_compiled_table_retries_on_the_reserve_only_as_a_last_resort() -> None:
    table = _compiled([_pool("old", 0, 1), _pool("v1", 10, 2), _pool("v2", 10, 1)])
    v1 = next(p for p in table.pools if p.version == "v1")
    tried = [v1.next_backend()]
    order = []
    while (found := table.retry("v1", tried)) is not None:
        order.append(found[1].instance_id)
        tried.append(found[1])
    assert order == ["v1-1", "v2-0", "old-0"]
    for _ in range(1000):  # and the reserve never gets a new request
        chosen = table.choose()
        assert chosen is not None and chosen.version != "old"
