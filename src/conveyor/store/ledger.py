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

The chain alone only shows a *careless* edit: whoever can write the database can also
recompute every later hash and the head. Signed checkpoints close that gap. A checkpoint is
the statement "link ``seq`` had hash ``hash`` at time ``at``" (``checkpoint_statement``),
signed by the server in a DSSE envelope of its own payload type; the walk compares each
checkpoint it passes with the event at its seq, so a recomputed chain breaks at the first
checkpoint after the edit. Signatures are checked by the caller (the key is not the store's
business): this module only ever sees checkpoints whose signature verified, and the ones
whose signature did not (``BadCheckpoint``), which are breaks in their own right.

A walk may start at a checkpoint instead of genesis (``anchor``): the anchor's signature
vouches for everything before it, so only the suffix is read. That is what the server does
when it starts; a full walk is for auditors, and for when an anchor is in doubt.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor.store.records import Checkpoint, EventRecord, LedgerCheck

GENESIS = "0" * 64
CHECKPOINT_PAYLOAD_TYPE = "application/vnd.conveyor.ledger-checkpoint+json"
"""The DSSE payload type of a checkpoint: never provenance's, so neither opens as the other."""
CHECKPOINT_TYPE = "https://conveyor.dev/ledger/checkpoint/v1"
FAULTS = ("missing", "link", "hash", "head", "signature", "checkpoint")
"""What can be broken: an event gone, a link that does not link, contents that do not hash
to their stored hash, a head that disagrees with the events, a checkpoint whose signature
does not verify, and a signed checkpoint the chain no longer agrees with."""

Opener = Callable[[Mapping[str, Any]], Checkpoint]
"""Turns a stored envelope into the checkpoint it vouches for; ValueError if it does not."""

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BadCheckpoint:
    """A stored checkpoint that vouches for nothing: its signature is by no trusted key, does
    not match, or its row says something its signed statement does not. ``seq`` is what the
    row claims (unverified), used only to place the report."""

    id: int
    seq: int
    reason: str


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> bytes:
    """The one byte encoding every hash in the ledger is computed over.

    One encoder for every call: ``json.dumps`` with options builds a new one each time,
    which is a tenth of a full verification's cost.
    """
    return _CANONICAL.encode(value).encode("utf-8")


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


def checkpoint_statement(seq: int, hash: str, at: float) -> bytes:
    """The bytes a checkpoint signs: canonical JSON, versioned by ``_type``."""
    return canonical_json({"_type": CHECKPOINT_TYPE, "seq": seq, "hash": hash, "at": float(at)})


def read_checkpoint(payload: bytes, key: str) -> Checkpoint:
    """The checkpoint a payload signed by ``key`` states; ValueError if it is not one."""
    data = json.loads(payload)
    if not isinstance(data, dict) or data.get("_type") != CHECKPOINT_TYPE:
        raise ValueError("the signed payload is not a ledger checkpoint")
    seq, hash_, at = data.get("seq"), data.get("hash"), data.get("at")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError(f"checkpoint seq {seq!r} is not a positive whole number")
    if not isinstance(hash_, str) or not _HEX64.fullmatch(hash_):
        raise ValueError("checkpoint hash is not 64 lowercase hex characters")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise ValueError("checkpoint time is not a number")
    return Checkpoint(seq=seq, hash=hash_, at=float(at), key=key)


