"""The router process: ``python -m conveyor.traffic.builtin.daemon --state .conveyor/routers``.

A ``BuiltinRouter`` on its own uvloop, driven over the control socket (``control``) by
whichever ``conveyor server`` runs now. It is the data plane: it must not depend on the
control plane being there, so

* it remembers the last listeners and route tables it was given (``routes.json``) and,
  when (re)started, serves them before any server speaks to it;
* it keeps serving them, unchanged, for as long as no server is connected;
* it stops only when asked: the ``shutdown`` op (sent by ``conveyor down``, which stops
  the instances too and so has the saved routes forgotten) or SIGTERM (routes kept).

Exactly one runs per project: it holds ``router.lock`` for its whole life and a second one
exits at once with status 3 (see ``files``). Exit status 2 means it could not start
(no secret, socket in use); the server's client reports the log's tail.

With ``--detach`` (how servers start it) the process forks: the parent waits until the
router listens on its control socket, or failed, and exits with that status; the router
itself is then nobody's child, so a server that stops leaves no zombie and no process to
wait for behind.

With ``--workers N`` (``server: router_workers`` in conveyor.yaml) it is worker 0 of N
processes sharing every port (``SO_REUSEPORT``; see ``workers``). The control socket, the
saved routes and the lock stay here; every op becomes a fan-out: ``serve`` opens the port
here first (learning it when 0 was asked) then in each worker, ``apply`` applies here first
(a fenced table goes no further) then in each worker, and the reads add the workers'
numbers to this process's own (``merge``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from conveyor.errors import Conflict, ConveyorError, NotFound
from conveyor.traffic.builtin import control
from conveyor.traffic.builtin.files import RouterPaths, read_secret, write_private
from conveyor.traffic.builtin.merge import interleave_samples, merge_series, route_counters
from conveyor.traffic.builtin.metrics import DEFAULT_SAMPLES, SeriesSnapshot, render_prometheus
from conveyor.traffic.builtin.router import BuiltinRouter
from conveyor.traffic.builtin.workers import MAX_WORKERS, WorkerPool, port_taken

log = logging.getLogger("conveyor.router")

ALREADY_RUNNING = 3
CANNOT_START = 2
_MAX_NAME = 200


class RouterDaemon:
    """The control side of the router process: the socket, the handshake, the saved routes."""

    def __init__(
        self, paths: RouterPaths, secret: bytes, router: BuiltinRouter, workers: int = 1
    ) -> None:
        self.paths = paths
        self.secret = secret
        self.router = router
        self.boot = secrets.token_hex(8)
        self.routes: dict[tuple[str, str], dict[str, Any]] = {}  # what routes.json holds
        self.pool = WorkerPool(workers - 1, lambda: list(self.routes.values()))
        self.stopping = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._unserved: dict[tuple[str, str], dict[str, Any]] = {}  # tables before a serve

    # --- life -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.restore()
        await self.pool.start()  # each worker is replayed the restored routes
        path = self.paths.socket
        path.unlink(missing_ok=True)  # stale: we hold the lock, so nobody listens there
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._connection, path=str(path), limit=control.MAX_LINE
            )
        finally:
            os.umask(old)
        path.chmod(0o600)
        state = {
            "pid": os.getpid(),
            "boot": self.boot,
            "version": control.PROTOCOL,
            "socket": str(path),
            "started_at": time.time(),
        }
        write_private(self.paths.state, json.dumps(state))
        log.info(
            "router %s (pid %d, %d process(es)) listening on %s",
            self.boot,
            os.getpid(),
            self.pool.size + 1,
            path,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await asyncio.gather(self.router.close(), self.pool.stop())
        with contextlib.suppress(OSError):
            current = json.loads(self.paths.state.read_text())
            if current.get("boot") == self.boot:
                self.paths.state.unlink()
        self.paths.socket.unlink(missing_ok=True)

    async def restore(self) -> None:
        """Serve what the previous run was told, before any server speaks to us."""
        try:
            saved = json.loads(self.paths.routes.read_text())
            entries = saved["routes"]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", self.paths.routes, exc)
            return
        for entry in entries:
            try:
                service, env = str(entry["service"]), str(entry["env"])
                if entry.get("table") is not None:  # the table first: never listen without
                    self.router.apply(service, env, control.table_from_wire(entry["table"]))
                await self._listen(
                    service, env, entry["host"], int(entry["port"]), entry.get("preview_port")
                )
                self.routes[(service, env)] = dict(entry)
            except (ConveyorError, control.ProtocolError, KeyError, TypeError, ValueError) as e:
                log.warning("cannot restore route %s: %s", entry.get("service"), e)
        log.info("restored %d route(s) from %s", len(self.routes), self.paths.routes)

    def persist(self) -> None:
        try:
            write_private(self.paths.routes, json.dumps({"routes": list(self.routes.values())}))
        except OSError as exc:
            log.warning("cannot save the routes to %s: %s", self.paths.routes, exc)

    # --- connections ------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _same_user(writer):
                await _send(writer, _error("the router answers only its own user"))
                return
            challenge = secrets.token_hex(16)
            await _send(
                writer,
                {
                    "version": control.PROTOCOL,
                    "challenge": challenge,
                    "pid": os.getpid(),
                    "boot": self.boot,
                },
            )
            hello = control.decode(await reader.readline())
            refusal = self._refusal(hello, challenge)
            if refusal is not None:
                log.warning("refused a control connection: %s", refusal)
                await _send(writer, _error(refusal))
                return
            nonce = str(hello.get("nonce", ""))[:64]
            await _send(writer, {"ok": True, "proof": control.proof(self.secret, "router", nonce)})
            while line := await reader.readline():
                await _send(writer, await self._answer(control.decode(line)))
        except control.ProtocolError as exc:
            with contextlib.suppress(OSError):
                await _send(writer, _error(str(exc)))
        except (OSError, ValueError, asyncio.IncompleteReadError):  # peer gone, line too long
            pass
        finally:
            writer.close()

    def _refusal(self, hello: dict[str, Any], challenge: str) -> str | None:
        if hello.get("op") != "hello":
            return "not authenticated: the first message must be a hello with a proof"
        problem = control.compatible(hello.get("version"))
        if problem is not None:
            return problem
        if not control.check_proof(self.secret, "client", challenge, hello.get("proof")):
            return "not authenticated: wrong proof of the control secret"
        return None

    async def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        try:
            if op == "ping":
                return {
                    "ok": True,
                    "pid": os.getpid(),
                    "boot": self.boot,
                    "workers": self.pool.size + 1,
                    "worker_pids": [os.getpid(), *self.pool.pids()],
                }
            if op == "workers":
                return {"ok": True, "workers": await self._processes()}
            if op == "shutdown":
                if message.get("forget"):  # `conveyor down`: the instances go too
                    self.routes.clear()
                    self.paths.routes.unlink(missing_ok=True)
                self.stopping.set()
                return {"ok": True}
            if op == "metrics":
                return {"ok": True, "text": render_prometheus(await self._series())}
            if op == "routes":
                return {"ok": True, "routes": list(self.routes.values())}
            service, env = _name(message, "service"), _name(message, "env")
            if op == "serve":
                return await self._serve(service, env, message)
            if op == "apply":
                return await self._apply(service, env, message)
            if op == "in_flight":
                instance = _name(message, "instance")
                count = self.router.in_flight(service, env, instance)
                count += await self.pool.in_flight(service, env, instance)
                return {"ok": True, "count": count}
            if op == "counters":
                if self.pool.size:
                    counters = route_counters(await self._series(), service, env)
                else:
                    counters = self.router.counters(service, env)
                versions = {v: control.counters_to_wire(c) for v, c in counters.items()}
                return {"ok": True, "versions": versions}
            if op == "samples":
                version = _name(message, "version")
                own = self.router.latency_samples(service, env, version)
                if not self.pool.size:
                    return {"ok": True, "samples": list(own)}
                theirs = await self.pool.samples(service, env, version)
                samples = interleave_samples([own, *theirs], DEFAULT_SAMPLES)
                return {"ok": True, "samples": list(samples)}
        except ConveyorError as exc:
            return _error(exc.message, exc.hint, type(exc).__name__)
        return _error(f"unknown op {str(op)[:40]!r}", "the router may be older than the server")

    async def _serve(self, service: str, env: str, message: dict[str, Any]) -> dict[str, Any]:
        host = _name(message, "host")
        port = message.get("port")
        preview_port = message.get("preview_port")
        if not isinstance(port, int) or not (preview_port is None or isinstance(preview_port, int)):
            raise control.ProtocolError("serve needs integer ports")
        async with self.pool.changing:
            await self._listen(service, env, host, port, preview_port)
            bound = self.router.bound_port(service, env)
            bound_preview = (
                None if preview_port is None else self.router.bound_port(service, env, True)
            )
            entry = self.routes.setdefault((service, env), {"service": service, "env": env})
            entry.update(host=host, port=bound, preview_port=bound_preview)
            entry.setdefault("table", self._unserved.pop((service, env), None))
            self.persist()
            await self.pool.serve(service, env, host, bound, bound_preview)
        return {"ok": True, "port": bound, "preview_port": bound_preview}

    async def _apply(self, service: str, env: str, message: dict[str, Any]) -> dict[str, Any]:
        table = control.table_from_wire(message.get("table"))
        async with self.pool.changing:
            self.router.apply(service, env, table)  # Fenced here: answered, not broadcast
            wire = control.table_to_wire(table)
            entry = self.routes.get((service, env))
            if entry is not None:
                entry["table"] = wire
                self.persist()
            else:
                self._unserved[(service, env)] = wire
            await self.pool.apply(service, env, wire)
        return {"ok": True}

    async def _listen(
        self, service: str, env: str, host: str, port: int, preview_port: int | None
    ) -> None:
        """Open a route's listeners here. With workers they are opened with ``SO_REUSEPORT``,
        so a port not yet ours is first checked to be nobody else's (``port_taken``)."""
        if self.pool.size:
            for preview, wanted in ((False, port), (True, preview_port)):
                if wanted and not self._listening(service, env, host, wanted, preview):
                    problem = await port_taken(host, wanted)
                    if problem is not None:
                        which = "preview listener" if preview else "listener"
                        raise Conflict(
                            f"cannot open the {which} of {service}/{env} on {host}:{wanted}: "
                            f"{problem}",
                            hint="choose a free port for this environment, or stop the "
                            "process using it",
                        )
        await self.router.serve(service, env, host, port, preview_port)

    def _listening(self, service: str, env: str, host: str, port: int, preview: bool) -> bool:
        entry = self.routes.get((service, env))
        if entry is None or entry.get("host") != host:
            return False
        try:
            return self.router.bound_port(service, env, preview) == port
        except NotFound:
            return False

    async def _series(self) -> list[SeriesSnapshot]:
        """Every route's series, this process's and the workers' added up."""
        theirs = await self.pool.series()
        return merge_series([self.router.series(), theirs])

    async def _processes(self) -> list[dict[str, Any]]:
        own = sum(s.counters.requests for s in self.router.series())
        mine = {"index": 0, "pid": os.getpid(), "restarts": 0, "requests": own}
        return [mine, *await self.pool.processes()]


