"""Opening the state database: URLs, engine settings per backend, and migrating to head.

The store is written to from one server thread and from short-lived CLI processes at the same
time, so the engine is configured for safe concurrent writers rather than raw speed:

* SQLite runs in WAL mode (readers never block the writer), with a generous busy timeout and
  foreign keys on. pysqlite's own transaction handling is switched off and Conveyor emits
  ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for write transactions, so the write lock is taken up
  front and two writers queue instead of both reading the ledger head and forking the chain
  (a deferred transaction would only discover the conflict at its first write, as an error).
* PostgreSQL goes through psycopg 3; ``postgresql://`` URLs are rewritten to name the driver.
  Writers serialise on a row lock of ``ledger_head`` taken by the repository. A session that
  sits idle inside a transaction for ``PG_IDLE_IN_TRANSACTION_MS`` is ended by the database:
  a server paused mid-write (SIGSTOP, a frozen VM, a long GC) would otherwise hold that lock,
  and with it every other server's writes and lease takeovers, for as long as it sleeps.
  Conveyor's transactions never wait on anything but the database, so only a stalled
  process trips it; when it wakes, its write fails and fencing refuses what it retries.

Migrations run programmatically (no ``alembic.ini`` for users) inside one write transaction
that also holds a lock, so two processes opening a fresh database at once cannot both try to
create the tables.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from conveyor.errors import StoreError
from conveyor.layout import Layout

ENV_VAR = "CONVEYOR_DATABASE_URL"
MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_IDLE_IN_TRANSACTION_MS = 3_000
# Arbitrary constant ("conv"): the advisory lock held while migrating a PostgreSQL database.
_PG_MIGRATION_LOCK = 0x636F6E76
# Execution option marking a connection whose transactions will write.
WRITE_OPTION = "conveyor_write"


def default_url(project_root: Path) -> str:
    """The database a project uses: ``$CONVEYOR_DATABASE_URL``, else a SQLite file in it."""
    override = os.environ.get(ENV_VAR, "").strip()
    if override:
        return override
    layout = Layout(project_root).ensure()
    return f"sqlite:///{layout.database.resolve()}"


def normalize_url(url: str) -> str:
    """Name the psycopg 3 driver for bare PostgreSQL URLs; leave every other URL alone."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def redact(url: str) -> str:
    """A URL safe to print in an error message."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"


def create_engine(url: str) -> sa.Engine:
    """An engine configured for Conveyor's concurrency model; does not connect yet."""
    url = normalize_url(url)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(
            f"'{url}' is not a database URL",
            hint=f"set {ENV_VAR} to e.g. postgresql://user@host:5432/db or sqlite:///path/state.db",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        try:
            engine = sa.create_engine(parsed, pool_pre_ping=True)
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL driver for {redact(url)} is not installed",
                hint="pip install 'conveyor[postgres]' (psycopg 3)",
            ) from exc
        sa.event.listen(engine, "connect", _on_pg_connect)
        return engine
    raise StoreError(
        f"database backend '{backend}' is not supported",
        hint=f"use a sqlite:/// or postgresql:// URL in {ENV_VAR}",
    )


def _on_pg_connect(dbapi_connection: Any, _record: Any) -> None:
    # A SET rather than a startup option, which connection poolers such as PgBouncer refuse.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET idle_in_transaction_session_timeout = {PG_IDLE_IN_TRANSACTION_MS}")
    dbapi_connection.commit()


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level: transactions are begun explicitly in _on_begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        writes = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that will write: on SQLite it starts with the database write lock held."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn


def _alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def head_revision() -> str | None:
    """The newest migration this version of Conveyor knows."""
    return _scripts().get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    """The migration the database was last upgraded to (None for an empty database)."""
    with engine.connect() as conn, conn.begin():
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: sa.Engine) -> None:
    """Upgrade the schema to head, once, even if several processes open it at the same time."""
    head = head_revision()
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return
        if current is not None and _unknown(current):
            raise StoreError(
                f"the state database is at schema revision {current}, "
                "which this version of Conveyor does not know",
                hint="upgrade Conveyor to the version that last wrote this database",
            )
        command.upgrade(_alembic_config(conn), "head")


def _unknown(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is None
    except (RevisionError, CommandError):
        return True