def check_chain(
    events: Iterable[EventRecord],
    head: tuple[int, str] | None,
    *,
    anchor: Checkpoint | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    bad: Iterable[BadCheckpoint] = (),
) -> LedgerCheck:
    """Walk ``events`` (ascending seq) and judge the chain, naming the first broken link.

    Without ``anchor`` the walk starts at genesis; with one, ``events`` start at the
    anchor's seq, whose event must hash to what the anchor says and is trusted for what came
    before it. ``checkpoints`` (signatures already verified) are compared with the event at
    their seq as the walk passes it; those before the start are not looked at. ``bad``
    checkpoints are reported where their row places them. ``head`` is the (seq, hash) the
    store recorded as the tip; ``None`` skips that check. The walk stops at the first
    problem: everything after a broken link is unverifiable anyway.
    """
    start = anchor.seq if anchor is not None else 1
    claims = sorted(
        (c for c in [*checkpoints, *([anchor] if anchor else [])] if c.seq >= start),
        key=lambda c: (c.seq, c.at),
    )
    forged = sorted(bad, key=lambda b: b.seq)
    walk = _Walk(start, GENESIS if anchor is None else None, head, anchor is None)
    ci = bi = 0
    for event in events:
        if bi < len(forged) and forged[bi].seq <= event.seq:
            return walk.fail(forged[bi].seq, "signature", _forged(forged[bi]))
        if event.seq != walk.expected:
            vouched = f" ({_signed(anchor)} vouches for it)" if walk.checked == 0 and anchor else ""
            return walk.fail(
                walk.expected,
                "missing",
                f"seq {walk.expected} is missing{vouched} (found seq {event.seq})",
            )
        if walk.prev is not None and event.prev_hash != walk.prev:
            return walk.fail(
                event.seq, "link", f"seq {event.seq} does not link to seq {event.seq - 1}"
            )
        if recompute(event) != event.hash:
            return walk.fail(event.seq, "hash", f"seq {event.seq} was altered after it was written")
        while ci < len(claims) and claims[ci].seq <= event.seq:
            if claims[ci].hash != event.hash:
                return walk.fail(event.seq, "checkpoint", _rewritten(claims[ci], event, walk))
            walk.agreed = claims[ci]
            ci += 1
        walk.passed(event)
    last = walk.expected - 1
    if anchor is not None and walk.checked == 0 and head is not None and head[0] < anchor.seq:
        return walk.fail(
            head[0] + 1,
            "missing",
            f"{_signed(anchor)} vouches for seq {anchor.seq}, but the ledger ends at seq "
            f"{head[0]}: events were removed (or the database was restored from an older backup)",
        )
    if anchor is not None and walk.checked == 0:
        return walk.fail(
            anchor.seq,
            "missing",
            f"seq {anchor.seq} is missing: {_signed(anchor)} vouches for it, "
            "but the ledger ends before it",
        )
    if head is not None and head[0] > last:
        return walk.fail(
            last + 1, "head", f"the ledger head is at seq {head[0]} but events end at seq {last}"
        )
    if ci < len(claims):
        return walk.fail(
            last + 1,
            "missing",
            f"{_signed(claims[ci])} vouches for seq {claims[ci].seq}, but the ledger ends at seq "
            f"{last}: events were removed (or the database was restored from an older backup)",
        )
    if head is not None and head[0] < last:
        return walk.fail(
            head[0] + 1,
            "head",
            f"events after the ledger head (seq {head[0]}) were added behind its back",
        )
    if head is not None and head[1] != walk.prev:
        return walk.fail(
            last, "head", f"the ledger head does not match the last event (seq {last})"
        )
    if bi < len(forged):
        return walk.fail(forged[bi].seq, "signature", _forged(forged[bi]))
    return walk.verdict()


class _Walk:
    """Where a walk stands: the next seq it expects, the hash it must link to, what agreed."""

    def __init__(
        self, start: int, prev: str | None, head: tuple[int, str] | None, full: bool
    ) -> None:
        self.expected = start
        self.prev = prev  # None: the anchor's own link is vouched for by its signature
        self.head = head
        self.full = full
        self.checked = 0
        self.agreed: Checkpoint | None = None

    def passed(self, event: EventRecord) -> None:
        self.checked += 1
        self.prev = event.hash
        self.expected += 1

    def fail(self, seq: int, fault: str, problem: str) -> LedgerCheck:
        return LedgerCheck(
            ok=False,
            checked=self.checked,
            first_bad_seq=seq,
            problem=problem,
            fault=fault,
            checkpoint=self.agreed,
            head=self.head,
            full=self.full,
        )

    def verdict(self) -> LedgerCheck:
        tip = (self.expected - 1, self.prev if self.prev is not None else GENESIS)
        return LedgerCheck(
            ok=True, checked=self.checked, checkpoint=self.agreed, head=tip, full=self.full
        )


def _signed(checkpoint: Checkpoint) -> str:
    when = datetime.fromtimestamp(checkpoint.at, UTC).isoformat(timespec="seconds")
    return f"the checkpoint signed by {_short(checkpoint.key)} at {when}"


def _short(key: str) -> str:
    return key.removeprefix("sha256:")[:16]


def _rewritten(claim: Checkpoint, event: EventRecord, walk: _Walk) -> str:
    since = walk.agreed.seq + 1 if walk.agreed is not None else walk.expected - walk.checked
    return (
        f"seq {event.seq} disagrees with {_signed(claim)}: it signed hash {claim.hash[:16]}, "
        f"the ledger has {event.hash[:16]}; the chain was rewritten (every hash recomputed) "
        f"somewhere in seq {since}..{event.seq}"
    )


def _forged(bad: BadCheckpoint) -> str:
    return f"checkpoint #{bad.id} (for seq {bad.seq}) vouches for nothing: {bad.reason}"
