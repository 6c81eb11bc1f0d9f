"""Flags changed live and guarded flag rollouts, each write with its ledger events.

A live change stores the flag's *whole* definition (not a patch), so what SDKs evaluate is
always one complete, checked document, and "drift from conveyor.yaml" is a comparison of
two definitions. Writes are optimistic: the caller names the revision it read (``None``:
"there was no live definition"), and a concurrent change is refused with ``Conflict``
rather than silently overwritten — two people flipping the same flag see each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from conveyor.errors import Conflict, NotFound
from conveyor.store.base import StoreBase
from conveyor.store.records import FlagRolloutRecord, LiveFlag, NewEvent
from conveyor.store.tables import flag_rollouts, live_flags

NOT_LIVE = -1
"""The revision a caller names when the flag had no live definition when it read it."""


class FlagsRepo(StoreBase):
    def live_flags(self) -> dict[str, LiveFlag]:
        with self._reading() as conn:
            return {
                row.key: _live(row)
                for row in conn.execute(sa.select(live_flags).order_by(live_flags.c.key))
            }

    def write_live_flags(
        self,
        changes: Mapping[str, tuple[Mapping[str, Any] | None, int]],
        events: Sequence[NewEvent],
        *,
        actor: str,
    ) -> int:
        """Store each ``key: (definition or None to reset, expected revision)`` and append
        ``events``, in one transaction; returns the new revision (the last event's seq)."""
        with self._writing() as w:
            for key, (_, expected) in changes.items():
                row = w.conn.execute(
                    sa.select(live_flags.c.revision).where(live_flags.c.key == key)
                ).one_or_none()
                current = NOT_LIVE if row is None else int(row.revision)
                if current != expected:
                    raise Conflict(
                        f"flag {key!r} changed while this change was being made "
                        f"(revision {current}, expected {expected})",
                        hint="look again (`conveyor flag show KEY`) and retry",
                    )
            written = w.append(list(events), actor=actor)
            revision = (
                written[-1].seq
                if written
                else w.conn.execute(
                    sa.select(sa.func.max(live_flags.c.revision))
                ).scalar_one_or_none()
                or 0
            )
            for key, (definition, _) in changes.items():
                w.conn.execute(sa.delete(live_flags).where(live_flags.c.key == key))
                if definition is not None:
                    w.conn.execute(
                        sa.insert(live_flags).values(
                            key=key,
                            definition=dict(definition),
                            revision=revision,
                            updated_at=w.now,
                            updated_by=actor,
                        )
                    )
            return int(revision)

    # --- guarded rollouts --------------------------------------------------------------

    def create_flag_rollout(
        self,
        flag: str,
        env: str,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        event: NewEvent,
        *,
        actor: str,
    ) -> FlagRolloutRecord:
        with self._writing() as w:
            active = w.conn.execute(
                sa.select(flag_rollouts.c.id).where(
                    flag_rollouts.c.flag == flag,
                    flag_rollouts.c.env == env,
                    flag_rollouts.c.phase == "running",
                )
            ).first()
            if active is not None:
                raise Conflict(
                    f"a guarded rollout of {flag!r} in {env} is already running (#{active.id})",
                    hint="wait for it, or stop it: conveyor flag off FLAG --env ENV",
                )
            inserted = w.conn.execute(
                sa.insert(flag_rollouts).values(
                    flag=flag,
                    env=env,
                    phase="running",
                    spec=dict(spec),
                    status=dict(status),
                    version=1,
                    created_at=w.now,
                    created_by=actor,
                    updated_at=w.now,
                )
            ).inserted_primary_key
            assert inserted is not None
            new_id = inserted[0]
            w.append([event], actor=actor, env=env)
            return _rollout(
                w.conn.execute(sa.select(flag_rollouts).where(flag_rollouts.c.id == new_id)).one()
            )

    def flag_rollouts(
        self, *, flag: str | None = None, running: bool = False, limit: int = 100
    ) -> list[FlagRolloutRecord]:
        query = sa.select(flag_rollouts).order_by(flag_rollouts.c.id.desc()).limit(limit)
        if flag is not None:
            query = query.where(flag_rollouts.c.flag == flag)
        if running:
            query = query.where(flag_rollouts.c.phase == "running")
        with self._reading() as conn:
            return [_rollout(row) for row in conn.execute(query)]

    def update_flag_rollout(
        self,
        rollout_id: int,
        expected_version: int,
        phase: str,
        status: Mapping[str, Any],
        events: Sequence[NewEvent],
        *,
        actor: str,
        flag_change: tuple[str, Mapping[str, Any], int] | None = None,
    ) -> FlagRolloutRecord:
        """Move a rollout on (and, with ``flag_change``, the flag's live definition with it)."""
        with self._writing() as w:
            row = w.conn.execute(
                sa.select(flag_rollouts).where(flag_rollouts.c.id == rollout_id)
            ).one_or_none()
            if row is None:
                raise NotFound(f"no guarded rollout #{rollout_id}")
            if row.version != expected_version:
                raise Conflict(f"guarded rollout #{rollout_id} changed meanwhile")
            written = w.append(list(events), actor=actor, env=row.env)
            if flag_change is not None:
                key, definition, expected = flag_change
                current = w.conn.execute(
                    sa.select(live_flags.c.revision).where(live_flags.c.key == key)
                ).one_or_none()
                if (NOT_LIVE if current is None else int(current.revision)) != expected:
                    raise Conflict(f"flag {key!r} changed while the rollout moved it")
                w.conn.execute(sa.delete(live_flags).where(live_flags.c.key == key))
                w.conn.execute(
                    sa.insert(live_flags).values(
                        key=key,
                        definition=dict(definition),
                        revision=written[-1].seq if written else 0,
                        updated_at=w.now,
                        updated_by=actor,
                    )
                )
            w.conn.execute(
                sa.update(flag_rollouts)
                .where(flag_rollouts.c.id == rollout_id)
                .values(phase=phase, status=dict(status), version=row.version + 1, updated_at=w.now)
            )
            return _rollout(
                w.conn.execute(
                    sa.select(flag_rollouts).where(flag_rollouts.c.id == rollout_id)
                ).one()
            )


def _live(row: sa.Row[Any]) -> LiveFlag:
    return LiveFlag(
        key=row.key,
        definition=dict(row.definition),
        revision=int(row.revision),
        updated_at=float(row.updated_at),
        updated_by=row.updated_by,
    )


def _rollout(row: sa.Row[Any]) -> FlagRolloutRecord:
    return FlagRolloutRecord(
        id=int(row.id),
        flag=row.flag,
        env=row.env,
        phase=row.phase,
        spec=dict(row.spec),
        status=dict(row.status),
        version=int(row.version),
        created_at=float(row.created_at),
        created_by=row.created_by,
        updated_at=float(row.updated_at),
    )
