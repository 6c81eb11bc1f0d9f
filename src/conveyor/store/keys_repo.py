"""Trusted keys: the public keys pinned in the store, and when each was retired."""

from __future__ import annotations

import sqlalchemy as sa

from conveyor.errors import NotFound
from conveyor.store import rows
from conveyor.store.base import StoreBase
from conveyor.store.records import NewEvent, PinnedKey
from conveyor.store.tables import trusted_keys


class KeysRepo(StoreBase):
    """Pin, retire and list the keys that vouch for artifacts."""

    def pin_key(
        self,
        fingerprint: str,
        public_pem: str,
        *,
        actor: str,
        retired_at: float | None = None,
        note: str | None = None,
    ) -> PinnedKey:
        """Trust a public key (once; pinning it again changes nothing), on the ledger."""
        with self._writing() as w:
            row = w.conn.execute(
                sa.select(trusted_keys).where(trusted_keys.c.fingerprint == fingerprint)
            ).one_or_none()
            if row is None:
                w.conn.execute(
                    sa.insert(trusted_keys).values(
                        fingerprint=fingerprint,
                        public_pem=public_pem,
                        added_at=w.now,
                        added_by=actor,
                        retired_at=retired_at,
                        note=note,
                    )
                )
                details = {"key": fingerprint, "retired_at": retired_at, "note": note}
                w.append([NewEvent("key.trusted", details)], actor=actor)
            return _pinned(w.conn, fingerprint)

    def retire_key(self, fingerprint: str, *, at: float, actor: str) -> PinnedKey:
        """From ``at`` on, the key vouches only for artifacts recorded before."""
        with self._writing() as w:
            row = w.conn.execute(
                sa.select(trusted_keys).where(trusted_keys.c.fingerprint == fingerprint)
            ).one_or_none()
            if row is None:
                raise NotFound(f"key {fingerprint} is not trusted")
            if row.retired_at is None:
                w.conn.execute(
                    sa.update(trusted_keys)
                    .where(trusted_keys.c.fingerprint == fingerprint)
                    .values(retired_at=at)
                )
                w.append(
                    [NewEvent("key.retired", {"key": fingerprint, "retired_at": at})], actor=actor
                )
            return _pinned(w.conn, fingerprint)

    def pinned_keys(self) -> list[PinnedKey]:
        with self._reading() as conn:
            query = sa.select(trusted_keys).order_by(trusted_keys.c.added_at)
            return [rows.pinned_key(row) for row in conn.execute(query)]


def _pinned(conn: sa.Connection, fingerprint: str) -> PinnedKey:
    row = conn.execute(
        sa.select(trusted_keys).where(trusted_keys.c.fingerprint == fingerprint)
    ).one()
    return rows.pinned_key(row)
