"""``migrate:`` as a release step, on a real PostgreSQL under concurrent writes.

The expand of the pgshop example runs while four threads insert orders as fast as they can:
it must not block them past its lock timeout. A migration queued behind a transaction that
holds the table must give up after ``lock_timeout`` (not make every writer queue behind it),
and the release must stop there: no new instance, no traffic moved, the old version serving.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from tests.controller.harness import run

from .support import Writers, needs_postgres, psycopg, shop

pytestmark = [pytest.mark.integration, pytest.mark.postgres, needs_postgres]

LOCK_TIMEOUT = 1.0
# The safe expand waits for writers' row locks to clear; on a machine busy with other test
# suites their transactions run slower, so it gets more room than the lock-timeout case needs.
LOAD_LOCK_TIMEOUT = 3.0


def test_the_safe_expand_runs_under_load_without_blocking_writers_past_the_lock_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with shop(tmp_path, monkeypatch, lock_timeout=f"{LOAD_LOCK_TIMEOUT}s") as s:
            r1 = await s.release("staging", await s.build())
            assert r1.phase == "succeeded", r1.status
            s.step("2-expand")
            v2 = await s.build()
            with Writers(s.database) as writers:
                began = time.monotonic()
                r2 = await s.release("staging", v2)
                await asyncio.sleep(0.2)
            assert r2.phase == "succeeded", r2.status
            assert writers.errors == []
            assert len([t for t, _ in writers.latencies if t >= began]) > 100  # load flowed
            assert writers.worst(began) < LOAD_LOCK_TIMEOUT, writers.worst(began)
            assert "customer_email" in s.columns()
            [done] = s.events(r2, "migration.succeeded")
            assert done.details["exit_code"] == 0
            assert "applying 0002_expand_customer_email" in done.details["output"]
            assert done.details["seconds"] > 0
            assert "0002_expand_customer_email" in done.details["migrations"]
            [started] = s.events(r2, "migration.started")
            assert started.details["lock_timeout"] == LOAD_LOCK_TIMEOUT
            kinds = [e.kind for e in s.stack.store.events(release_id=r2.id)]
            assert kinds.index("migration.succeeded") < kinds.index("instances.started")

    run(scenario())


def test_a_migration_waiting_on_a_lock_fails_fast_and_the_release_stops_before_traffic_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with shop(tmp_path, monkeypatch, lock_timeout=f"{LOCK_TIMEOUT}s") as s:
            r1 = await s.release("staging", await s.build())
            s.step("2-expand")
            v2 = await s.build()
            release_lock = threading.Event()
            holding = threading.Event()

            def long_transaction() -> None:  # e.g. a report reading the table for minutes
                with psycopg.connect(s.database) as conn:
                    conn.execute("SELECT count(*) FROM orders")  # ACCESS SHARE until commit
                    holding.set()
                    release_lock.wait(30)

            holder = threading.Thread(target=long_transaction, daemon=True)
            holder.start()
            assert holding.wait(10)
            try:
                with Writers(s.database) as writers:
                    began = time.monotonic()
                    r2 = await s.release("staging", v2)
                    took = time.monotonic() - began
            finally:
                release_lock.set()
                holder.join(10)
            assert r2.phase == "failed", r2.status
            assert r2.status.abort is not None and r2.status.abort.reason == "migration-failed"
            [failed] = s.events(r2, "migration.failed")
            assert "lock timeout" in failed.details["output"]
            assert failed.details["exit_code"] != 0
            # It gave up after the lock timeout, not after the transaction ended.
            assert LOCK_TIMEOUT <= failed.details["seconds"] < LOCK_TIMEOUT + 3
            assert writers.errors == []
            # Writers queued behind the waiting ALTER for at most the lock timeout.
            assert writers.worst(began) < LOCK_TIMEOUT + 0.5, writers.worst(began)
            kinds = [e.kind for e in s.stack.store.events(release_id=r2.id)]
            assert "instances.started" not in kinds and "traffic.switched" not in kinds
            assert kinds[-1] == "release.failed"
            assert {i.version for i in s.instances("staging")} == {r1.template}
            assert s.stack.store.current_release("orders", "staging").id == r1.id
            assert "customer_email" not in s.columns()
            print(
                f"\nlock-timeout case: lock_timeout {LOCK_TIMEOUT}s; migration gave up after "
                f"{failed.details['seconds']:.2f}s; release failed {took:.2f}s after the deploy; "
                f"worst writer wait {writers.worst(began):.2f}s"
            )

    run(scenario())
