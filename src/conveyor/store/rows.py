"""Rows in, records out -- and the ledger writer every write transaction carries.

Kept apart from ``repository.py`` so the Store reads as a list of operations, while the
mechanics of mapping columns and of extending the hash chain live in one place each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa

from conveyor.store import ledger
from conveyor.store.records import (
    AddressRecord,
    ArtifactRecord,
    EventRecord,
    NewEvent,
    ReleaseRecord,
)
from conveyor.store.tables import events, ledger_head


def artifact(row: sa.Row[Any]) -> ArtifactRecord:
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
    )


def release(row: sa.Row[Any]) -> ReleaseRecord:
    m = row._mapping
    return ReleaseRecord(
        id=m["id"],
        service=m["service"],
        env=m["env"],
        revision=m["revision"],
        artifact_digest=m["artifact_digest"],
        template=m["template"],
        config=dict(m["config"]),
        config_version=m["config_version"],
        instances=m["instances"],
        strategy=dict(m["strategy"]),
        spec=dict(m["spec"]),
        status=dict(m["status"]),
        phase=m["phase"],
        done=bool(m["done"]),
        stable_release_id=m["stable_release_id"],
        rollback_of=m["rollback_of"],
        reason=m["reason"],
        actor=m["actor"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        status_version=m["status_version"],
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
        self._moved = False

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
            self.conn.execute(sa.insert(events), [asdict(record) for record in written])
            self._moved = True
        return written

    def finish(self) -> None:
        if self._moved:
            self.conn.execute(
                sa.update(ledger_head)
                .where(ledger_head.c.id == 1)
                .values(seq=self._seq, hash=self._hash)
            )
