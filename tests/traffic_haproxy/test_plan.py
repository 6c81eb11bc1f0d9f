"""Tables to HAProxy server weights and runtime commands: pure, table-tested."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.model import Backend, Pool
from conveyor.traffic.haproxy.plan import (
    MAX_WEIGHT,
    Command,
    LiveServer,
    ServerSpec,
    drained,
    preview_servers,
    proxy_names,
    safe_name,
    server_name,
    server_weights,
    shares,
    succeeded,
    transition,
)


def pool(version: str, weight: int, count: int, first_port: int = 9000) -> Pool:
    backends = tuple(Backend(f"{version}-{i}", "127.0.0.1", first_port + i) for i in range(count))
    return Pool(version, weight, backends)


def weights(specs: tuple[ServerSpec, ...]) -> dict[str, int]:
    return {spec.name: spec.weight for spec in specs}


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


def test_names_are_legal_and_unique_after_rewriting() -> None:
    assert safe_name("t0123abcdef") == "t0123abcdef"
    assert server_name("v1", "shop-prod-r3-ab12cd") == "v1__shop-prod-r3-ab12cd"
    odd_a, odd_b = safe_name("a b"), safe_name("a/b")
    assert odd_a != odd_b
    assert all(ch.isalnum() or ch in "_.:-" for ch in odd_a + odd_b)
    names = proxy_names("shop", "prod")
    assert (names.frontend, names.backend) == ("fe.shop.prod", "be.shop.prod")
    assert names.preview_backend == "be.shop.prod.preview"


def spec(name: str, weight: int, port: int = 9000, version: str = "v1") -> ServerSpec:
    return ServerSpec(name, version, name, "127.0.0.1", port, weight)


def texts(commands: tuple[Command, ...]) -> list[str]:
    return [c.text for c in commands]


def test_transition_adds_raises_lowers_then_drains_in_that_order() -> None:
    live = {
        "old": LiveServer(spec("old", 100)),
        "up": LiveServer(spec("up", 10)),
        "down": LiveServer(spec("down", 200)),
    }
    desired = (spec("down", 50), spec("up", 256), spec("new", 7, 9001))
    assert texts(transition("be", live, desired)) == [
        "add server be/new 127.0.0.1:9001 weight 7",
        "enable server be/new",
        "set server be/up weight 256",
        "set server be/down weight 50",
        "set server be/old state drain",
    ]


def test_transition_to_the_same_table_sends_nothing() -> None:
    live = {"a": LiveServer(spec("a", 256))}
    assert transition("be", live, (spec("a", 256),)) == ()


def test_a_draining_server_that_comes_back_is_made_ready_not_re_added() -> None:
    live = {"a": LiveServer(spec("a", 256), draining=True)}
    assert texts(transition("be", live, (spec("a", 256),))) == [
        "set server be/a state ready",
        "set server be/a weight 256",
    ]


def test_an_already_draining_server_is_not_drained_again() -> None:
    live = {"a": LiveServer(spec("a", 256), draining=True)}
    assert transition("be", live, ()) == ()


def test_a_moved_instance_changes_address_in_place() -> None:
    live = {"a": LiveServer(spec("a", 256, 9000))}
    assert texts(transition("be", live, (spec("a", 256, 9005),))) == [
        "set server be/a addr 127.0.0.1 port 9005"
    ]


def test_drained_servers_go_to_maintenance_then_away() -> None:
    assert texts(drained("be", "a")) == ["set server be/a state maint", "del server be/a"]


@pytest.mark.parametrize(
    ("command", "answer", "ok"),
    [
        (Command("set server be/a weight 3"), "\n", True),
        (Command("set server be/a weight 3"), "No such server.\n\n", False),
        (drained("be", "a")[1], "Server deleted.", True),
        (
            drained("be", "a")[1],
            "Server still has connections attached to it, cannot remove it.",
            False,
        ),
        (
            transition("be", {}, (spec("a", 1),))[0],
            "New server registered.\n",
            True,
        ),
    ],
)
def test_answers_are_checked_per_command(command: Command, answer: str, ok: bool) -> None:
    assert succeeded(command, answer) is ok


def test_preview_servers_share_equally() -> None:
    specs = preview_servers("v2", (Backend("a", "127.0.0.1", 1), Backend("b", "127.0.0.1", 2)))
    assert [s.weight for s in specs] == [1, 1]
    assert {s.version for s in specs} == {"v2"}
