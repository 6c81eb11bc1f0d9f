"""Run `conveyor server`: store, runtime, router, controller and API in one asyncio process.

One server per project, enforced by an advisory lock on `.conveyor/server.lock` (the kernel
drops it when the process dies, even by SIGKILL, so a crashed server never blocks its
successor). The bound address is published in `.conveyor/server.json` for the CLI.

On SIGTERM/SIGINT the server stops every instance it runs (that is what `conveyor down`
means). Killed with SIGKILL it stops nothing: instances keep serving and the next server
adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path

import uvicorn

from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import LoadedProject, load_project
from conveyor.controller.controller import Controller
from conveyor.errors import Conflict
from conveyor.runtime.local import LocalTarget
from conveyor.server.api import create_app
from conveyor.server.files import server_file, state_dir
from conveyor.store.engine import default_url
from conveyor.store.repository import Store
from conveyor.traffic.builtin import BuiltinRouter
from conveyor.traffic.haproxy import HAProxyRouter

log = logging.getLogger("conveyor.server")


class ServerLock:
    """Held for the life of the server; a second server for the same project is refused."""

    def __init__(self, root: Path) -> None:
        self.path = state_dir(root) / "server.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def _publish(root: Path, host: str, port: int) -> None:
    path = server_file(root)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"pid": os.getpid(), "url": f"http://{host}:{port}", "started_at": time.time()})
    )
    tmp.replace(path)


async def serve(
    config_file: Path, *, host: str = "127.0.0.1", port: int = 0, tick: float = 0.1
) -> None:
    project = load_project(config_file)
    root = project.root
    lock = ServerLock(root)
    lock.acquire()
    store = Store.open(default_url(root))

    def reload() -> LoadedProject:
        return load_project(config_file)

    controller = Controller(
        load_project=reload,
        store=store,
        artifacts=ArtifactStore(root),
        target=LocalTarget(state_dir(root) / "runtime"),
        router=BuiltinRouter(),
        routers={"haproxy": lambda: HAProxyRouter(state_dir(root) / "routers")},
        tick=tick,
    )
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal with the
    # handler it found installed. A no-op handler here means that re-raise lands softly and
    # the `finally` below still stops the instances (that is what `conveyor down` promises).
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        await controller.start()
        app = create_app(controller, project_name=project.config.project)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        )
        _publish(root, host, bound)
        log.info(
            "conveyor server for %s listening on http://%s:%s", project.config.project, host, bound
        )
        await server.serve(sockets=[sock])
    finally:
        with contextlib.suppress(FileNotFoundError):
            server_file(root).unlink()
        await controller.close(stop_instances=True)
        store.close()
        sock.close()
        lock.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore(signum: int, frame: object) -> None:
    """See `serve`: the signal was already handled by uvicorn's graceful shutdown."""


def run(config_file: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
    logging.basicConfig(
        level=os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(serve(config_file, host=host, port=port))
    else:
        uvloop.run(serve(config_file, host=host, port=port))
