"""Rows in, records out -- and the ledger writer every write transaction carries.

Kept apart from the Store's topics (``*_repo.py``) so they read as lists of operations, while
the mechanics of mapping columns and of extending the hash chain live in one place each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa

from conveyor.core.plan import ReleasePlan
from conveyor.core.state import RolloutStatus
from conveyor.errors import StoreError
from conveyor.store import ledger
from conveyor.store.legacy import legacy_plan
from conveyor.store.records import (
    AddressRecord,
    ArtifactRecord,
    EventRecord,
    NewEvent,
    PinnedKey,
    ReleaseRecord,
    TokenRecord,
)
from conveyor.store.tables import events, ledger_head


def artifact(row: sa.Row[Any], services: Sequence[str] = ()) -> ArtifactRecord:
    m = row._mapping
    return ArtifactRecord(
        digest=m["digest"],
        service=m["service"],
        commit=m["commit"],
        branch=m["branch"],
        dirty=m["dirty"],
        created_at=m["created_at"],
        size=m["size"],
        files=m["files"],
        build_command=m["build_command"],
        outputs=tuple(m["outputs"]),
        metadata=dict(m["metadata"]),
        services=tuple(services) or (m["service"],),
    )


def release(row: sa.Row[Any]) -> ReleaseRecord:
    """The one place a release's JSON becomes typed: plan and status are parsed here, once."""
    m = row._mapping
    stored = dict(m["status"])
    analysis = stored.pop("analysis", None) or {}
    return ReleaseRecord(
        id=m["id"],
        service=m["service"],
        env=m["env"],
        revision=m["revision"],
        plan=ReleasePlan.from_json(m["plan"] or legacy_plan(dict(m), None)),
        status=RolloutStatus.from_json(stored),
        done=bool(m["done"]),
        rollback_of=m["rollback_of"],
        reason=m["reason"],
        actor=m["actor"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        status_version=m["status_version"],
        analysis=analysis,
    )


def status_json(status: RolloutStatus, analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The status column: the core's status, with the controller's analysis runs beside it."""
    data = status.to_json()
    if analysis:
        data["analysis"] = dict(analysis)
    return json_ready(data)


def legacy_spec(plan: ReleasePlan, revision: int) -> dict[str, Any]:
    """The ``spec`` column as servers before plans read it (kept for an upgrade overlap)."""
    return json_ready(
        {
            "rollout": plan.rollout_spec(0, revision).to_json(),
            "instance": plan.instance.to_json(),
        }
    )


def event(row: sa.Row[Any]) -> EventRecord:
    m = row._mapping
    return EventRecord(
        seq=m["seq"],
        at=m["at"],
        actor=m["actor"],
        kind=m["kind"],
        service=m["service"],
        env=m["env"],
        release_id=m["release_id"],
        details=dict(m["details"]),
        prev_hash=m["prev_hash"],
        hash=m["hash"],
    )


def address(row: sa.Row[Any]) -> AddressRecord:
    m = row._mapping
    return AddressRecord(
        service=m["service"],
        env=m["env"],
        host=m["host"],
        port=m["port"],
        preview_port=m["preview_port"],
    )


def pinned_key(row: sa.Row[Any]) -> PinnedKey:
    m = row._mapping
    return PinnedKey(
        fingerprint=m["fingerprint"],
        public_pem=m["public_pem"],
        added_at=m["added_at"],
        added_by=m["added_by"],
        retired_at=m["retired_at"],
        note=m["note"],
    )


def token(row: sa.Row[Any]) -> TokenRecord:
    m = row._mapping
    return TokenRecord(
        id=m["id"],
        identity=m["identity"],
        role=m["role"],
        environments=tuple(m["environments"]),
        created_at=m["created_at"],
        created_by=m["created_by"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


def json_ready(value: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping as a JSON column will hand it back, so records compare equal after a read."""
    return ledger.normalize_details(value)


class Writer:
    """One write transaction: the connection, its clock reading, and the chain's tip.

    Created only after the ``ledger_head`` row is locked, so ``seq``/``hash`` are the real tip
    for the whole transaction; ``finish`` writes the new tip back before commit.
    """

    def __init__(self, conn: sa.Connection, now: float, head_seq: int, head_hash: str) -> None:
        self.conn = conn
        self.now = now
        self._seq = head_seq
        self._hash = head_hash
        self.written: list[EventRecord] = []

    def append(
        self,
        new_events: Sequence[NewEvent],
        *,
        actor: str,
        service: str | None = None,
        env: str | None = None,
        release_id: int | None = None,
    ) -> list[EventRecord]:
        """Chain ``new_events`` after the tip; missing service/env/release come from the args."""
        written: list[EventRecord] = []
        for new in new_events:
            seq = self._seq + 1
            fields: dict[str, Any] = {
                "seq": seq,
                "at": float(self.now),
                "actor": actor,
                "kind": new.kind,
                "service": new.service if new.service is not None else service,
                "env": new.env if new.env is not None else env,
                "release_id": new.release_id if new.release_id is not None else release_id,
                "details": ledger.normalize_details(new.details),
                "prev_hash": self._hash,
            }
            record = EventRecord(**fields, hash=ledger.event_hash(**fields))
            written.append(record)
            self._seq, self._hash = seq, record.hash
        if written:
            try:
                self.conn.execute(sa.insert(events), [asdict(record) for record in written])
            except sa.exc.IntegrityError as exc:
                # The head said seq N was the tip, yet seq N+1 exists: rows were added or the
                # head was wound back behind the store's back. Say so instead of a driver error.
                raise StoreError(
                    f"cannot append to the ledger: seq {written[0].seq} already exists beyond "
                    f"the recorded head (seq {written[0].seq - 1}); the ledger was tampered with",
                    hint="run `conveyor ledger verify --full` and restore the database from a "
                    "backup taken before the first broken seq",
                ) from exc
            self.written.extend(written)
        return written

    def finish(self) -> None:
        if self.written:
            self.conn.execute(
                sa.update(ledger_head)
                .where(ledger_head.c.id == 1)
                .values(seq=self._seq, hash=self._hash)
            )
