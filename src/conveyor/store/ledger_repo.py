"""The ledger as the Store offers it: events, followers, verification, checkpoints."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from conveyor.core.leases import Fence
from conveyor.store import checkpoints, rows
from conveyor.store.base import AppendObserver, StoreBase
from conveyor.store.leases_repo import check_fence
from conveyor.store.ledger import Opener
from conveyor.store.records import Checkpoint, CheckpointRecord, EventRecord, LedgerCheck, NewEvent
from conveyor.store.tables import events


class LedgerRepo(StoreBase):
    """Append, read and verify the hash chain; keep the checkpoints the caller signed."""

    def append_events(
        self, events: Sequence[NewEvent], *, actor: str, fence: Fence | None = None
    ) -> list[EventRecord]:
        """Append free-standing events (approvals, flag flips, overrides) to the chain.

        With a ``fence`` (the controller's own events), its lease is checked in the same
        transaction and a stale holder's events are refused (``Fenced``)."""
        if not events:
            return []
        with self._writing() as w:
            if fence is not None:
                check_fence(w.conn, fence)
            return w.append(events, actor=actor)

    def events(
        self,
        *,
        release_id: int | None = None,
        service: str | None = None,
        env: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
        kinds: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        before_seq: int | None = None,
        newest: bool = False,
    ) -> list[EventRecord]:
        """Events in ledger order; ``after_seq`` lets a follower resume where it stopped,
        ``kinds`` and ``since``/``until`` (times) narrow what is read. ``newest`` keeps the
        last ``limit`` matches instead of the first (still returned oldest first), and
        ``before_seq`` pages further back from there."""
        query = sa.select(events).where(events.c.seq > after_seq)
        if before_seq is not None:
            query = query.where(events.c.seq < before_seq)
        if kinds is not None:
            query = query.where(events.c.kind.in_(list(kinds)))
        if since is not None:
            query = query.where(events.c.at >= since)
        if until is not None:
            query = query.where(events.c.at < until)
        if release_id is not None:
            query = query.where(events.c.release_id == release_id)
        if service is not None:
            query = query.where(events.c.service == service)
        if env is not None:
            query = query.where(events.c.env == env)
        order = events.c.seq.desc() if newest else events.c.seq
        query = query.order_by(order).limit(limit)
        with self._reading() as conn:
            found = [rows.event(row) for row in conn.execute(query)]
        return found[::-1] if newest else found

    def every_event(
        self,
        *,
        service: str | None = None,
        env: str | None = None,
        kinds: Sequence[str] | None = None,
        page: int = 1000,
    ) -> Iterator[EventRecord]:
        """Every matching event in ledger order, read a page at a time: for a question that
        needs a topic's whole history (no cap that would silently drop its newest events),
        in bounded memory."""
        after = 0
        while True:
            batch = self.events(service=service, env=env, kinds=kinds, after_seq=after, limit=page)
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].seq

    def latest_event(self, kind: str) -> EventRecord | None:
        """The newest event of ``kind`` (e.g. the access policy in force)."""
        query = sa.select(events).where(events.c.kind == kind).order_by(events.c.seq.desc())
        with self._reading() as conn:
            row = conn.execute(query.limit(1)).one_or_none()
        return None if row is None else rows.event(row)

    def on_append(self, observer: AppendObserver) -> None:
        """Call ``observer`` with the events of every write, once it has committed.

        Runs in the writer's thread, after the transaction: keep it quick and let it raise
        nothing (the write it is told about has already happened).
        """
        self._observers.append(observer)

    def ledger_head(self) -> tuple[int, str]:
        """The chain's tip as the store recorded it: (seq, hash); (0, GENESIS) when empty."""
        with self._reading() as conn:
            return checkpoints.head(conn)

    def verify_ledger(
        self,
        *,
        opener: Opener | None = None,
        from_checkpoint: bool = False,
        known: Sequence[Checkpoint] = (),
    ) -> LedgerCheck:
        """Re-hash the chain in one consistent snapshot and name its first broken link.

        With an ``opener``, every stored checkpoint must verify and agree with the event at
        its seq, so a chain recomputed after an edit fails at the first checkpoint past the
        edit. ``from_checkpoint`` starts at the newest checkpoint that verifies (or the newest
        of ``known``, checkpoints the caller vouches for itself, e.g. the last one it signed)
        and reads only the events from there to the head: what a server does at start. With
        no checkpoint to start from it walks the whole chain.
        """
        with self._reading(snapshot=True) as conn:
            return checkpoints.verify(conn, opener, from_checkpoint=from_checkpoint, known=known)

    def record_checkpoint(
        self, checkpoint: Checkpoint, envelope: Mapping[str, Any], *, reason: str
    ) -> CheckpointRecord:
        """Keep a checkpoint the caller signed; the store cannot check the signature itself."""
        with self._writing_unlogged() as conn:
            checkpoint_id = checkpoints.insert(conn, checkpoint, envelope, reason)
        return CheckpointRecord(
            id=checkpoint_id,
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            at=checkpoint.at,
            key=checkpoint.key,
            reason=reason,
            envelope=rows.json_ready(envelope),
        )

    def checkpoints(self, limit: int = 100) -> list[CheckpointRecord]:
        """Stored checkpoints, newest (highest seq) first; unverified, as rows say."""
        with self._reading() as conn:
            return checkpoints.newest(conn, limit)
