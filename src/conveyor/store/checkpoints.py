"""Reading the ledger for verification: its head, its checkpoints, and events from a seq on.

Kept apart from ``ledger_repo.py`` because verification is the one reader that must see the
chain, the head and the checkpoints in a single snapshot and stream a million rows in
bounded memory; the judgement itself is ``ledger.check_chain`` (pure).

Checkpoint envelopes are opened by the caller's ``Opener``: the store holds no key and
trusts none. A row whose copy of seq/hash disagrees with what its envelope says is as bad
as a forged signature -- someone edited it -- and is reported the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from conveyor.store import ledger, rows
from conveyor.store.ledger import BadCheckpoint, Opener
from conveyor.store.records import Checkpoint, CheckpointRecord, EventRecord, LedgerCheck
from conveyor.store.tables import events, ledger_checkpoints, ledger_head

PAGE = 1000
NEWEST_PAGE = 8
NEWEST_LOOKED_AT = 1000
"""How many checkpoints, newest first, a verification from a checkpoint opens while looking
for one that verifies; past that it gives up on an anchor and walks the whole chain."""


def head(conn: sa.Connection) -> tuple[int, str]:
    row = conn.execute(
        sa.select(ledger_head.c.seq, ledger_head.c.hash).where(ledger_head.c.id == 1)
    ).one()
    return int(row.seq), str(row.hash)


def insert(conn: sa.Connection, checkpoint: Checkpoint, envelope: Any, reason: str) -> int:
    inserted = conn.execute(
        sa.insert(ledger_checkpoints).values(
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            at=float(checkpoint.at),
            key=checkpoint.key,
            reason=reason,
            envelope=rows.json_ready(envelope),
        )
    )
    key = inserted.inserted_primary_key
    assert key is not None
    return int(key[0])


def newest(conn: sa.Connection, limit: int, offset: int = 0) -> list[CheckpointRecord]:
    query = (
        sa.select(ledger_checkpoints)
        .order_by(ledger_checkpoints.c.seq.desc(), ledger_checkpoints.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [record(row) for row in conn.execute(query)]


def record(row: sa.Row[Any]) -> CheckpointRecord:
    m = row._mapping
    return CheckpointRecord(
        id=m["id"],
        seq=m["seq"],
        hash=m["hash"],
        at=m["at"],
        key=m["key"],
        reason=m["reason"],
        envelope=dict(m["envelope"]),
    )


def verify(
    conn: sa.Connection,
    opener: Opener | None,
    *,
    from_checkpoint: bool,
    known: Sequence[Checkpoint],
) -> LedgerCheck:
    """Judge the chain as this connection's snapshot sees it (see ``Store.verify_ledger``)."""
    tip = head(conn)
    if opener is None:
        good: list[Checkpoint] = []
        bad: list[BadCheckpoint] = []
    elif from_checkpoint:
        good, bad = _open_newest(conn, opener)
    else:
        good, bad = _open_all(conn, opener)
    claims = [*good, *known]
    anchor = max(claims, key=lambda c: (c.seq, c.at)) if from_checkpoint and claims else None
    start = anchor.seq if anchor is not None else 1
    return ledger.check_chain(
        events_from(conn, start), tip, anchor=anchor, checkpoints=claims, bad=bad
    )


def events_from(conn: sa.Connection, start: int) -> Iterator[EventRecord]:
    """Events from seq ``start`` on, in order, fetched page by page (bounded memory)."""
    after = start - 1
    while True:
        page = conn.execute(
            sa.select(events).where(events.c.seq > after).order_by(events.c.seq).limit(PAGE)
        ).all()
        for row in page:
            yield rows.event(row)
        if len(page) < PAGE:
            return
        after = page[-1].seq


def _open_newest(
    conn: sa.Connection, opener: Opener
) -> tuple[list[Checkpoint], list[BadCheckpoint]]:
    """The newest checkpoint that verifies, and every newer one that does not."""
    bad: list[BadCheckpoint] = []
    for offset in range(0, NEWEST_LOOKED_AT, NEWEST_PAGE):  # usually the first one verifies
        page = newest(conn, NEWEST_PAGE, offset)
        for stored in page:
            opened = _open(stored, opener)
            if isinstance(opened, Checkpoint):
                return [opened], bad
            bad.append(opened)
        if len(page) < NEWEST_PAGE:
            break
    return [], bad


def _open_all(conn: sa.Connection, opener: Opener) -> tuple[list[Checkpoint], list[BadCheckpoint]]:
    good: list[Checkpoint] = []
    bad: list[BadCheckpoint] = []
    for row in conn.execute(sa.select(ledger_checkpoints).order_by(ledger_checkpoints.c.seq)):
        opened = _open(record(row), opener)
        if isinstance(opened, Checkpoint):
            good.append(opened)
        else:
            bad.append(opened)
    return good, bad


def _open(stored: CheckpointRecord, opener: Opener) -> Checkpoint | BadCheckpoint:
    try:
        checkpoint = opener(stored.envelope)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return BadCheckpoint(stored.id, stored.seq, str(exc) or type(exc).__name__)
    if (checkpoint.seq, checkpoint.hash) != (stored.seq, stored.hash):
        return BadCheckpoint(
            stored.id,
            stored.seq,
            f"its row says seq {stored.seq} hash {stored.hash[:16]}, "
            f"its signed statement seq {checkpoint.seq} hash {checkpoint.hash[:16]}",
        )
    return checkpoint
