"""Shared fixtures: database URLs for the store/controller suites run against both engines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check behaviour, not speed: no per-example deadline (a busy CI machine
# stalls some examples for hundreds of milliseconds, which would read as a failure).
settings.register_profile("conveyor", deadline=None)
settings.load_profile("conveyor")


def _database_params() -> list[object]:
    params: list[object] = [pytest.param("sqlite", id="sqlite")]
    params.append(
        pytest.param(
            "postgres",
            id="postgres",
            marks=pytest.mark.skipif(
                not os.environ.get("CONVEYOR_TEST_DATABASE_URL"),
                reason="set CONVEYOR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test "
                "to run against PostgreSQL",
            ),
        )
    )
    return params


@pytest.fixture(autouse=True, scope="session")
def _keys_outside_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers keep their signing key outside the project tree (``Layout.server_keys``):
    under a temporary directory for the tests, never the user's home."""
    keys = tmp_path_factory.mktemp("server-keys")
    before = os.environ.get("CONVEYOR_KEY_DIR")
    os.environ["CONVEYOR_KEY_DIR"] = str(keys)
    yield
    if before is None:
        os.environ.pop("CONVEYOR_KEY_DIR", None)
    else:
        os.environ["CONVEYOR_KEY_DIR"] = before


@pytest.fixture(params=_database_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    import uuid

    import sqlalchemy as sa

    base = os.environ["CONVEYOR_TEST_DATABASE_URL"]
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base.removeprefix("postgresql://")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()
