"""The router process with worker processes (``--workers N``): one port, N processes.

Real processes and sockets: the router process is started by ``RouterProcess(workers=2)``
as a server starts it, its worker is ``python -m conveyor.traffic.builtin.worker``, the
backends run on the test's loop, and every request opens a fresh connection so that the
kernel's ``SO_REUSEPORT`` hash spreads them over both processes.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conveyor.core.model import Backend
from conveyor.errors import Conflict
from conveyor.layout import Layout
from conveyor.server.stack import router_registry
from conveyor.traffic.builtin import BuiltinRouter, RouterProcess
from conveyor.traffic.builtin.client import Connection, stop_router
from conveyor.traffic.builtin.files import RouterPaths, read_secret

from ._support import ENV, SERVICE, TestBackend, get, run, table, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_router_left(tmp_path: Path) -> Iterator[None]:
    yield
    stop_router(tmp_path, timeout=5)


def _control(tmp_path: Path) -> Connection:
    paths = RouterPaths.of(tmp_path)
    return Connection(paths, read_secret(paths, create=False), timeout=5)


def _call(tmp_path: Path, op: str, **fields: Any) -> dict[str, Any]:
    conn = _control(tmp_path)
    try:
        answer = conn.call({"op": op, **fields})
    finally:
        conn.close()
    assert answer["ok"], answer
    return answer


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts: it serves nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def _fresh(port: int, n: int) -> dict[str, int]:
    """``n`` requests, each on a new connection; the versions that answered."""
    seen: dict[str, int] = {}
    for _ in range(n):
        answer = await get(port)
        assert answer.status == 200, answer
        version = answer.headers[b"x-version"].decode()
        seen[version] = seen.get(version, 0) + 1
    return seen


def test_two_processes_share_the_port_and_their_counters_add_up(tmp_path: Path) -> None:
    async def main() -> None:
        v1, v2 = await TestBackend("v1").start(), await TestBackend("v2").start()
        router = RouterProcess(tmp_path, workers=2)
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = router.bound_port(SERVICE, ENV)
        router.apply(SERVICE, ENV, table(("v1", 100, [v1])))
        ping = _call(tmp_path, "ping")
        assert ping["workers"] == 2 and len(ping["worker_pids"]) == 2
        assert ping["worker_pids"][0] == router.pid

        assert await _fresh(port, 200) == {"v1": 200}
        assert router.counters(SERVICE, ENV)["v1"].requests == 200
        served = [p["requests"] for p in _call(tmp_path, "workers")["workers"]]
        assert sum(served) == 200 and min(served) > 0, served  # both processes served
        metrics = router.prometheus_text()
        assert (
            f'conveyor_router_requests_total{{service="{SERVICE}",env="{ENV}",version="v1"}} 200'
            in metrics
        )
        assert len(router.latency_samples(SERVICE, ENV, "v1")) == 200

        # A table reaches every process: each new connection, whoever accepts it, sees v2.
        router.apply(SERVICE, ENV, table(("v2", 100, [v2])))
        assert await _fresh(port, 60) == {"v2": 60}
        assert router.in_flight(SERVICE, ENV, f"v1-{v1.port}") == 0

        # A preview listener (blue-green) is opened in every process too.
        await router.serve(SERVICE, ENV, "127.0.0.1", port, 0)
        preview = router.bound_port(SERVICE, ENV, preview=True)
        checks = (Backend(f"v3-{v1.port}", "127.0.0.1", v1.port),)
        router.apply(SERVICE, ENV, replace(table(("v2", 100, [v2])), preview=checks))
        before = [p["requests"] for p in _call(tmp_path, "workers")["workers"]]
        assert await _fresh(preview, 60) == {"v1": 60}  # the backend answers as v1
        after = [p["requests"] for p in _call(tmp_path, "workers")["workers"]]
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
        assert router.counters(SERVICE, ENV)["preview"].requests == 60

        workers = ping["worker_pids"]
        await router.close()  # `conveyor down`: the workers stop with the router process
        await wait_until(lambda: all(_gone(pid) for pid in workers), timeout=10)

    run(main, timeout=60)


def test_a_killed_worker_is_started_again_and_counters_do_not_go_backwards(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        v1 = await TestBackend("v1").start()
        router = RouterProcess(tmp_path, workers=2)
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = router.bound_port(SERVICE, ENV)
        router.apply(SERVICE, ENV, table(("v1", 100, [v1])))
        await _fresh(port, 100)
        before = router.counters(SERVICE, ENV)["v1"].requests  # the worker's last read
        assert before == 100
        old = _call(tmp_path, "ping")["worker_pids"][1]
        os.kill(old, signal.SIGKILL)

        def replaced() -> bool:
            pid = _call(tmp_path, "ping")["worker_pids"][1]
            return pid is not None and pid != old

        await wait_until(replaced, timeout=15)
        assert router.counters(SERVICE, ENV)["v1"].requests == before  # its share is kept
        assert await _fresh(port, 100) == {"v1": 100}
        assert router.counters(SERVICE, ENV)["v1"].requests == before + 100
        worker = _call(tmp_path, "workers")["workers"][1]
        assert worker["restarts"] == 1 and worker["pid"] != old
        assert worker["requests"] > 0  # the new worker was replayed the route and serves it
        await router.close()

    run(main, timeout=60)


def test_a_worker_exits_when_the_router_process_is_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        v1 = await TestBackend("v1").start()
        router = RouterProcess(tmp_path, workers=2)
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = router.bound_port(SERVICE, ENV)
        router.apply(SERVICE, ENV, table(("v1", 100, [v1])))
        await _fresh(port, 10)
        await router.detach()

        # A server whose config asks for another count adopts the router as it is, and says so.
        with caplog.at_level(logging.WARNING, logger="conveyor.router.client"):
            other = RouterProcess(tmp_path, workers=1)
            await other.serve(SERVICE, ENV, "127.0.0.1", port, None)
        assert other.adopted
        assert "conveyor down && conveyor up" in caplog.text
        await other.detach()  # no supervisor left to start the router again

        daemon, worker = _call(tmp_path, "ping")["worker_pids"]
        os.kill(daemon, signal.SIGKILL)
        await wait_until(lambda: _gone(worker), timeout=5)
        with pytest.raises(OSError):  # no orphan serving stale routes
            await get(port)

    run(main, timeout=60)


def test_a_killed_router_process_comes_back_with_its_workers(tmp_path: Path) -> None:
    """The server's supervision restarts the router process: its old worker has left the
    port, the new one takes it (the exclusivity check does not see the old one's)."""

    async def main() -> None:
        v1 = await TestBackend("v1").start()
        router = RouterProcess(tmp_path, workers=2, supervise_every=0.05)
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = router.bound_port(SERVICE, ENV)
        router.apply(SERVICE, ENV, table(("v1", 100, [v1])))
        await _fresh(port, 20)
        assert router.counters(SERVICE, ENV)["v1"].requests == 20  # what the client banks
        old_daemon, old_worker = _call(tmp_path, "ping")["worker_pids"]
        os.kill(old_daemon, signal.SIGKILL)
        await wait_until(lambda: router.pid not in (None, old_daemon), timeout=20)
        await wait_until(lambda: _gone(old_worker), timeout=5)
        await wait_until(lambda: all(_call(tmp_path, "ping")["worker_pids"]), timeout=10)
        assert await _fresh(port, 100) == {"v1": 100}
        served = [p["requests"] for p in _call(tmp_path, "workers")["workers"]]
        assert sum(served) == 100 and min(served) > 0, served
        assert router.counters(SERVICE, ENV)["v1"].requests == 120  # banked by the client
        await router.close()

    run(main, timeout=60)


def test_a_port_is_not_shared_with_another_router(tmp_path: Path) -> None:
    async def main() -> None:
        # Without reuse_port (the default) a second router cannot take a port in use.
        first = BuiltinRouter()
        await first.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = first.bound_port(SERVICE, ENV)
        second = BuiltinRouter()
        with pytest.raises(Conflict, match="cannot open the listener"):
            await second.serve("other", ENV, "127.0.0.1", port, None)
        await first.close()
        await second.close()

        # Another project's router with workers holds a port (reuse_port on): a router
        # process with workers does not join it, though the kernel would let it.
        foreign = BuiltinRouter(reuse_port=True)
        await foreign.serve("theirs", ENV, "127.0.0.1", 0, None)
        taken = foreign.bound_port("theirs", ENV)
        router = RouterProcess(tmp_path, workers=2)
        with pytest.raises(Conflict, match=f"cannot open the listener of {SERVICE}/{ENV}"):
            await router.serve(SERVICE, ENV, "127.0.0.1", taken, None)
        await foreign.close()
        await router.close()

    run(main, timeout=60)


def test_the_configured_count_reaches_the_router_process(tmp_path: Path) -> None:
    """``server: router_workers`` is read by the stack's router registry when the built-in
    router is first needed, and becomes the router process's ``--workers``."""
    layout = Layout(tmp_path).ensure()
    router = router_registry(layout, lambda: 3)["builtin"]()

    async def main() -> None:
        try:
            await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
            ping = _call(layout.routers, "ping")
            assert ping["workers"] == 3 and all(ping["worker_pids"])
        finally:
            await router.close()

    run(main, timeout=60)
