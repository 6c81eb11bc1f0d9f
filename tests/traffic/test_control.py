"""The router control protocol's pure parts: versions, proofs, codecs, counter banking."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.model import Backend, HeaderRoute, Pool, RouteTable, VersionCounters
from conveyor.core.retry import RetryPolicy
from conveyor.traffic.builtin import control
from conveyor.traffic.builtin.metrics import SeriesSnapshot


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("1.0", None),
        ("1.7", None),  # a newer minor only adds: compatible
        ("1", None),
        ("2.0", "speaks control protocol 2.0, this side speaks 1.1"),
        ("0.9", "speaks control protocol 0.9"),
        ("", "no valid control protocol version"),
        (None, "no valid control protocol version"),
        (1, "no valid control protocol version"),
        ("1.x", "no valid control protocol version"),
        ("v1", "no valid control protocol version"),
        ("1" * 40, "no valid control protocol version"),
    ],
)
def test_compatible_refuses_other_majors_naming_both(version: object, problem: str | None) -> None:
    found = control.compatible(version)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_proofs_are_bound_to_secret_role_and_challenge() -> None:
    secret = b"s" * 64
    good = control.proof(secret, "client", "abc")
    assert control.check_proof(secret, "client", "abc", good)
    assert not control.check_proof(secret, "router", "abc", good)  # a reflected proof
    assert not control.check_proof(secret, "client", "abd", good)  # a replayed proof
    assert not control.check_proof(b"t" * 64, "client", "abc", good)
    assert not control.check_proof(secret, "client", "abc", None)
    assert not control.check_proof(secret, "client", "abc", 42)


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
backends = st.builds(Backend, names, st.just("127.0.0.1"), st.integers(1, 65535))
tables = st.builds(
    RouteTable,
    st.lists(
        st.builds(Pool, names, st.integers(0, 1000), st.lists(backends, max_size=3).map(tuple)),
        max_size=4,
    ).map(tuple),
    st.lists(backends, max_size=3).map(tuple),
    st.none() | names,
    st.none() | st.builds(HeaderRoute, names, names, names),
    stable_version=st.none() | names,
    retry=st.builds(
        RetryPolicy,
        st.lists(st.sampled_from(["GET", "HEAD", "OPTIONS", "PUT"]), unique=True).map(tuple),
        st.floats(0, 1),
        st.integers(0, 100),
        st.floats(0.1, 600),
    ),
    epoch=st.integers(0, 2**40),
)


@given(tables)
def test_route_tables_survive_the_wire(table: RouteTable) -> None:
    line = control.encode({"op": "apply", "table": control.table_to_wire(table)})
    assert control.table_from_wire(control.decode(line)["table"]) == table


@pytest.mark.parametrize(
    "raw",
    [None, {}, {"pools": 3}, {"pools": [{"version": "a"}]}, {"pools": [], "preview": [[1, 2]]}],
)
def test_a_malformed_table_is_a_protocol_error(raw: object) -> None:
    with pytest.raises(control.ProtocolError, match="not a route table"):
        control.table_from_wire(raw)


@pytest.mark.parametrize("line", [b"[1]", b"{nope", b"\xff\xfe", b"x" * (control.MAX_LINE + 1)])
def test_decode_refuses_what_is_not_one_small_json_object(line: bytes) -> None:
    with pytest.raises(control.ProtocolError):
        control.decode(line)


counters = st.builds(
    VersionCounters,
    *(st.integers(0, 10**9) for _ in range(6)),
    st.floats(0, 1e6),
    st.just(((0.1, 3), (1.0, 5), (math.inf, 7))),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)


@given(counters)
def test_counters_survive_the_wire(value: VersionCounters) -> None:
    line = control.encode({"c": control.counters_to_wire(value)})
    assert control.counters_from_wire(control.decode(line)["c"]) == value


@given(counters, counters)
def test_banked_counters_add_field_by_field(a: VersionCounters, b: VersionCounters) -> None:
    total = control.add_counters(a, b)
    assert total.requests == a.requests + b.requests
    assert total.errors == a.errors + b.errors
    assert total.retried == a.retried + b.retried
    assert total.retries_denied == a.retries_denied + b.retries_denied
    assert total.latency_buckets == ((0.1, 6), (1.0, 10), (math.inf, 14))
    assert control.add_counters(VersionCounters(), a) == a


def test_a_table_and_counters_from_a_router_before_retries_still_read() -> None:
    """1.0 peers without the retry fields: the table has no stable (no retries), the
    counters none retried."""
    table = control.table_from_wire({"pools": [], "preview": []})
    assert table.stable_version is None and table.retry == RetryPolicy() and table.epoch == 0
    old = [5, 4, 0, 0, 1, 0, 0.5, [[0.1, 5], ["+Inf", 5]]]
    counters = control.counters_from_wire(old)
    assert (counters.requests, counters.errors, counters.retried, counters.retries_denied) == (
        5,
        1,
        0,
        0,
    )


@given(counters, st.integers(0, 10**6))
def test_series_survive_the_wire(value: VersionCounters, in_flight: int) -> None:
    series = SeriesSnapshot("shop", "prod", "v2", value, in_flight)
    line = control.encode({"s": control.series_to_wire(series)})
    assert control.series_from_wire(control.decode(line)["s"]) == series


@pytest.mark.parametrize(
    "raw", [None, [], ["shop", "prod", "v1", [], 0], ["a", "b", "c", None, "x"]]
)
def test_a_broken_series_is_a_protocol_error(raw: object) -> None:
    with pytest.raises(control.ProtocolError):
        control.series_from_wire(raw)