def _name(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME:
        raise control.ProtocolError(f"{field} must be a non-empty string of <= {_MAX_NAME}")
    return value


def _error(message: str, hint: str | None = None, kind: str = "Unavailable") -> dict[str, Any]:
    return {"ok": False, "error": message, "hint": hint, "kind": kind}


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(control.encode(message))
    await writer.drain()


def _same_user(writer: asyncio.StreamWriter) -> bool:
    """``SO_PEERCRED``: only processes of the router's own user may even say hello."""
    sock = writer.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return True  # not Linux: the socket's 0600 mode still keeps others out
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return True
    _pid, uid, _gid = struct.unpack("3i", raw)
    return bool(uid == os.getuid())


async def run(paths: RouterPaths, secret: bytes, ready: int | None = None, workers: int = 1) -> int:
    daemon = RouterDaemon(paths, secret, BuiltinRouter(reuse_port=workers > 1), workers)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    try:
        await daemon.start()
    except OSError as exc:
        log.error("cannot open the control socket %s: %s", paths.socket, exc)
        return CANNOT_START
    _notify(ready, 0)
    await daemon.stopping.wait()
    log.info("router %s stopping", daemon.boot)
    await daemon.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conveyor-router", description=__doc__.split("\n")[0])
    parser.add_argument("--state", type=Path, required=True, help="the .conveyor/routers dir")
    parser.add_argument("--detach", action="store_true", help="fork; exit once serving")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help=f"processes serving the routes, this one included (1..{MAX_WORKERS})",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= MAX_WORKERS:
        parser.error(f"--workers must be 1..{MAX_WORKERS}, not {args.workers}")
    ready: int | None = None
    if args.detach:
        readable, ready = os.pipe()
        if os.fork() > 0:
            os.close(ready)
            status = os.read(readable, 1)  # the router's status, or EOF if it died first
            return status[0] if status else CANNOT_START
        os.close(readable)
    code = _main(args.state, ready, args.workers)
    _notify(ready, code)
    return code


def _main(state: Path, ready: int | None, workers: int = 1) -> int:
    logging.basicConfig(
        level=os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        paths = RouterPaths.of(state).ensure()
        secret = read_secret(paths, create=False)
    except ConveyorError as exc:
        log.error("%s (%s)", exc.message, exc.hint)
        return CANNOT_START
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("a router is already running for %s", paths.directory)
        return ALREADY_RUNNING
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on supported platforms
        return asyncio.run(run(paths, secret, ready, workers))
    return int(uvloop.run(run(paths, secret, ready, workers)))


_notified: set[int] = set()


def _notify(ready: int | None, code: int) -> None:
    """Tell a ``--detach`` parent how the start went (once)."""
    if ready is None or ready in _notified:
        return
    _notified.add(ready)
    with contextlib.suppress(OSError):
        os.write(ready, bytes([code]))
        os.close(ready)


if __name__ == "__main__":
    sys.exit(main())
