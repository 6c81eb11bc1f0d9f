"""Run `conveyor server`: store, runtime, router, controller and API in one asyncio process.

On SQLite, one server per project, enforced by an advisory lock on `.conveyor/server.lock`
(the kernel drops it when the process dies, even by SIGKILL, so a crashed server never
blocks its successor). On PostgreSQL there is no lock: several servers may run, and the
lease of each environment decides which one drives it (docs/high-availability.md). The
bound address is published in `.conveyor/server.json` for the CLI.

The server is the control plane only: stopped (SIGTERM/SIGINT) or killed (SIGKILL), it
leaves the data plane running — the router process keeps serving its last route tables and
the instances keep running — and the next server adopts both. Only `conveyor down` stops
everything (``daemon.down``: the server, then the routers and the instances).
On PostgreSQL a stopping server also gives its environments' leases back at once, so a
standby takes over without waiting for them to expire (docs/high-availability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from conveyor.errors import Conflict, ConveyorError, UsageError
from conveyor.layout import Layout, find_config, private_file
from conveyor.server.api import create_app
from conveyor.server.files import read_server_file, running_server
from conveyor.server.guard import LOCAL_HOSTS
from conveyor.server.stack import Stack, build_stack
from conveyor.store.engine import default_url

log = logging.getLogger("conveyor.server")


class ServerLock:
    """Held for the life of the server; a second server for the same project is refused."""

    def __init__(self, layout: Layout) -> None:
        self.path = layout.server_lock
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(
                "a Conveyor server is already running for this project",
                hint="use it (`conveyor status`), or stop it with `conveyor down`",
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def uses_shared_store(config_file: Path) -> bool:
    """PostgreSQL: several servers may drive the project (one lease holder per environment,
    ``controller/leadership.py``), so no file lock. SQLite: one server, under the lock."""
    return not default_url(config_file.resolve().parent).startswith("sqlite")


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted sockets: a kept-alive client otherwise waits for its delayed
    # ACK (40 ms) between a response's headers and body (relays poll on kept-alive links).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def _publish(layout: Layout, host: str, port: int, scheme: str = "http") -> None:
    shown = "127.0.0.1" if host in WILDCARDS else host
    url = f"{scheme}://{shown}:{port}"
    info = {"pid": os.getpid(), "url": url, "started_at": time.time()}
    private_file(layout.server_file, json.dumps(info))


WILDCARDS = frozenset({"0.0.0.0", "::"})  # noqa: S104 - names, to recognise them


@dataclass(frozen=True)
class TLS:
    cert: Path
    key: Path


def check_exposure(host: str, tls: TLS | None, insecure: bool) -> None:
    """Listening beyond loopback needs TLS, or saying out loud that it is not wanted."""
    loopback = host in LOCAL_HOSTS or host.startswith("127.")
    if loopback or tls is not None or insecure:
        return
    raise UsageError(
        f"refusing to serve the API on {host} without TLS: tokens would cross the network "
        "in clear text",
        hint="pass --tls-cert FILE --tls-key FILE, or --insecure if the network is trusted",
    )


def local_identity() -> str:
    """``user@host`` of whoever starts the server: the first admin token is theirs."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


async def serve(
    config_file: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tick: float = 0.1,
    tls: TLS | None = None,
    insecure: bool = False,
    allow_hosts: tuple[str, ...] = (),
) -> None:
    check_exposure(host, tls, insecure)
    config_file = find_config(config_file)
    layout = Layout(config_file.resolve().parent).ensure()
    lock = ServerLock(layout)
    if not uses_shared_store(config_file):
        lock.acquire()
    try:
        stack = build_stack(config_file, tick=tick)
    except BaseException:
        lock.release()
        raise
    project_name = stack.controller.project_name
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal with the
    # handler it found installed. A no-op handler here means that re-raise lands softly and
    # the `finally` below still lets go of the data plane cleanly (router and instances keep
    # running; the next server adopts them).
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    watcher: asyncio.Task[None] | None = None
    publisher: asyncio.Task[None] | None = None
    try:
        await stack.start()
        stack.app.tokens.bootstrap(layout.admin_token, local_identity())
        watcher = asyncio.create_task(_watch_config(stack))
        settings = stack.project.current().config.server
        hosts = {*LOCAL_HOSTS, *settings.allow_hosts, *allow_hosts}
        if host not in WILDCARDS:
            hosts.add(host)
        app = create_app(
            stack.app,
            project_name=project_name,
            public_metrics=settings.public_metrics,
            allowed_hosts=hosts,
        )
        stack.app.traffic.start()  # the dashboard's charts sample the routers from now on
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                lifespan="off",
                access_log=False,
                # Flag push streams never end on their own: stop waiting for them after
                # a few seconds (relays reconnect, and serve from their cache meanwhile).
                timeout_graceful_shutdown=5,
                ssl_certfile=str(tls.cert) if tls else None,
                ssl_keyfile=str(tls.key) if tls else None,
            )
        )
        scheme = "https" if tls else "http"
        _publish(layout, host, bound, scheme)
        if stack.shared:
            publisher = asyncio.create_task(_stay_published(layout, host, bound, scheme))
        log.info("conveyor server for %s listening on http://%s:%s", project_name, host, bound)
        await server.serve(sockets=[sock])
    finally:
        for task in (watcher, publisher):
            if task is not None:
                task.cancel()
        stack.app.traffic.stop()
        published = read_server_file(layout)
        if published is None or published.pid == os.getpid():  # not another server's file
            with contextlib.suppress(FileNotFoundError):
                layout.server_file.unlink()
        await stack.close(stop_instances=False)
        sock.close()
        lock.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _stay_published(
    layout: Layout, host: str, port: int, scheme: str, every: float = 2.0
) -> None:
    """Servers sharing a store on one host share `.conveyor/server.json`: when the server
    it names is gone, a surviving one names itself, so the CLI finds a server again."""
    while True:
        await asyncio.sleep(every)
        if running_server(layout) is None:
            _publish(layout, host, port, scheme)
            log.info(
                "published this server in %s (the one named there is gone)", layout.server_file
            )


async def _watch_config(stack: Stack, every: float = 2.0) -> None:
    """Look at conveyor.yaml now and then, so a broken file shows in `status` and on the
    ledger without waiting for someone to deploy."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(stack.project.state)
        except ConveyorError as error:  # the store could not record it: say so, keep going
            log.warning("checking conveyor.yaml: %s", error.message)


def _ignore(signum: int, frame: object) -> None:
    """See `serve`: the signal was already handled by uvicorn's graceful shutdown."""


def run(
    config_file: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: TLS | None = None,
    insecure: bool = False,
    allow_hosts: tuple[str, ...] = (),
) -> None:
    logging.basicConfig(
        level=os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "tls": tls,
        "insecure": insecure,
        "allow_hosts": allow_hosts,
    }
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(serve(config_file, **options))
    else:
        uvloop.run(serve(config_file, **options))
