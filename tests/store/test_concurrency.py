"""Many writers, one chain: threads and processes appending at once never fork the ledger."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from conveyor.core.state import Phase, RolloutStatus
from conveyor.errors import Conflict
from conveyor.store import NewEvent, Store

from .helpers import artifact, new_release

APPENDER = """
import sys
from conveyor.store import NewEvent, Store

url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Store.open(url) as store:
    for i in range(count):
        store.append_events([NewEvent("tick", {"who": name, "i": i})], actor=name)
"""


def run_threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(n: int) -> None:
        try:
            barrier.wait()
            target(n)
        except BaseException as exc:  # surfaced below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def assert_one_gapless_chain(store: Store, expected: int) -> None:
    events = store.events(limit=expected + 10)
    assert [e.seq for e in events] == list(range(1, expected + 1))
    check = store.verify_ledger()
    assert check.ok, check
    assert check.checked == expected


@pytest.mark.integration
def test_threads_appending_through_one_and_many_stores(database_url: str) -> None:
    shared = Store.open(database_url)
    own = [Store.open(database_url) for _ in range(2)]
    stores = [shared, shared, *own]
    try:

        def append(n: int) -> None:
            for i in range(25):
                stores[n].append_events(
                    [NewEvent("tick", {"thread": n, "i": i}), NewEvent("tock", {"thread": n})],
                    actor=f"t{n}",
                )

        run_threads(len(stores), append)
        assert_one_gapless_chain(shared, 4 * 25 * 2)
        # Each thread's own events kept their order.
        ticks = [e for e in shared.events(limit=1000) if e.kind == "tick"]
        for n in range(4):
            assert [e.details["i"] for e in ticks if e.actor == f"t{n}"] == list(range(25))
    finally:
        for store in {id(s): s for s in stores}.values():
            store.close()


@pytest.mark.integration
def test_racing_controllers_each_update_applies_exactly_once(database_url: str) -> None:
    with Store.open(database_url) as store:
        digest = store.record_artifact(artifact("race"), actor="b").digest
        release = store.create_release(new_release(digest), actor="a")
        applied = [0, 0, 0]

        def controller(n: int) -> None:
            while applied[n] < 10:
                current = store.get_release(release.id)
                try:
                    store.update_release(
                        release.id,
                        status=RolloutStatus(
                            phase=Phase.PROGRESSING, step_index=applied[n], message=f"c{n}"
                        ),
                        expected_version=current.status_version,
                        actor=f"c{n}",
                        events=[NewEvent("step.started", {"by": n})],
                    )
                except Conflict:
                    continue
                applied[n] += 1

        run_threads(3, controller)
        final = store.get_release(release.id)
        assert final.status_version == 1 + 30
        assert final.status.phase == Phase.PROGRESSING and final.status.step_index == 9
        assert not final.done
        steps = [e for e in store.events(release_id=release.id) if e.kind == "step.started"]
        assert len(steps) == 30
        assert_one_gapless_chain(store, 2 + 30)


@pytest.mark.integration
def test_two_processes_open_and_append_at_once(database_url: str) -> None:
    """Both start on an empty database, so they also race to migrate it."""
    count = 60
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, database_url, f"p{n}", str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with Store.open(database_url) as store:
        assert_one_gapless_chain(store, 2 * count)
        for n in range(2):
            mine = [e.details["i"] for e in store.events(limit=1000) if e.actor == f"p{n}"]
            assert mine == list(range(count))


FROZEN_WRITER = """
import os, signal, sys
import sqlalchemy as sa
from conveyor.store import Store
from conveyor.store.tables import ledger_head

with Store.open(sys.argv[1]) as store:
    with store._writing() as w:  # what every ledger append does first: lock the head
        print("holding the ledger lock", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)  # a server frozen mid-write
        w.conn.execute(sa.select(ledger_head.c.seq))
"""


@pytest.mark.integration
def test_a_writer_frozen_mid_transaction_does_not_hold_the_ledger(database_url: str) -> None:
    """A server paused inside a write (SIGSTOP here; a frozen VM or a long GC in life) would
    hold the ledger's lock, and with it every other server's writes and lease takeovers, for
    as long as it sleeps. PostgreSQL ends its session after a few idle seconds; the others
    write on, and the sleeper's transaction fails when it wakes."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer per file; the lock is PostgreSQL's row lock")
    with Store.open(database_url) as store:
        store.append_events([NewEvent("before")], actor="test")
        frozen = subprocess.Popen(
            [sys.executable, "-c", FROZEN_WRITER, database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert frozen.stdout is not None
            assert frozen.stdout.readline().strip() == "holding the ledger lock"
            written = store.append_events([NewEvent("after")], actor="test")  # not blocked for good
            assert [e.kind for e in written] == ["after"]
        finally:
            frozen.send_signal(signal.SIGCONT)
            _out, err = frozen.communicate(timeout=60)
        assert frozen.returncode != 0 and "StoreError" in err, err
        assert_one_gapless_chain(store, 2)
