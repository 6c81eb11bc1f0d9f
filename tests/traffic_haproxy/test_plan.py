"""Tables to HAProxy server weights and runtime commands: pure, table-tested."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.model import Backend, Pool
from conveyor.traffic.haproxy.plan import (
    MAX_WEIGHT,
    MIN_SLOTS,
    Command,
    ServerSpec,
    Slot,
    Transition,
    layout,
    park,
    preview_servers,
    proxy_names,
    safe_name,
    server_weights,
    shares,
    succeeded,
    transition,
)


def pool(version: str, weight: int, count: int, first_port: int = 9000) -> Pool:
    backends = tuple(Backend(f"{version}-{i}", "127.0.0.1", first_port + i) for i in range(count))
    return Pool(version, weight, backends)


@pytest.mark.parametrize(
    ("pools", "expected"),
    [
        ((pool("v1", 80, 1), pool("v2", 20, 1)), {"v1": 0.8, "v2": 0.2}),
        ((pool("v1", 95, 1), pool("v2", 5, 1)), {"v1": 0.95, "v2": 0.05}),
        ((pool("v1", 50, 3), pool("v2", 50, 1, 9100)), {"v1": 0.5, "v2": 0.5}),
        ((pool("v1", 99, 4), pool("v2", 1, 1, 9100)), {"v1": 0.99, "v2": 0.01}),
        ((pool("v1", 100, 2),), {"v1": 1.0}),
        # weight 0 keeps its servers listed, at weight 0: no new request reaches them
        ((pool("v1", 0, 2), pool("v2", 100, 1, 9100)), {"v1": 0.0, "v2": 1.0}),
        # a pool without backends is skipped: its share falls to the others
        ((pool("v1", 80, 0), pool("v2", 20, 1)), {"v2": 1.0}),
        # nothing eligible: every server at 0, HAProxy answers 503
        ((pool("v1", 0, 1), pool("v2", 0, 1, 9100)), {"v1": 0.0, "v2": 0.0}),
    ],
)
def test_version_shares_follow_the_built_in_eligibility_rules(
    pools: tuple[Pool, ...], expected: dict[str, float]
) -> None:
    got = shares(server_weights(pools))
    assert got.keys() == expected.keys()
    for version, share in expected.items():
        assert got[version] == pytest.approx(share, abs=0.005)


def test_weights_stay_in_haproxy_range_and_the_largest_is_256() -> None:
    specs = server_weights((pool("v1", 95, 3), pool("v2", 5, 1, 9100)))
    assert max(s.weight for s in specs) == MAX_WEIGHT
    assert all(1 <= s.weight <= MAX_WEIGHT for s in specs)


def test_a_tiny_canary_is_never_rounded_away() -> None:
    specs = server_weights((pool("v1", 10_000, 1), pool("v2", 1, 3, 9100)))
    assert all(s.weight == 1 for s in specs if s.version == "v2")


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 4)), min_size=1, max_size=4))
def test_share_error_is_bounded_by_the_number_of_servers(
    raw: list[tuple[int, int]],
) -> None:
    pools = tuple(pool(f"v{i}", w, n, 9000 + 10 * i) for i, (w, n) in enumerate(raw))
    specs = server_weights(pools)
    eligible = [p for p in pools if p.weight > 0 and p.backends]
    total = sum(p.weight for p in eligible)
    got = shares(specs)
    for p in pools:
        ideal = p.weight / total if p in eligible else 0.0
        if p.backends:
            assert abs(got[p.version] - ideal) <= len(specs) / 512 + 1e-9
        else:
            assert p.version not in got


def test_the_same_instance_listed_twice_becomes_one_server() -> None:
    twice = Pool("v1", 1, (Backend("a", "127.0.0.1", 1), Backend("a", "127.0.0.1", 1)))
    assert len(server_weights((twice,))) == 1


def test_proxy_names_are_legal_and_unique_after_rewriting() -> None:
    assert safe_name("t0123abcdef") == "t0123abcdef"
    odd_a, odd_b = safe_name("a b"), safe_name("a/b")
    assert odd_a != odd_b
    assert all(ch.isalnum() or ch in "_.:-" for ch in odd_a + odd_b)
    names = proxy_names("shop", "prod")
    assert (names.frontend, names.backend) == ("fe.shop.prod", "be.shop.prod")
    assert names.preview_backend == "be.shop.prod.preview"


def spec(instance: str, weight: int, port: int = 9000, version: str = "v1") -> ServerSpec:
    return ServerSpec(version, instance, "127.0.0.1", port, weight)


def texts(change: Transition) -> list[str]:
    return [c.text for c in change.commands]


def test_layout_places_servers_first_and_leaves_room_for_a_second_set() -> None:
    slots = layout([spec("a", 256), spec("b", 13, 9001)])
    assert list(slots) == [f"s{i}" for i in range(1, MIN_SLOTS + 1)]
    assert [s.spec.instance_id for s in slots.values() if s.spec] == ["a", "b"]
    big = layout([spec(str(i), 1, 9000 + i) for i in range(10)])
    assert len(big) == 30 and sum(not s.free for s in big.values()) == 10


def test_a_reload_keeps_each_server_in_its_slot_and_frees_draining_ones() -> None:
    before = {
        "s1": Slot("s1", spec("gone", 1), draining=True),
        "s2": Slot("s2", spec("b", 10, 9001)),
        "s3": Slot("s3"),
    }
    after = layout([spec("b", 20, 9001), spec("new", 5, 9002)], before)
    assert after["s2"].spec == spec("b", 20, 9001)  # same slot, new weight
    assert after["s1"].spec == spec("new", 5, 9002)  # the first free slot
    assert not any(s.draining for s in after.values())


def test_transition_assigns_raises_lowers_then_drains_in_that_order() -> None:
    slots = {
        "s1": Slot("s1", spec("old", 100)),
        "s2": Slot("s2", spec("up", 10, 9001)),
        "s3": Slot("s3", spec("down", 200, 9002)),
        "s4": Slot("s4"),
    }
    desired = (spec("down", 50, 9002), spec("up", 256, 9001), spec("new", 7, 9003))
    change = transition("be", slots, desired)
    assert texts(change) == [
        "set server be/s4 addr 127.0.0.1 port 9003",
        "set server be/s4 weight 7",
        "set server be/s4 state ready",
        "set server be/s2 weight 256",
        "set server be/s3 weight 50",
        "set server be/s1 state drain",
    ]
    assert change.slots["s1"].draining and change.slots["s4"].spec == spec("new", 7, 9003)


def test_transition_to_the_same_table_sends_nothing() -> None:
    slots = {"s1": Slot("s1", spec("a", 256))}
    assert texts(transition("be", slots, (spec("a", 256),))) == []


def test_without_a_free_slot_a_server_is_added_at_runtime() -> None:
    slots = {"s1": Slot("s1", spec("a", 256)), "s2": Slot("s2")}
    change = transition("be", slots, (spec("a", 256), spec("c", 9, 9002), spec("d", 9, 9003)))
    assert texts(change) == [
        "set server be/s2 addr 127.0.0.1 port 9002",
        "set server be/s2 weight 9",
        "set server be/s2 state ready",
        "add server be/s3 127.0.0.1:9003 weight 9",
        "enable server be/s3",
    ]
    assert change.slots["s3"].spec == spec("d", 9, 9003)


def test_a_draining_server_that_comes_back_is_made_ready_in_its_slot() -> None:
    slots = {"s1": Slot("s1", spec("a", 256), draining=True), "s2": Slot("s2")}
    assert texts(transition("be", slots, (spec("a", 256),))) == [
        "set server be/s1 state ready",
        "set server be/s1 weight 256",
    ]


def test_an_already_draining_server_is_not_drained_again() -> None:
    slots = {"s1": Slot("s1", spec("a", 256), draining=True)}
    assert texts(transition("be", slots, ())) == []


def test_a_moved_instance_is_a_new_server_and_the_old_address_drains() -> None:
    slots = {"s1": Slot("s1", spec("a", 256, 9000)), "s2": Slot("s2")}
    assert texts(transition("be", slots, (spec("a", 256, 9005),))) == [
        "set server be/s2 addr 127.0.0.1 port 9005",
        "set server be/s2 weight 256",
        "set server be/s2 state ready",
        "set server be/s1 state drain",
    ]


@pytest.mark.parametrize(
    ("command", "answer", "ok"),
    [
        (Command("set server be/a weight 3"), "\n", True),
        (Command("set server be/a weight 3"), "No such server.\n\n", False),
        (park("be", "s1"), "\n", True),
        (transition("be", {}, (spec("a", 1),)).commands[0], "New server registered.", True),
        (
            transition("be", {"s1": Slot("s1")}, (spec("a", 1),)).commands[0],
            "no need to change the addr, port changed from '1' to '9000' by 'stats socket command'",
            True,
        ),
        (
            transition("be", {"s1": Slot("s1")}, (spec("a", 1),)).commands[0],
            "Invalid addr.",
            False,
        ),
    ],
)
def test_answers_are_checked_per_command(command: Command, answer: str, ok: bool) -> None:
    assert succeeded(command, answer) is ok


def test_preview_servers_share_equally() -> None:
    specs = preview_servers("v2", (Backend("a", "127.0.0.1", 1), Backend("b", "127.0.0.1", 2)))
    assert [s.weight for s in specs] == [1, 1]
    assert {s.version for s in specs} == {"v2"}
