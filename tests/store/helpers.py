"""Small builders shared by the store tests."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conveyor.artifacts.signing import fingerprint, open_envelope, sign_envelope
from conveyor.core.plan import InstanceTemplate, ReleasePlan
from conveyor.core.state import Phase, RolloutStatus, StrategySpec
from conveyor.store import (
    ArtifactRecord,
    Checkpoint,
    EventRecord,
    NewEvent,
    NewRelease,
    Store,
    ledger,
)


class FakeClock:
    """A clock that advances a quarter second per reading, so ordering by time is testable."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def artifact(
    seed: str = "a", *, service: str = "catalog", created_at: float = 1.0
) -> ArtifactRecord:
    return ArtifactRecord(
        digest=digest_of(seed),
        service=service,
        commit="0123abcd" * 5,
        branch="main",
        dirty=False,
        created_at=created_at,
        size=1234,
        files=3,
        build_command="python -m compileall app",
        outputs=("app/",),
        metadata={"build_duration": 1.5, "tools": {"python": "3.11"}},
    )


def plan(digest: str, **overrides: Any) -> ReleasePlan:
    """A small, valid plan: a rolling release of ``catalog`` to staging."""
    fields: dict[str, Any] = {
        "service": "catalog",
        "env": "staging",
        "artifact": digest,
        "config": {"LOG_LEVEL": "info"},
        "instance": InstanceTemplate(command="python3 app/server.py"),
        "desired": 2,
        "strategy": StrategySpec(kind="rolling"),
    }
    fields.update(overrides)
    return ReleasePlan(**fields)


def new_release(
    digest: str, *, phase: Phase = Phase.PENDING, reason: str | None = None, **overrides: Any
) -> NewRelease:
    return NewRelease(plan(digest, **overrides), RolloutStatus(phase=phase), reason=reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Signer:
    """A key that signs ledger checkpoints as the server does, and the opener that trusts it.

    Store tests sign with the real DSSE code (``artifacts.signing``) so what they verify is
    what a server writes; the key is in memory, as the store never sees one.
    """

    def __init__(self, *trusted: Signer) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.fingerprint = fingerprint(self.key.public_key())
        self.trusted = {self.fingerprint: self.key.public_key()}
        for other in trusted:
            self.trusted[other.fingerprint] = other.key.public_key()

    def sign(self, seq: int, hash: str, at: float) -> tuple[Checkpoint, dict[str, Any]]:
        payload = ledger.checkpoint_statement(seq, hash, at)
        envelope = sign_envelope(payload, self.key, payload_type=ledger.CHECKPOINT_PAYLOAD_TYPE)
        return Checkpoint(seq, hash, at, self.fingerprint), envelope

    def opener(self) -> ledger.Opener:
        def open_(envelope: Mapping[str, Any]) -> Checkpoint:
            payload, key = open_envelope(
                envelope, self.trusted, payload_type=ledger.CHECKPOINT_PAYLOAD_TYPE
            )
            return ledger.read_checkpoint(payload, key)

        return open_


def fill(store: Store, n: int) -> list[EventRecord]:
    return store.append_events([NewEvent("step", {"n": i}) for i in range(1, n + 1)], actor="x")


def checkpoint(store: Store, signer: Signer, seq: int, reason: str = "test") -> None:
    event = store.events(after_seq=seq - 1, limit=1)[0]
    claim, envelope = signer.sign(seq, event.hash, 5_000.0 + seq)
    store.record_checkpoint(claim, envelope, reason=reason)


def recompute_from(raw: sa.Engine, store: Store, seq: int, details: str) -> None:
    """Edit event ``seq`` and recompute every later hash and the head, as an attacker would."""
    with raw.begin() as conn:
        conn.execute(
            sa.text("UPDATE events SET details = :d WHERE seq = :s"), {"d": details, "s": seq}
        )
    events = store.events(after_seq=seq - 2 if seq > 1 else 0, limit=100_000)
    prev = events[0].hash if seq > 1 else ledger.GENESIS
    with raw.begin() as conn:
        for event in events:
            if event.seq < seq:
                continue
            fields = {
                "seq": event.seq,
                "at": event.at,
                "actor": event.actor,
                "kind": event.kind,
                "service": event.service,
                "env": event.env,
                "release_id": event.release_id,
                "details": event.details,
                "prev_hash": prev,
            }
            new_hash = ledger.event_hash(**fields)  # type: ignore[arg-type]
            conn.execute(
                sa.text("UPDATE events SET prev_hash = :p, hash = :h WHERE seq = :s"),
                {"p": prev, "h": new_hash, "s": event.seq},
            )
            prev = new_hash
        conn.execute(sa.text("UPDATE ledger_head SET hash = :h WHERE id = 1"), {"h": prev})
