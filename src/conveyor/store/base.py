"""The ``Store``'s base: the connection, and the one short transaction each read or write runs in.

The operations build on ``StoreBase``, one module per topic (``artifacts_repo.py``,
``addresses_repo.py``, ``releases_repo.py``, ``tokens_repo.py``, ``keys_repo.py``,
``ledger_repo.py``), and ``repository.py`` assembles them into ``Store``.

Design choices that matter to callers:

* Every write transaction first locks the ledger head, so writes are totally ordered and the
  events a write appends land in the *same* transaction as the state change they describe.
  A release's status can therefore never move without its ledger entry, and a controller
  killed mid-write leaves neither.
* Release updates are optimistic: the caller names the ``status_version`` it decided from,
  and a stale decision is refused with ``Conflict`` instead of overwriting a newer one.
* Addresses are allocated once per (service, env) and kept forever, so clients and other
  services can rely on a port across any number of releases and rollbacks.
* The store is synchronous and thread-safe (the engine pools connections; ``Store`` holds no
  other mutable state but its list of append observers), so one instance can serve the
  server's threads and CLI processes can open their own against the same database.
* Whoever must react to what lands on the ledger (the server signing checkpoints after a
  security-relevant event) registers with ``on_append`` and is told after the commit, in
  the writer's thread: an observer never delays or undoes a write.
* The store verifies the chain but holds no key: checkpoint envelopes are opened by an
  ``Opener`` the caller passes, so where the key lives is not the store's business.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Self

import sqlalchemy as sa

from conveyor.errors import StoreError
from conveyor.store import rows
from conveyor.store.engine import create_engine, migrate, redact, write_transaction
from conveyor.store.records import EventRecord
from conveyor.store.tables import ledger_head

AppendObserver = Callable[[Sequence[EventRecord]], None]


class StoreBase:
    """The connection, its transactions and the append observers; the topics build on it."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        self._observers: list[AppendObserver] = []

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], float] = time.time) -> Self:
        """Connect and migrate to the newest schema (a no-op when already there)."""
        engine = create_engine(url)
        try:
            migrate(engine)
        except StoreError:
            engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(
                f"cannot open the state database {redact(url)}: {_reason(exc)}",
                hint="check CONVEYOR_DATABASE_URL and that the database server is reachable",
            ) from exc
        return cls(engine, clock=clock)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _reading(self, *, snapshot: bool = False) -> Iterator[sa.Connection]:
        with _translated(), self._engine.connect() as conn:
            if snapshot and conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def _writing(self) -> Iterator[rows.Writer]:
        with _translated(), write_transaction(self._engine) as conn:
            head = conn.execute(
                sa.select(ledger_head.c.seq, ledger_head.c.hash)
                .where(ledger_head.c.id == 1)
                .with_for_update()
            ).one()
            writer = rows.Writer(conn, self._clock(), head.seq, head.hash)
            yield writer
            writer.finish()
        if writer.written:  # committed: tell whoever watches the ledger
            for observer in list(self._observers):
                observer(writer.written)

    @contextmanager
    def _writing_unlogged(self) -> Iterator[sa.Connection]:
        """A write that appends nothing to the ledger, so it does not take the head's lock."""
        with _translated(), write_transaction(self._engine) as conn:
            yield conn


@contextmanager
def _translated() -> Iterator[None]:
    """Turn a database outage into a StoreError the CLI can print; bugs still raise."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        # An outage, or a session the server ended (e.g. after idling in a transaction while
        # this process was paused: store/engine.py); any other database error is a bug.
        if not isinstance(exc, sa.exc.OperationalError) and not exc.connection_invalidated:
            raise
        raise StoreError(
            f"the state database failed: {_reason(exc)}",
            hint="check that the database is reachable (CONVEYOR_DATABASE_URL) and retry",
        ) from exc


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__
