"""Stable addresses: a port and a preview port per (service, env), allocated once, kept."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from conveyor.errors import Conflict, Refused
from conveyor.store import rows
from conveyor.store.base import StoreBase
from conveyor.store.records import AddressRecord, NewEvent
from conveyor.store.tables import addresses

LOOPBACK = "127.0.0.1"
_PORT_ATTEMPTS = 50


class AddressesRepo(StoreBase):
    """Allocate, pin and list the addresses clients rely on across releases."""

    def address(
        self,
        service: str,
        env: str,
        *,
        pinned_port: int | None = None,
        allocate: Callable[[], int],
    ) -> AddressRecord:
        """The stable address of (service, env), allocated on first use and then kept.

        ``allocate`` returns a candidate free port (e.g. by binding port 0); it is asked again
        if the candidate is already recorded for another address. A ``pinned_port`` that
        differs from the stored one wins, because the user asked for it, and is logged.
        """
        where = (addresses.c.service == service) & (addresses.c.env == env)
        with self._writing() as w:
            existing = w.conn.execute(sa.select(addresses).where(where)).one_or_none()
            if existing is not None and pinned_port in (None, existing.port):
                return rows.address(existing)
            taken = _ports_taken(w.conn, exclude=(service, env))
            if pinned_port is not None:
                _check_pinnable(w.conn, pinned_port, service, env)
                taken.add(pinned_port)
            if existing is not None:
                assert pinned_port is not None
                preview = existing.preview_port
                if preview == pinned_port:
                    preview = _allocate(allocate, taken, service, env)
                w.conn.execute(
                    sa.update(addresses)
                    .where(where)
                    .values(port=pinned_port, preview_port=preview, pinned=True, updated_at=w.now)
                )
                details = {"port": pinned_port, "previous_port": existing.port}
                details["preview_port"] = preview
                w.append(
                    [NewEvent("address.pinned", details, service=service, env=env)],
                    actor="conveyor",
                )
            else:
                port = (
                    pinned_port
                    if pinned_port is not None
                    else _allocate(allocate, taken, service, env)
                )
                taken.add(port)
                preview = _allocate(allocate, taken, service, env)
                w.conn.execute(
                    sa.insert(addresses).values(
                        service=service,
                        env=env,
                        host=LOOPBACK,
                        port=port,
                        preview_port=preview,
                        pinned=pinned_port is not None,
                        created_at=w.now,
                        updated_at=w.now,
                    )
                )
                details = {"host": LOOPBACK, "port": port, "preview_port": preview}
                w.append(
                    [NewEvent("address.allocated", details, service=service, env=env)],
                    actor="conveyor",
                )
            return rows.address(w.conn.execute(sa.select(addresses).where(where)).one())

    def addresses(self) -> list[AddressRecord]:
        with self._reading() as conn:
            query = sa.select(addresses).order_by(addresses.c.service, addresses.c.env)
            return [rows.address(row) for row in conn.execute(query)]


def _ports_taken(conn: sa.Connection, *, exclude: tuple[str, str]) -> set[int]:
    taken: set[int] = set()
    for row in conn.execute(sa.select(addresses)):
        if (row.service, row.env) != exclude:
            taken.update((row.port, row.preview_port))
    return taken


def _check_pinnable(conn: sa.Connection, port: int, service: str, env: str) -> None:
    if not 0 < port < 65536:
        raise Refused(
            f"port {port} pinned for {service}/{env} is not a TCP port",
            hint="pin a port between 1 and 65535 in conveyor.yaml",
        )
    for row in conn.execute(sa.select(addresses)):
        if (row.service, row.env) != (service, env) and port in (row.port, row.preview_port):
            raise Conflict(
                f"port {port} pinned for {service}/{env} is already the address of "
                f"{row.service}/{row.env}",
                hint="pin a different port in conveyor.yaml, or unpin one of them",
            )


def _allocate(allocate: Callable[[], int], taken: set[int], service: str, env: str) -> int:
    for _ in range(_PORT_ATTEMPTS):
        port = allocate()
        if 0 < port < 65536 and port not in taken:
            taken.add(port)
            return port
    raise Conflict(
        f"could not find a free port for {service}/{env} after {_PORT_ATTEMPTS} attempts",
        hint="free some local ports, or pin one for this service in conveyor.yaml",
    )
