"""The hash chain on its own: encoding, hashing and every way verification must fail."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from conveyor.store.ledger import (
    CHECKPOINT_TYPE,
    FAULTS,
    GENESIS,
    BadCheckpoint,
    canonical_json,
    check_chain,
    checkpoint_statement,
    event_hash,
    normalize_details,
    read_checkpoint,
    recompute,
)
from conveyor.store.records import Checkpoint, EventRecord

KEY = "sha256:" + "ab" * 32


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


# --- checkpoints -----------------------------------------------------------------------


def vouch(events: list[EventRecord], seq: int, at: float = 2_000.0) -> Checkpoint:
    """What a signed checkpoint of ``events`` at ``seq`` says (signatures are the caller's)."""
    return Checkpoint(seq=seq, hash=events[seq - 1].hash, at=at, key=KEY)


def rewritten(events: list[EventRecord], seq: int, **change: Any) -> list[EventRecord]:
    """``events`` with ``seq`` edited and every later hash recomputed: what an attacker with
    write access to the database (and without the key) can do."""
    out = events[: seq - 1]
    prev = out[-1].hash if out else GENESIS
    for event in events[seq - 1 :]:
        edited = dataclasses.replace(event, **change) if event.seq == seq else event
        edited = dataclasses.replace(edited, prev_hash=prev)
        edited = dataclasses.replace(edited, hash=recompute(edited))
        out.append(edited)
        prev = edited.hash
    return out


def test_a_checkpoint_statement_is_canonical_and_reads_back() -> None:
    payload = checkpoint_statement(7, "c" * 64, 12.5)
    assert payload == canonical_json(
        {"_type": CHECKPOINT_TYPE, "at": 12.5, "hash": "c" * 64, "seq": 7}
    )
    assert read_checkpoint(payload, KEY) == Checkpoint(7, "c" * 64, 12.5, KEY)


@pytest.mark.parametrize(
    "statement",
    [
        b"not json",
        b"[]",
        canonical_json({"_type": "https://in-toto.io/Statement/v1", "seq": 1}),
        canonical_json({"_type": CHECKPOINT_TYPE, "seq": 0, "hash": "c" * 64, "at": 1.0}),
        canonical_json({"_type": CHECKPOINT_TYPE, "seq": True, "hash": "c" * 64, "at": 1.0}),
        canonical_json({"_type": CHECKPOINT_TYPE, "seq": 1, "hash": "C" * 64, "at": 1.0}),
        canonical_json({"_type": CHECKPOINT_TYPE, "seq": 1, "hash": "c" * 63, "at": 1.0}),
        canonical_json({"_type": CHECKPOINT_TYPE, "seq": 1, "hash": "c" * 64, "at": "now"}),
    ],
)
def test_what_is_not_a_checkpoint_statement_is_refused(statement: bytes) -> None:
    with pytest.raises(ValueError):
        read_checkpoint(statement, KEY)


def test_checkpoints_that_agree_pass_and_the_newest_is_named() -> None:
    events = chain(9)
    check = check_chain(
        events, (9, events[-1].hash), checkpoints=[vouch(events, 6), vouch(events, 3)]
    )
    assert check.ok and check.checked == 9
    assert check.checkpoint == vouch(events, 6)
    assert check.head == (9, events[-1].hash)
    assert check.full


def test_a_recomputed_chain_passes_the_links_but_not_the_checkpoint() -> None:
    events = chain(9)
    forged = rewritten(events, 5, details={"step": 500})
    head = (9, forged[-1].hash)
    assert check_chain(forged, head).ok  # the attacker's point: the chain alone is fooled
    check = check_chain(forged, head, checkpoints=[vouch(events, 3), vouch(events, 7)])
    assert not check.ok
    assert (check.first_bad_seq, check.fault) == (7, "checkpoint")
    assert check.checked == 6
    assert check.checkpoint == vouch(events, 3)  # the last one that still agrees
    assert "rewritten" in (check.problem or "")
    assert "seq 4..7" in (check.problem or "")  # where to look: between the two checkpoints


def test_a_checkpoint_beyond_the_end_means_events_were_removed() -> None:
    events = chain(9)
    forged = events[:6]  # tail cut, head wound back to match
    check = check_chain(forged, (6, forged[-1].hash), checkpoints=[vouch(events, 8)])
    assert (check.ok, check.first_bad_seq, check.fault) == (False, 7, "missing")
    assert "seq 8" in (check.problem or "")


def test_a_cut_tail_with_the_head_left_alone_is_a_head_problem() -> None:
    events = chain(9)
    check = check_chain(events[:6], (9, events[-1].hash), checkpoints=[vouch(events, 8)])
    assert (check.first_bad_seq, check.fault) == (7, "head")


def test_from_an_anchor_only_the_suffix_is_read() -> None:
    events = chain(20)
    read: list[int] = []

    def suffix() -> Any:
        for event in events[14:]:
            read.append(event.seq)
            yield event

    check = check_chain(suffix(), (20, events[-1].hash), anchor=vouch(events, 15))
    assert check.ok and check.checked == 6
    assert read == list(range(15, 21))
    assert check.checkpoint == vouch(events, 15)
    assert not check.full


def test_an_anchor_the_chain_disagrees_with_fails_at_the_anchor() -> None:
    events = chain(20)
    forged = rewritten(events, 10, actor="mallory")
    check = check_chain(forged[14:], (20, forged[-1].hash), anchor=vouch(events, 15))
    assert (check.ok, check.first_bad_seq, check.fault, check.checked) == (
        False,
        15,
        "checkpoint",
        0,
    )


def test_an_anchor_past_the_end_of_the_chain_means_events_were_removed() -> None:
    events = chain(5)
    check = check_chain([], (5, events[-1].hash), anchor=Checkpoint(8, "d" * 64, 1.0, KEY))
    assert (check.ok, check.first_bad_seq, check.fault) == (False, 6, "missing")
    assert "ends at seq 5" in (check.problem or "")


def test_an_anchor_past_the_events_but_not_the_head_is_missing() -> None:
    check = check_chain([], (9, "d" * 64), anchor=Checkpoint(8, "d" * 64, 1.0, KEY))
    assert (check.ok, check.first_bad_seq, check.fault) == (False, 8, "missing")


def test_a_missing_anchor_event_is_reported_at_the_anchor() -> None:
    events = chain(9)
    check = check_chain(events[6:], (9, events[-1].hash), anchor=vouch(events, 6))
    assert (check.first_bad_seq, check.fault) == (6, "missing")
    assert "vouches for it" in (check.problem or "")


def test_from_an_anchor_an_altered_suffix_event_is_named() -> None:
    events = chain(20)
    events[17] = dataclasses.replace(events[17], details={"step": -1})
    check = check_chain(events[14:], (20, events[-1].hash), anchor=vouch(events, 15))
    assert (check.first_bad_seq, check.fault, check.checked) == (18, "hash", 3)


def test_checkpoints_before_the_anchor_are_not_looked_at() -> None:
    events = chain(20)
    stale = Checkpoint(4, "e" * 64, 1.0, KEY)  # would fail if it were compared
    check = check_chain(
        events[14:], (20, events[-1].hash), anchor=vouch(events, 15), checkpoints=[stale]
    )
    assert check.ok


def test_a_bad_checkpoint_is_reported_where_its_row_places_it() -> None:
    events = chain(9)
    bad = BadCheckpoint(id=3, seq=6, reason="signed by no trusted key")
    check = check_chain(events, (9, events[-1].hash), bad=[bad])
    assert (check.ok, check.first_bad_seq, check.fault, check.checked) == (
        False,
        6,
        "signature",
        5,
    )
    assert "#3" in (check.problem or "") and "no trusted key" in (check.problem or "")


def test_an_earlier_break_in_the_chain_is_named_before_a_later_bad_checkpoint() -> None:
    events = chain(9)
    events[1] = dataclasses.replace(events[1], kind="forged")
    check = check_chain(events, None, bad=[BadCheckpoint(1, 6, "forged")])
    assert (check.first_bad_seq, check.fault) == (2, "hash")


def test_a_bad_checkpoint_beyond_the_head_is_still_reported() -> None:
    events = chain(4)
    check = check_chain(events, (4, events[-1].hash), bad=[BadCheckpoint(9, 99, "forged")])
    assert (check.ok, check.first_bad_seq, check.fault) == (False, 99, "signature")


def test_every_fault_is_one_of_the_documented_kinds() -> None:
    events = chain(5)
    checks = [
        check_chain(events[:2] + events[3:], None),
        check_chain([events[0], dataclasses.replace(events[1], prev_hash="f" * 64)], None),
        check_chain([dataclasses.replace(events[0], actor="x")], None),
        check_chain(events, (5, "f" * 64)),
        check_chain(events, None, bad=[BadCheckpoint(1, 2, "x")]),
        check_chain(rewritten(events, 2, actor="x"), None, checkpoints=[vouch(events, 4)]),
    ]
    assert [c.fault for c in checks] == list(FAULTS)
