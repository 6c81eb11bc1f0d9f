"""The pgshop example on a real stack and a real PostgreSQL: builds of each step, writers.

Each test gets the example copied to a temporary directory (its ``steps/`` applied as the
walkthrough in docs/migrations.md says), a fresh PostgreSQL schema for the service's data,
and the real server stack (store, controller, runtime, router) from ``server/stack.py``.
``Writers`` insert orders in a loop from threads and record how long each insert took: the
measure of whether a migration blocked them.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.application import Caller
from conveyor.config.loader import load_project
from conveyor.server.stack import build_stack
from conveyor.store.records import ReleaseRecord
from tests.controller.harness import Stack, push_build

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pgshop"
ADMIN = Caller("admin@test")

psycopg = pytest.importorskip("psycopg", reason="needs psycopg: pip install 'psycopg[binary]'")
needs_postgres = pytest.mark.skipif(
    not os.environ.get("CONVEYOR_TEST_DATABASE_URL") or shutil.which("psql") is None,
    reason="set CONVEYOR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test and "
    "install the PostgreSQL client (apt-get install postgresql-client) to run these",
)


def base_url() -> str:
    return os.environ["CONVEYOR_TEST_DATABASE_URL"]


@contextmanager
def service_database() -> Iterator[str]:
    """A fresh schema for the service's data; the URL selects it (libpq ``options``)."""
    schema = f"pgshop_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base_url() else "?"
    try:
        yield f"{base_url()}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def project(root: Path, *, horizon: str = "{releases: 1}", lock_timeout: str = "5s") -> Path:
    """The example, ready to build step 1; timings short, promotion rule left out."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    config = root / "conveyor.yaml"
    text = config.read_text()
    text = text.replace("PGSHOP_PYTHON: python3", f"PGSHOP_PYTHON: {sys.executable}")
    text = text.replace("    requires: {environments: [staging]}\n", "")
    text = text.replace("rollback_horizon: {releases: 1}", f"rollback_horizon: {horizon}")
    text = text.replace("lock_timeout: 2s", f"lock_timeout: {lock_timeout}")
    text = text.replace("project: pgshop\n", "project: pgshop\nrollback: {verification: 0.3s}\n")
    config.write_text(text)
    return config


def step(root: Path, name: str) -> None:
    """Apply ``steps/NAME`` to the service, as the walkthrough's ``cp -r`` does."""
    shutil.copytree(root / "steps" / name, root / "services" / "orders", dirs_exist_ok=True)


@dataclass
class Shop:
    stack: Stack
    database: str

    async def build(self) -> str:
        return await push_build(self.stack.app, self.stack.root, self.stack.project, "orders")

    async def deploy(self, env: str, artifact: str) -> ReleaseRecord:
        return await self.stack.app.deploy(Caller("test"), "orders", env, artifact)

    async def release(self, env: str, artifact: str, timeout: float = 60) -> ReleaseRecord:
        return await self.stack.wait(await self.deploy(env, artifact), timeout)

    def instances(self, env: str) -> list[Any]:
        return self.stack.controller.observe("orders", env)

    def step(self, name: str) -> None:
        step(self.stack.root, name)

    def events(self, release: ReleaseRecord, kind: str) -> list[Any]:
        return [e for e in self.stack.store.events(release_id=release.id) if e.kind == kind]

    def columns(self) -> set[str]:
        with psycopg.connect(self.database, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'orders' AND table_schema = current_schema()"
            ).fetchall()
        return {r[0] for r in rows}


@asynccontextmanager
async def shop(tmp: Path, monkeypatch: pytest.MonkeyPatch, **options: str) -> AsyncIterator[Shop]:
    root = tmp / "pgshop"
    config = project(root, **options)
    with service_database() as database:
        monkeypatch.setenv("PGSHOP_DATABASE_URL", database)
        parts = build_stack(config, database_url=f"sqlite:///{root / 'state.db'}", tick=0.05)
        await parts.start()
        try:
            yield Shop(Stack(root, load_project(config), parts), database)
        finally:
            await parts.close(stop_instances=True)


@dataclass
class Writers:
    """Threads inserting orders as fast as they can, each insert timed."""

    database: str
    threads: int = 4
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Writers:
        for n in range(self.threads):
            worker = threading.Thread(target=self._write, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        time.sleep(0.3)  # writing before the migration starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)

    def _write(self, n: int) -> None:
        with psycopg.connect(self.database, autocommit=True) as conn:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    conn.execute(
                        "INSERT INTO orders (item, customer) VALUES (%s, %s)",
                        (f"item-{n}", f"writer{n}@example.com"),
                    )
                except psycopg.Error as exc:
                    self.errors.append(str(exc).splitlines()[0])
                    continue
                self.latencies.append((started, time.monotonic() - started))

    def worst(self, since: float = 0.0) -> float:
        return max((s for t, s in self.latencies if t >= since), default=0.0)
