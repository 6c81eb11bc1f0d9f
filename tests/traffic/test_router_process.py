"""The router as its own process: adopted not restarted, authenticated, remembers its routes.

Real processes and sockets: the router is ``python -m conveyor.traffic.builtin.daemon``,
driven by ``RouterProcess`` the way ``conveyor server`` drives it, in front of backends on
the test's loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conveyor.errors import Fenced, Unavailable
from conveyor.traffic.base import TrafficRouter
from conveyor.traffic.builtin import RouterProcess, control
from conveyor.traffic.builtin.client import Connection, stop_router
from conveyor.traffic.builtin.files import RouterPaths, lock_held, read_secret

from ._support import ENV, SERVICE, TestBackend, get, run, table, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_router_left(tmp_path: Path) -> Iterator[None]:
    """A failing test must not leave its router process serving (it outlives us on purpose)."""
    yield
    stop_router(tmp_path, timeout=5)


async def _versions(port: int, n: int = 20) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(n):
        answer = await get(port)
        assert answer.status == 200, answer
        version = answer.headers[b"x-version"].decode()
        seen[version] = seen.get(version, 0) + 1
    return seen


def test_a_stale_leaders_table_is_refused_by_the_router_process(tmp_path: Path) -> None:
    """Fencing across the process boundary: a server that lost the lease (an older epoch)
    cannot move traffic, even through a control connection of its own."""

    async def main() -> None:
        v1, v2 = await TestBackend("v1").start(), await TestBackend("v2").start()
        leader = RouterProcess(tmp_path)
        await leader.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = leader.bound_port(SERVICE, ENV)
        leader.apply(SERVICE, ENV, replace(table(("v1", 100, [v1])), epoch=3))
        stale = RouterProcess(tmp_path)
        await stale.serve(SERVICE, ENV, "127.0.0.1", port, None)
        with pytest.raises(Fenced, match=r"epoch 2.*epoch 3"):
            stale.apply(SERVICE, ENV, replace(table(("v2", 100, [v2])), epoch=2))
        assert await _versions(port) == {"v1": 20}  # the leader's table still routes
        leader.apply(SERVICE, ENV, replace(table(("v2", 100, [v2])), epoch=4))
        assert await _versions(port) == {"v2": 20}
        await stale.detach()
        await leader.close()

    run(main, timeout=60)


def test_the_router_outlives_its_client_and_is_adopted_as_is(tmp_path: Path) -> None:
    async def main() -> None:
        v1, v2 = await TestBackend("v1").start(), await TestBackend("v2").start()
        first = RouterProcess(tmp_path)
        checked: TrafficRouter = first  # mypy: the client is a TrafficRouter
        await checked.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        assert not first.adopted
        pid, port = first.pid, first.bound_port(SERVICE, ENV)
        assert pid is not None and pid != os.getpid()
        first.apply(SERVICE, ENV, table(("v1", 100, [v1])))
        assert await _versions(port) == {"v1": 20}
        await first.detach()  # a server stopping: the router keeps serving
        assert await _versions(port) == {"v1": 20}

        second = RouterProcess(tmp_path)
        await second.serve(SERVICE, ENV, "127.0.0.1", port, None)
        assert second.adopted and second.pid == pid  # the same process, not restarted
        # Counters are the router's, across servers: 40 requests so far.
        assert second.counters(SERVICE, ENV)["v1"].requests == 40
        second.apply(SERVICE, ENV, table(("v2", 100, [v2])))
        assert await _versions(port) == {"v2": 20}
        assert second.in_flight(SERVICE, ENV, f"v2-{v2.port}") == 0
        assert "conveyor_router_requests_total" in second.prometheus_text()
        await second.close()
        assert not lock_held(RouterPaths.of(tmp_path).lock)
        with pytest.raises(OSError):
            await get(port)

    run(main, timeout=60)


def test_a_killed_router_is_restarted_with_its_routes_and_counters_stay_cumulative(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        v1 = await TestBackend("v1").start()
        router = RouterProcess(tmp_path, supervise_every=0.05)
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = router.bound_port(SERVICE, ENV)
        router.apply(SERVICE, ENV, table(("v1", 100, [v1])))
        await _versions(port, 10)
        before = router.counters(SERVICE, ENV)["v1"].requests
        old = router.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await wait_until(lambda: router.pid not in (None, old), timeout=20)
        await wait_until(lambda: _answers(port), timeout=10)
        assert await _versions(port, 5) == {"v1": 5}
        assert router.counters(SERVICE, ENV)["v1"].requests >= before + 5
        await router.close()

    run(main, timeout=60)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_a_router_started_alone_serves_the_last_routes_it_was_given(tmp_path: Path) -> None:
    async def main() -> None:
        v1 = await TestBackend("v1").start()
        router = RouterProcess(tmp_path)
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = router.bound_port(SERVICE, ENV)
        router.apply(SERVICE, ENV, table(("v1", 100, [v1])))
        pid = router.pid
        assert pid is not None
        await router.detach()
        os.kill(pid, signal.SIGKILL)  # a crash, or the host's controller side restarting
        await wait_until(lambda: not lock_held(RouterPaths.of(tmp_path).lock), timeout=10)
        paths = RouterPaths.of(tmp_path)
        assert stat.S_IMODE(paths.routes.stat().st_mode) == 0o600
        assert stat.S_IMODE(paths.secret.stat().st_mode) == 0o600
        # No server at all: the router alone, as after a host reboot of the controller.
        daemon = subprocess.Popen(
            [sys.executable, "-m", "conveyor.traffic.builtin.daemon", "--state", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_until(lambda: _answers(port), timeout=15)
            assert await _versions(port, 5) == {"v1": 5}
            assert stat.S_IMODE(paths.socket.stat().st_mode) == 0o600
            second = subprocess.run(
                [sys.executable, "-m", "conveyor.traffic.builtin.daemon", "--state", str(tmp_path)],
                capture_output=True,
                timeout=30,
            )
            assert second.returncode == 3  # one router per project
        finally:
            old_secret = paths.secret.read_bytes()
            assert stop_router(tmp_path) == daemon.pid
            daemon.wait(10)
        assert not paths.routes.exists()  # `conveyor down` forgets: its instances are gone
        # ... and the control secret goes with the router: the next one gets a new secret
        assert not paths.secret.exists()
        assert read_secret(paths, create=True) != old_secret

    run(main, timeout=60)


def _raw(paths: RouterPaths) -> tuple[socket.socket, dict[str, object]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(paths.socket))
    return sock, control.decode(sock.makefile("rb").readline())


def _exchange(sock: socket.socket, message: dict[str, object]) -> list[dict[str, object]]:
    sock.sendall(control.encode(message))
    lines = sock.makefile("rb").read().splitlines()  # the router answers, then closes
    return [control.decode(line) for line in lines]


def test_the_control_channel_refuses_unauthenticated_and_incompatible_peers(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        v1, evil = await TestBackend("v1").start(), await TestBackend("evil").start()
        router = RouterProcess(tmp_path)
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = router.bound_port(SERVICE, ENV)
        router.apply(SERVICE, ENV, table(("v1", 100, [v1])))
        paths = RouterPaths.of(tmp_path)
        push = {
            "op": "apply",
            "service": SERVICE,
            "env": ENV,
            "table": control.table_to_wire(table(("evil", 100, [evil]))),
        }
        # 1. A push with no hello at all.
        sock, greeting = _raw(paths)
        assert greeting["version"] == control.PROTOCOL
        with sock:
            [answer] = await asyncio.to_thread(_exchange, sock, push)
        assert answer["ok"] is False and "not authenticated" in str(answer["error"])
        # 2. A hello with a guessed proof.
        sock, greeting = _raw(paths)
        with sock:
            hello = {"op": "hello", "version": control.PROTOCOL, "proof": "0" * 64, "nonce": "1"}
            [answer] = await asyncio.to_thread(_exchange, sock, hello)
        assert answer["ok"] is False and "wrong proof" in str(answer["error"])
        # 3. The right secret but a major version this router does not speak.
        secret = read_secret(paths, create=False)
        sock, greeting = _raw(paths)
        with sock:
            proof = control.proof(secret, "client", str(greeting["challenge"]))
            hello = {"op": "hello", "version": "2.0", "proof": proof, "nonce": "1"}
            [answer] = await asyncio.to_thread(_exchange, sock, hello)
        assert answer["ok"] is False
        assert f"speaks control protocol 2.0, this side speaks {control.PROTOCOL}" in str(
            answer["error"]
        )
        # 4. A client with a wrong secret is refused, and says so clearly.
        with pytest.raises(Unavailable, match="wrong proof"):
            Connection(paths, b"x" * 64, timeout=5)
        # Nothing got through: users still reach v1 only.
        assert await _versions(port, 10) == {"v1": 10}
        await router.close()

    run(main, timeout=60)


def test_a_client_refuses_a_router_of_another_major_version(tmp_path: Path) -> None:
    """An impostor (or a future router) on the socket: the client names both versions."""
    paths = RouterPaths.of(tmp_path).ensure()
    secret = read_secret(paths, create=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(paths.socket))
    listener.listen(1)

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(control.encode({"version": "2.3", "challenge": "c", "pid": 1}))
            conn.recv(100)

    async def main() -> None:
        task = asyncio.create_task(asyncio.to_thread(answer))
        with pytest.raises(Unavailable) as caught:
            await asyncio.to_thread(Connection, paths, secret, 5)
        assert "speaks control protocol 2.3" in caught.value.message
        assert caught.value.hint is not None and "conveyor down" in caught.value.hint
        await task

    run(main, timeout=30)
    listener.close()


def test_routes_file_holds_no_secret(tmp_path: Path) -> None:
    paths = RouterPaths.of(tmp_path)

    async def main() -> None:
        router = RouterProcess(tmp_path)
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        secret = paths.secret.read_text().strip()
        for path in (paths.routes, paths.log, paths.state):
            assert secret not in path.read_text()
        saved = json.loads(paths.routes.read_text())
        assert [r["service"] for r in saved["routes"]] == [SERVICE]
        await router.close()

    run(main, timeout=60)
