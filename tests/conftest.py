"""Shared fixtures: database URLs for the store/controller suites run against both engines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Property tests check behaviour, not speed: no per-example deadline (a busy CI machine
# stalls some examples for hundreds of milliseconds, which would read as a failure).
settings.register_profile("conveyor", deadline=None)
settings.load_profile("conveyor")


# Tests of pure decisions and config must never be flaky: they are not run again.
PURE = ("core", "core_analysis", "config")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test of real processes, sockets and clocks that fails runs once more.

    A second failure fails the suite as before; a pass on the second try is reported as a
    rerun (``R``, and "N rerun" in the summary), and is a bug in that test to fix, not to
    ignore: on a busy two-core CI machine a timing assumption can still break once in
    several thousand tests, and one such stumble must not hide everything else the run
    proved. CPython's test runner does the same (``--rerun``).
    """
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    root = Path(__file__).parent
    for item in items:
        top = item.path.relative_to(root).parts[0] if item.path.is_relative_to(root) else ""
        if top not in PURE and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=1))


_RERUNS: list[pytest.TestReport] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.outcome == "rerun":  # an outcome pytest-rerunfailures adds
        _RERUNS.append(report)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say why each rerun test failed the first time, so the stumble can be fixed."""
    if not _RERUNS:
        return
    terminalreporter.section("why tests were run again")
    for report in _RERUNS:
        lines = str(report.longrepr).strip().splitlines()
        errors = [line for line in lines if line.startswith("E ")][:3] or lines[-1:]
        terminalreporter.write_line(f"{report.nodeid} ({report.when}):")
        for line in errors:
            terminalreporter.write_line(f"    {line[:300]}")


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
