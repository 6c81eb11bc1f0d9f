"""Opening databases: URLs, SQLite settings, migrations and the errors users can cause."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conveyor.errors import StoreError
from conveyor.store import Store, default_url, normalize_url
from conveyor.store.engine import (
    create_engine,
    current_revision,
    head_revision,
    write_transaction,
)
from conveyor.store.tables import metadata


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u@h/db?options=x", "postgresql+psycopg://u@h/db?options=x"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


def test_default_url_is_a_sqlite_file_under_dot_conveyor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVEYOR_DATABASE_URL", raising=False)
    url = default_url(tmp_path)
    assert url == f"sqlite:///{tmp_path.resolve()}/.conveyor/state.db"
    assert (tmp_path / ".conveyor").is_dir()


def test_default_url_is_overridden_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://x@127.0.0.1/y")
    assert default_url(tmp_path) == "postgresql://x@127.0.0.1/y"
    assert not (tmp_path / ".conveyor").exists()


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    Store.open(url).close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            pragma = conn.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()


def test_sqlite_write_transactions_take_the_lock_up_front(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store.open(f"sqlite:///{path}").close()
    engine = create_engine(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        with write_transaction(engine):
            # Nothing written yet, but BEGIN IMMEDIATE already holds the write lock ...
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            # ... while readers carry on (WAL).
            assert other.execute("SELECT seq FROM ledger_head").fetchone() == (0,)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()


def test_open_migrates_to_head_and_is_idempotent(database_url: str) -> None:
    first = Store.open(database_url)
    second = Store.open(database_url)
    second.close()
    first.close()
    engine = create_engine(database_url)
    try:
        assert current_revision(engine) == head_revision() == "0009"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM ledger_head")).scalar() == 1
    finally:
        engine.dispose()


def test_migrations_match_the_tables_the_code_queries(database_url: str) -> None:
    Store.open(database_url).close()
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_a_database_from_a_newer_conveyor_is_refused(database_url: str) -> None:
    Store.open(database_url).close()
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError) as info:
        Store.open(database_url)
    assert "ffff9999" in info.value.message
    assert "upgrade Conveyor" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://u@127.0.0.1/db", "'mysql' is not supported"),
        ("sqlite:////nonexistent-dir/deeper/state.db", "cannot open the state database"),
        ("postgresql://u:secret@127.0.0.1:1/db", "cannot open the state database"),
    ],
)
def test_unusable_urls_are_store_errors_with_hints(url: str, fragment: str) -> None:
    with pytest.raises(StoreError) as info:
        Store.open(url)
    assert fragment in info.value.message
    assert "secret" not in info.value.message
    assert info.value.hint
