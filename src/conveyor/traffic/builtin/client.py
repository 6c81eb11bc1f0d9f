"""``RouterProcess``: the ``TrafficRouter`` a server uses to drive the router process.

The built-in router used to live inside ``conveyor server``; a server crash, restart or
upgrade was then an outage of every service it routed. Now the router is its own process
(``daemon``) and this client is what the server holds instead:

* **find or start** (``serve``): if a router runs for the project (its lock is held), the
  client *adopts* it — connects, proves it holds the control secret and checks the router
  does too — and never restarts it, so users keep their connections and the split they
  had. Otherwise it starts one (in its own session: it outlives the server) and waits for
  its socket. ``spawn.lock`` makes "find or start" atomic between overlapping servers.
  ``workers`` (``server: router_workers``) is how many processes the router it starts
  runs; an adopted router keeps the count it was started with (a warning says how to
  change it: restart the router, which users notice);
* **push and read** (``apply``, ``counters``, ``in_flight``, ...): one blocking round trip
  over a kept-open Unix socket connection (~100 µs), from the event loop thread like the
  HAProxy router's runtime commands, with a timeout so a hung router cannot hang the server
  for more than ``call_timeout``;
* **supervise**: a background task pings the router a few times a second; if it died, the
  client starts a new one (which serves its saved tables at once) and pushes everything
  again. Counters stay cumulative across such a restart: the dead run's last counters are
  banked and added, as the HAProxy router does for its replaced workers;
* **let go** (``detach``): the server stops or restarts, the router keeps serving; or
  **stop** (``close``): ``conveyor down``, tests.

When the router cannot be reached, reads degrade instead of failing a rollout tick:
``counters`` returns the last values seen, ``in_flight`` says 0 only if the router is
really gone (nothing can be in flight through a dead process) and 1 while it is merely
silent (so the drain waits, bounded by its own timeout), and a table is kept to be pushed
as soon as the router is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.core.model import RouteTable, VersionCounters
from conveyor.errors import Conflict, ConveyorError, Fenced, NotFound, Unavailable
from conveyor.traffic.builtin import control
from conveyor.traffic.builtin.files import (
    RouterPaths,
    lock_held,
    read_secret,
    read_state,
)

log = logging.getLogger("conveyor.router.client")

_ERRORS: dict[str, type[ConveyorError]] = {
    "Conflict": Conflict,
    "NotFound": NotFound,
    "Fenced": Fenced,  # a route table under an older lease epoch than the router has seen
}


class _Down(Exception):
    """The router cannot be reached right now."""


class Connection:
    """One authenticated, blocking conversation with the router process."""

    def __init__(self, paths: RouterPaths, secret: bytes, timeout: float) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._file = self._sock.makefile("rb")
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(paths.socket))
            greeting = self._read()
            problem = control.compatible(greeting.get("version"))
            if problem is not None:
                raise Unavailable(
                    f"the router process at {paths.socket} cannot be driven: {problem}",
                    hint="stop it with `conveyor down` (users see an outage), then `conveyor up`",
                )
            nonce = secrets.token_hex(16)
            challenge = str(greeting.get("challenge", ""))
            answer = self.call(
                {
                    "op": "hello",
                    "version": control.PROTOCOL,
                    "proof": control.proof(secret, "client", challenge),
                    "nonce": nonce,
                }
            )
            if not answer.get("ok"):
                raise Unavailable(f"the router refused this server: {answer.get('error')}")
            if not control.check_proof(secret, "router", nonce, answer.get("proof")):
                raise Unavailable(
                    f"the process listening on {paths.socket} is not this project's router "
                    "(it cannot prove it holds the control secret)",
                    hint=f"stop whatever listens on {paths.socket}",
                )
            self.pid = int(greeting.get("pid", 0))
            self.boot = str(greeting.get("boot", ""))
        except BaseException:
            self.close()  # the file too: it keeps the descriptor open otherwise
            raise

    def _read(self) -> dict[str, Any]:
        line = self._file.readline(control.MAX_LINE + 1)
        if not line:
            raise ConnectionError("the router closed the connection")
        return control.decode(line)

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        self._sock.sendall(control.encode(message))
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self._sock.close()


@dataclass
class _Wanted:
    """What this server asked of one route, to push again to a restarted router."""

    host: str
    port: int
    preview_port: int | None
    bound: int = 0
    bound_preview: int | None = None
    table: RouteTable | None = None


class RouterProcess:
    """The built-in router, run as its own process and driven over its control socket.

    ``state_dir`` is ``.conveyor/routers`` (the router keeps its files in ``builtin/``);
    ``workers`` is the number of processes a router started by this client runs.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        workers: int = 1,
        python: str = sys.executable,
        start_timeout: float = 15.0,
        call_timeout: float = 2.0,
        supervise_every: float = 0.25,
        close_grace: float = 5.0,
    ) -> None:
        self.paths = RouterPaths.of(state_dir)
        self._workers = workers
        self._python = python
        self._start_timeout = start_timeout
        self._call_timeout = call_timeout
        self._supervise_every = supervise_every
        self._close_grace = close_grace
        self._secret: bytes | None = None
        self._conn: Connection | None = None
        self._boot: str | None = None
        self._routes: dict[tuple[str, str], _Wanted] = {}
        self._last: dict[tuple[str, str], dict[str, VersionCounters]] = {}
        self._bank: dict[tuple[str, str], dict[str, VersionCounters]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._unreaped: list[subprocess.Popen[bytes]] = []
        """Forking parents (``--detach``) slow to exit: reaped later, never left behind."""
        self._repush = False
        self.adopted = False  # the router was running before this client found it

    # -- TrafficRouter -------------------------------------------------------------------

    async def serve(
        self,
        service: str,
        env: str,
        host: str = "127.0.0.1",
        port: int = 0,
        preview_port: int | None = None,
    ) -> None:
        await self._ensure()
        wanted = self._routes.get((service, env))
        if wanted is not None and port == 0 and wanted.host == host:
            port = wanted.bound  # the same address every time, as the in-process router did
        answer = self._call(
            "serve", service=service, env=env, host=host, port=port, preview_port=preview_port
        )
        table = wanted.table if wanted is not None else None
        self._routes[(service, env)] = _Wanted(
            host, port, preview_port, int(answer["port"]), answer.get("preview_port"), table
        )
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    def apply(self, service: str, env: str, table: RouteTable) -> None:
        wanted = self._routes.get((service, env))
        if wanted is not None:
            wanted.table = table
        try:
            self._call("apply", service=service, env=env, table=control.table_to_wire(table))
        except _Down:
            self._repush = True  # the supervisor pushes it once the router is back

    def in_flight(self, service: str, env: str, instance_id: str) -> int:
        try:
            answer = self._call("in_flight", service=service, env=env, instance=instance_id)
        except _Down:
            return 1 if lock_held(self.paths.lock) else 0
        return int(answer["count"])

    def counters(self, service: str, env: str) -> dict[str, VersionCounters]:
        key = (service, env)
        try:
            answer = self._call("counters", service=service, env=env)
            self._last[key] = {
                version: control.counters_from_wire(raw)
                for version, raw in answer["versions"].items()
            }
        except (_Down, control.ProtocolError, KeyError, AttributeError):
            pass  # the last counters seen: a window simply sees no new requests
        merged = dict(self._bank.get(key, {}))
        for version, counters in self._last.get(key, {}).items():
            banked = merged.get(version)
            merged[version] = counters if banked is None else control.add_counters(banked, counters)
        return merged

    def latency_samples(self, service: str, env: str, version: str) -> tuple[float, ...]:
        try:
            answer = self._call("samples", service=service, env=env, version=version)
        except _Down:
            return ()
        return tuple(float(s) for s in answer["samples"])

    def prometheus_text(self) -> str:
        try:
            return str(self._call("metrics")["text"])
        except _Down:
            return ""

    async def close(self) -> None:
        """Stop the router process: users' connections end (``conveyor down``, tests)."""
        await self._stop_supervising()
        if self._secret is None:
            return  # never found or started one: whatever runs is not ours to stop
        pid = self._conn.pid if self._conn is not None else None
        try:
            self._call("shutdown", forget=True)
        except (_Down, ConveyorError):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        self._disconnect()
        deadline = time.monotonic() + self._close_grace + 5.0
        while lock_held(self.paths.lock) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if lock_held(self.paths.lock) and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def detach(self) -> None:
        """Let go of the router: it keeps serving its last tables; a next server adopts it."""
        await self._stop_supervising()
        self._disconnect()

    # -- beyond the Protocol -------------------------------------------------------------

    def bound_port(self, service: str, env: str, preview: bool = False) -> int:
        wanted = self._routes.get((service, env))
        port = None if wanted is None else wanted.bound_preview if preview else wanted.bound
        if port is None:
            which = "preview listener" if preview else "listener"
            raise NotFound(
                f"the router has no {which} for {service}/{env}",
                hint="call serve() for this service and environment first",
            )
        return port

    @property
    def pid(self) -> int | None:
        """The router process's pid, if connected."""
        return self._conn.pid if self._conn is not None else None

    # -- the process ---------------------------------------------------------------------

    async def _ensure(self) -> None:
        """Be connected to a router: the running one (adopted) or a new one."""
        async with self._lock:
            if self._conn is not None:
                return
            self.paths.ensure()
            self._secret = read_secret(self.paths, create=True)
            spawn_lock = os.open(self.paths.spawn_lock, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                await _flock(spawn_lock, self._start_timeout)
                if lock_held(self.paths.lock):
                    await self._connect_within(self._start_timeout, None)
                    self.adopted = True
                    log.info("adopted the router process %s", self.pid)
                    self._compare_workers()
                    return
                child = self._spawn()
                try:
                    await self._connect_within(self._start_timeout, child)
                finally:
                    if child.poll() is None:  # the forking parent exits once serving
                        await asyncio.to_thread(_wait, child, 5.0)
                    if child.poll() is None:  # a loaded machine: reap it on a later look
                        self._unreaped.append(child)
                self.adopted = False
                log.info("started the router process %s", self.pid)
            finally:
                os.close(spawn_lock)

    def _spawn(self) -> subprocess.Popen[bytes]:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        with os.fdopen(os.open(self.paths.log, flags, 0o600), "ab") as output:
            return subprocess.Popen(
                [
                    self._python,
                    "-m",
                    "conveyor.traffic.builtin.daemon",
                    "--state",
                    str(self.paths.directory.parent),
                    "--detach",  # it exits once the router serves; the router is no child
                    "--workers",
                    str(self._workers),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # a Ctrl-C or a kill of the server's group spares it
                close_fds=True,
            )

    def _compare_workers(self) -> None:
        """An adopted router runs the processes it was started with: say so if that is not
        what this server's config asks (it keeps serving; only a restart changes it)."""
        try:
            running = self._call("ping").get("workers", 1)  # a 1.0 router: one process
        except (_Down, ConveyorError):
            return
        if running != self._workers:
            log.warning(
                "the running router (pid %s) runs %s process(es), the config asks for %d "
                "(server: router_workers); it keeps running as it is. To apply the setting, "
                "restart it: `conveyor down && conveyor up` (users see an outage)",
                self.pid,
                running,
                self._workers,
            )

    async def _connect_within(self, timeout: float, child: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + timeout
        problem = "no answer"
        while True:
            try:
                self._connect()
                return
            except Unavailable:
                raise
            except (OSError, control.ProtocolError) as exc:
                problem = str(exc)
            if child is not None and child.poll() not in (None, 0):
                raise Unavailable(
                    f"the router process exited at start (status {child.returncode})",
                    hint=f"see {self.paths.log}: {_tail(self.paths.log)}",
                )
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"the router process did not answer within {timeout:g}s ({problem})",
                    hint=f"see {self.paths.log}",
                )
            await asyncio.sleep(0.02)

    def _connect(self) -> None:
        assert self._secret is not None
        conn = Connection(self.paths, self._secret, self._call_timeout)
        if self._boot is not None and conn.boot != self._boot:
            # A new router run: its counters start at zero, so bank what the last one said.
            for key, versions in self._last.items():
                bank = self._bank.setdefault(key, {})
                for version, counters in versions.items():
                    banked = bank.get(version)
                    bank[version] = (
                        counters if banked is None else control.add_counters(banked, counters)
                    )
            self._last.clear()
            self._repush = True
            log.warning("the router process restarted (pid %d); pushing routes again", conn.pid)
        self._boot = conn.boot
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request and its answer; reconnects once (the router may have restarted)."""
        for attempt in (1, 2):
            if self._conn is None:
                if self._secret is None or not lock_held(self.paths.lock):
                    raise _Down(op)
                try:
                    self._connect()
                except (OSError, ConveyorError, control.ProtocolError) as exc:
                    raise _Down(op) from exc
            assert self._conn is not None
            try:
                answer = self._conn.call({"op": op, **fields})
                break
            except (OSError, control.ProtocolError) as exc:
                self._disconnect()
                if attempt == 2:
                    raise _Down(op) from exc
        if not answer.get("ok"):
            kind = _ERRORS.get(str(answer.get("kind")), Unavailable)
            raise kind(f"router: {answer.get('error')}", hint=answer.get("hint"))
        return answer

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self._supervise_every)
            self._reap()
            try:
                await self._check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("router supervision failed; will retry")

    async def _check(self) -> None:
        try:
            self._call("ping")
        except _Down:
            if lock_held(self.paths.lock):
                return  # alive but silent, or starting: look again soon
            log.warning("the router process is gone; starting it again")
            self._disconnect()
            await self._ensure()
        if self._repush:
            self._repush = False
            for (service, env), wanted in list(self._routes.items()):
                port = wanted.bound or wanted.port
                self._call(
                    "serve",
                    service=service,
                    env=env,
                    host=wanted.host,
                    port=port,
                    preview_port=wanted.bound_preview or wanted.preview_port,
                )
                if wanted.table is not None:
                    table = control.table_to_wire(wanted.table)
                    self._call("apply", service=service, env=env, table=table)

    async def _stop_supervising(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for child in self._unreaped:  # only ever waits on the pipe: nothing is lost
            if child.poll() is None:
                child.kill()
            await asyncio.to_thread(_wait, child, 5.0)
        self._unreaped.clear()

    def _reap(self) -> None:
        self._unreaped = [child for child in self._unreaped if child.poll() is None]


async def _flock(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise Unavailable("another server is starting the router; try again") from None
            await asyncio.sleep(0.02)


def _wait(child: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def stop_router(state_dir: Path, timeout: float = 15.0) -> int | None:
    """Stop the project's router process, if one runs (``conveyor down``); its pid, or None.

    Once no router runs, the control secret is deleted: the next ``conveyor up`` makes a
    new one, so a copy of the old secret (a backup, a leaked file) opens nothing.
    """
    paths = RouterPaths.of(state_dir)
    if not lock_held(paths.lock):
        paths.secret.unlink(missing_ok=True)
        return None
    state = read_state(paths) or {}
    pid = state.get("pid") if isinstance(state.get("pid"), int) else None
    try:
        conn = Connection(paths, read_secret(paths, create=False), timeout=2.0)
        try:
            pid = conn.pid
            conn.call({"op": "shutdown", "forget": True})
        finally:
            conn.close()
    except (OSError, ConveyorError, control.ProtocolError):
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while lock_held(paths.lock) and time.monotonic() < deadline:
        time.sleep(0.05)
    if lock_held(paths.lock) and pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while lock_held(paths.lock) and time.monotonic() < deadline:
            time.sleep(0.05)
    if not lock_held(paths.lock):
        paths.secret.unlink(missing_ok=True)
    return pid
