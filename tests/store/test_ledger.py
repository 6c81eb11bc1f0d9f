"""The hash chain on its own: encoding, hashing and every way verification must fail."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from conveyor.store.ledger import (
    GENESIS,
    canonical_json,
    check_chain,
    event_hash,
    normalize_details,
    recompute,
)
from conveyor.store.records import EventRecord


def chain(n: int) -> list[EventRecord]:
    events: list[EventRecord] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        fields = {
            "seq": seq,
            "at": 1000.0 + seq / 3,
            "actor": "alice",
            "kind": "step.started",
            "service": "catalog",
            "env": "staging",
            "release_id": seq // 2 or None,
            "details": {"step": seq, "note": "ünïcode ✓"},
            "prev_hash": prev,
        }
        event = EventRecord(**fields, hash=event_hash(**fields))  # type: ignore[arg-type]
        events.append(event)
        prev = event.hash
    return events


def test_canonical_json_is_sorted_compact_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_normalize_details_matches_what_a_json_column_returns() -> None:
    given: dict[Any, Any] = {"t": (1, 2), 3: "x", "n": None}
    assert normalize_details(given) == {
        "t": [1, 2],
        "3": "x",
        "n": None,
    }


def test_normalize_details_spells_out_non_finite_numbers() -> None:
    got = normalize_details({"r": float("nan"), "l": [float("inf"), -float("inf"), 0.5]})
    assert got == {"r": "NaN", "l": ["Infinity", "-Infinity", 0.5]}


def test_normalize_details_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        normalize_details({"x": object()})


def test_event_hash_is_sha256_of_the_documented_payload() -> None:
    fields = {
        "seq": 1,
        "at": 12.5,
        "actor": "bob",
        "kind": "k",
        "service": None,
        "env": None,
        "release_id": None,
        "details": {},
        "prev_hash": GENESIS,
    }
    expected = hashlib.sha256(canonical_json(fields)).hexdigest()
    assert event_hash(**fields) == expected  # type: ignore[arg-type]


def test_event_hash_treats_int_and_float_times_alike() -> None:
    base: dict[str, Any] = {"seq": 1, "actor": "a", "kind": "k", "service": None, "env": None}
    rest: dict[str, Any] = {"release_id": None, "details": {}, "prev_hash": GENESIS}
    assert event_hash(at=5, **base, **rest) == event_hash(at=5.0, **base, **rest)


def test_intact_chain_verifies_against_its_head() -> None:
    events = chain(5)
    check = check_chain(events, (5, events[-1].hash))
    assert check.ok and check.checked == 5 and check.first_bad_seq is None


def test_empty_chain_verifies_at_genesis() -> None:
    assert check_chain([], (0, GENESIS)).ok


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("details", {"step": 99}),
        ("actor", "mallory"),
        ("kind", "release.succeeded"),
        ("at", 1.0),
        ("service", "other"),
        ("release_id", 42),
    ],
)
def test_altering_any_field_is_reported_at_that_seq(field: str, value: Any) -> None:
    events = chain(5)
    events[2] = dataclasses.replace(events[2], **{field: value})
    check = check_chain(events, (5, events[-1].hash))
    assert not check.ok
    assert check.first_bad_seq == 3
    assert check.checked == 2
    assert "seq 3" in (check.problem or "")


def test_rehashing_an_altered_event_breaks_the_next_link() -> None:
    events = chain(5)
    forged = dataclasses.replace(events[1], details={"step": 0})
    events[1] = dataclasses.replace(forged, hash=recompute(forged))
    check = check_chain(events, (5, events[-1].hash))
    assert check.first_bad_seq == 3
    assert "does not link" in (check.problem or "")


def test_a_missing_event_is_a_gap() -> None:
    events = chain(5)
    del events[1]
    check = check_chain(events, (5, events[-1].hash))
    assert check.first_bad_seq == 2
    assert "missing" in (check.problem or "")


def test_a_truncated_tail_is_caught_by_the_head() -> None:
    events = chain(5)
    check = check_chain(events[:3], (5, events[-1].hash))
    assert not check.ok
    assert check.first_bad_seq == 4
    assert check.checked == 3


def test_events_beyond_the_head_are_reported() -> None:
    events = chain(5)
    check = check_chain(events, (4, events[3].hash))
    assert check.first_bad_seq == 5


def test_a_head_that_disagrees_with_the_last_hash_is_reported() -> None:
    events = chain(3)
    check = check_chain(events, (3, "f" * 64))
    assert check.first_bad_seq == 3
    assert "head" in (check.problem or "")


def test_without_a_head_only_the_chain_is_checked() -> None:
    assert check_chain(chain(3)[:2], None).ok
