"""The hash chain behind the ledger: encoding, hashing and verification, without I/O.

Each event's hash covers its own fields and the previous event's hash, so changing, removing
or reordering any stored event changes every hash after it. Verification walks the chain from
the genesis value and names the first sequence number whose stored hash no longer matches
what its contents hash to -- the place an auditor should look.

The encoding is canonical JSON (sorted keys, no whitespace, UTF-8 kept as-is) so the same
event hashes the same on SQLite and PostgreSQL and in any later reimplementation. Details are
normalised through a JSON round-trip *before* hashing: what is hashed is exactly what the
database gives back (tuples become lists, integer keys become strings), so a stored event
always re-verifies.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from conveyor.store.records import EventRecord, LedgerCheck

GENESIS = "0" * 64


def canonical_json(value: Any) -> bytes:
    """The one byte encoding every hash in the ledger is computed over."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def normalize_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details as they will read back from a JSON column.

    Non-finite floats (an error rate over zero requests is NaN) become the strings "NaN",
    "Infinity" and "-Infinity": JSON has no such numbers, PostgreSQL refuses them, and
    evidence must not be lost or crash the writer. Anything else that is not JSON raises
    TypeError -- that is a bug in the caller.
    """
    result: dict[str, Any] = json.loads(json.dumps(_finite(dict(details)), allow_nan=False))
    return result


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def event_hash(
    *,
    seq: int,
    at: float,
    actor: str,
    kind: str,
    service: str | None,
    env: str | None,
    release_id: int | None,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    payload = {
        "seq": seq,
        "at": float(at),
        "actor": actor,
        "kind": kind,
        "service": service,
        "env": env,
        "release_id": release_id,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def recompute(event: EventRecord) -> str:
    """What ``event.hash`` should be, given everything else stored in it."""
    return event_hash(
        seq=event.seq,
        at=event.at,
        actor=event.actor,
        kind=event.kind,
        service=event.service,
        env=event.env,
        release_id=event.release_id,
        details=event.details,
        prev_hash=event.prev_hash,
    )


def check_chain(events: Iterable[EventRecord], head: tuple[int, str] | None) -> LedgerCheck:
    """Walk ``events`` (ascending seq, from the start) and judge the chain.

    ``head`` is the (seq, hash) the store recorded as the tip; ``None`` skips that check. The
    walk stops at the first problem: everything after a broken link is unverifiable anyway.
    """
    expected_seq = 1
    prev_hash = GENESIS
    checked = 0
    for event in events:
        if event.seq != expected_seq:
            return _bad(checked, expected_seq, f"seq {expected_seq} is missing (found {event.seq})")
        if event.prev_hash != prev_hash:
            return _bad(checked, event.seq, f"seq {event.seq} does not link to seq {event.seq - 1}")
        if recompute(event) != event.hash:
            return _bad(checked, event.seq, f"seq {event.seq} was altered after it was written")
        checked += 1
        prev_hash = event.hash
        expected_seq += 1
    last_seq = expected_seq - 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            return _bad(
                checked,
                last_seq + 1,
                f"the ledger head is at seq {head_seq} but events end at seq {last_seq}",
            )
        if head_seq < last_seq:
            return _bad(
                checked,
                head_seq + 1,
                f"events after the ledger head (seq {head_seq}) were added behind its back",
            )
        if head_hash != prev_hash:
            return _bad(
                checked, last_seq, f"the ledger head does not match the last event (seq {last_seq})"
            )
    return LedgerCheck(ok=True, checked=checked)


def _bad(checked: int, seq: int, problem: str) -> LedgerCheck:
    return LedgerCheck(ok=False, checked=checked, first_bad_seq=seq, problem=problem)
