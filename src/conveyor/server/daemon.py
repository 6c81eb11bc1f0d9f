"""`conveyor up` / `conveyor down`: the server as a background process of this project.

The CLI imports this module on `up` and `down` only, and it stays light: the server is a
child interpreter (``python -m conveyor server``), its health is one ``http.client`` GET,
and the data plane (needed only by `down`) is imported inside ``stop_routers`` and
``stop_leftovers``.

Stopping the server leaves the data plane running (see ``runner``), so `down` is two
steps: stop the server, then, with no server left to restart anything, stop the routers
(the built-in router process, an HAProxy) and the instances. A health answer must come
from the process the server file names: after a crash another program may own the port.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from conveyor.errors import ServerUnavailable
from conveyor.layout import Layout
from conveyor.server.files import ServerInfo, pid_alive, read_server_file, running_server

HEALTH = "/api/v1/health"


def healthy(server: ServerInfo, timeout: float = 1.0) -> bool:
    """Whether ``server`` answers its health check as the process it claims to be."""
    parts = urlsplit(server.url)
    if parts.hostname is None:
        return False
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", HEALTH, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = json.loads(response.read() or b"{}")
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        connection.close()
    if response.status != 200 or not isinstance(body, dict):
        return False
    return bool(body.get("pid", server.pid) == server.pid)


def up(layout: Layout, config_file: Path, *, port: int = 0, timeout: float = 30.0) -> str:
    """Start the server in the background (or find it running) and return its URL."""
    server = running_server(layout)
    if server is not None and healthy(server):
        return server.url
    layout.ensure()
    # 0600: the server's log may quote config and errors (see layout.py)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    with os.fdopen(os.open(layout.server_log, flags, 0o600), "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor",
                "-C",
                str(layout.root),
                "--file",
                str(config_file),
                "server",
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=layout.root,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(
                f"the server exited at start (code {process.returncode})",
                hint=f"see {layout.server_log} for why",
            )
        server = running_server(layout)
        if server is not None and server.pid == process.pid and healthy(server):
            return server.url
        time.sleep(0.1)
    raise ServerUnavailable(
        f"the server did not answer within {timeout:.0f}s", hint=f"see {layout.server_log}"
    )


def down(layout: Layout, *, timeout: float = 60.0) -> int | None:
    """Stop the server (the data plane keeps running: see ``stop_routers``,
    ``stop_leftovers``); returns the pid stopped, or None."""
    info = read_server_file(layout)
    if info is None or not pid_alive(info.pid):
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(info.pid):
        time.sleep(0.1)
    if pid_alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
    return info.pid


def stop_routers(layout: Layout) -> list[str]:
    """Stop the project's routers (after the server): what was stopped, e.g. ``builtin 123``."""
    import asyncio

    from conveyor.errors import HAProxyUnavailable
    from conveyor.traffic.builtin.client import stop_router
    from conveyor.traffic.haproxy.process import Master, paths_for, resolve_binary

    stopped = []
    pid = stop_router(layout.routers)
    if pid is not None:
        stopped.append(f"builtin {pid}")
    paths = paths_for(layout.routers)
    if paths.pidfile.exists():
        try:
            binary = resolve_binary("haproxy")
        except HAProxyUnavailable:
            binary = "haproxy"
        master = Master(binary, paths)
        if master.adopt():
            stopped.append(f"haproxy {master.pid}")
            asyncio.run(master.stop(5.0))
    return stopped


def stop_everything(layout: Layout) -> tuple[int | None, list[str], int]:
    """`conveyor down`: the server, then its routers, then every instance left running;
    returns what each step stopped (server pid, routers, instance count)."""
    pid = down(layout)
    return pid, stop_routers(layout), stop_leftovers(layout)


def stop_leftovers(layout: Layout) -> int:
    """Stop the instances the server left running (every instance, after `down`)."""
    if not (layout.runtime / "instances").exists():
        return 0
    import asyncio

    from conveyor.runtime.local import LocalTarget

    async def stop_all() -> int:
        target = LocalTarget(layout.runtime)
        await target.start()
        count = len(target.all_instances())
        await target.close(stop_instances=True)
        return count

    return asyncio.run(stop_all())
