"""Leases: which server drives each environment, claimed with compare-and-swap writes.

The decision is ``core.leases.claim``; this module reads the row, asks it, and writes the
answer with an UPDATE conditioned on the holder and epoch it read (or an INSERT that the
primary key makes fail when another server inserted first). Two servers claiming at once:
one write matches, the other matches no row and the claimant learns it lost.

Renewals change only the expiry and take no ledger lock (one every second per server per
environment would otherwise queue behind every ledger write). A takeover or a first
acquisition bumps or sets the epoch, and goes on the ledger (``lease.acquired``) in the
same transaction as the row, under the ledger head's lock, so it is totally ordered with
every fenced write (``check_fence``): a write either committed before the takeover, by the
old leader legitimately, or it is refused.

Time: on PostgreSQL the database's clock (``clock_timestamp()``), so servers on several
hosts judge expiry by one clock; on SQLite (one server) the store's clock. Tests pass
``now`` explicitly.
"""

from __future__ import annotations

import sqlalchemy as sa

from conveyor.core import leases as core
from conveyor.core.leases import Claim, Fence, Lease
from conveyor.errors import Fenced
from conveyor.store.base import StoreBase
from conveyor.store.records import NewEvent
from conveyor.store.tables import leases


class LeasesRepo(StoreBase):
    """Claim, renew, give back and read environment leases; check a fence in a write."""

    def claim_lease(
        self,
        env: str,
        holder: str,
        *,
        ttl: float = core.TTL,
        exclusive: bool = False,
        now: float | None = None,
    ) -> Claim:
        """Acquire, renew or take over ``env``'s lease; ``held_elsewhere`` when it is
        someone else's (or another server won a race for it)."""
        with self._reading() as conn:
            current = _lease(conn, env)
            at = self._lease_now(conn) if now is None else now
        decided = core.claim(current, env, holder, at, ttl=ttl, exclusive=exclusive)
        if decided.lease is None:
            return decided
        if decided.outcome == "renewed":
            with self._writing_unlogged() as conn:
                written = _compare_and_set(conn, current, decided.lease, at)
            return decided if written else Claim("held_elsewhere", None)
        with self._writing() as w:
            # Re-read under the ledger lock: the row may have moved since the first read.
            current = _lease(w.conn, env)
            at = self._lease_now(w.conn) if now is None else now
            decided = core.claim(current, env, holder, at, ttl=ttl, exclusive=exclusive)
            if decided.lease is None:
                return decided
            if not _compare_and_set(w.conn, current, decided.lease, at):
                return Claim("held_elsewhere", None)
            if decided.outcome != "renewed":
                details = {
                    "holder": holder,
                    "epoch": decided.lease.epoch,
                    "previous_holder": None if current is None else current.holder,
                    "previous_epoch": None if current is None else current.epoch,
                    "previous_expired": None if current is None else not current.live(at),
                }
                w.append([NewEvent("lease.acquired", details, env=env)], actor="conveyor")
            return decided

    def release_lease(self, env: str, holder: str, *, now: float | None = None) -> bool:
        """Give the lease back (clean shutdown): expired now, epoch kept. False when
        ``holder`` did not hold it."""
        with self._writing_unlogged() as conn:
            current = _lease(conn, env)
            at = self._lease_now(conn) if now is None else now
            given_back = core.release(current, holder, at)
            return given_back is not None and _compare_and_set(conn, current, given_back, at)

    def lease(self, env: str) -> Lease | None:
        with self._reading() as conn:
            return _lease(conn, env)

    def leases(self) -> list[Lease]:
        with self._reading() as conn:
            result = conn.execute(sa.select(leases).order_by(leases.c.env))
            return [Lease(r.env, r.holder, int(r.epoch), float(r.expires_at)) for r in result]

    def lease_clock(self) -> float:
        """The time leases are judged by (the database's clock on PostgreSQL)."""
        with self._reading() as conn:
            return self._lease_now(conn)

    def _lease_now(self, conn: sa.Connection) -> float:
        if conn.dialect.name == "postgresql":
            query = sa.text("SELECT extract(epoch FROM clock_timestamp())")
            return float(conn.execute(query).scalar_one())
        return self._clock()


def check_fence(conn: sa.Connection, fence: Fence) -> None:
    """Raise ``Fenced`` unless ``fence`` still names the lease's holder and epoch.

    Called inside a write transaction, after the ledger head is locked: a takeover takes
    the same lock, so between this check and the commit nobody can take the lease over.
    The row is locked too (FOR UPDATE), for writers that do not take the ledger lock.
    """
    row = conn.execute(
        sa.select(leases.c.holder, leases.c.epoch)
        .where(leases.c.env == fence.env)
        .with_for_update()
    ).one_or_none()
    if row is not None and row.holder == fence.holder and int(row.epoch) == fence.epoch:
        return
    now_held = "nobody" if row is None else f"{row.holder} at epoch {row.epoch}"
    raise Fenced(
        f"refused a write for environment {fence.env!r} by {fence.holder} at epoch "
        f"{fence.epoch}: the lease is now held by {now_held}",
        hint="this server lost the environment's lease (it was paused or cut off from the "
        "database); it stops driving it, and the current holder carries on",
    )


def _lease(conn: sa.Connection, env: str) -> Lease | None:
    row = conn.execute(sa.select(leases).where(leases.c.env == env)).one_or_none()
    if row is None:
        return None
    return Lease(row.env, row.holder, int(row.epoch), float(row.expires_at))


def _compare_and_set(conn: sa.Connection, seen: Lease | None, new: Lease, now: float) -> bool:
    """Write ``new`` if the row is still ``seen`` (holder and epoch); True if it was."""
    if seen is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    sa.insert(leases).values(
                        env=new.env,
                        holder=new.holder,
                        epoch=new.epoch,
                        expires_at=new.expires_at,
                        acquired_at=now,
                        renewed_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True
    values: dict[str, object] = {
        "holder": new.holder,
        "epoch": new.epoch,
        "expires_at": new.expires_at,
        "renewed_at": now,
    }
    if (new.holder, new.epoch) != (seen.holder, seen.epoch):
        values["acquired_at"] = now
    result = conn.execute(
        sa.update(leases)
        .where(
            (leases.c.env == seen.env)
            & (leases.c.holder == seen.holder)
            & (leases.c.epoch == seen.epoch)
        )
        .values(**values)
    )
    return result.rowcount == 1
