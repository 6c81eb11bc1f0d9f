"""Where a project's server publishes itself (`server.json`), and how a client finds it.

Kept apart from the server so the CLI can find a running server without importing the web
framework, the controller and the runtime: this module needs only the standard library and
``Layout``, which owns the paths. A server is "running" when its file names a live process
(not a zombie); whether it answers is the caller's question (``daemon.healthy``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from conveyor.layout import Layout


@dataclass(frozen=True)
class ServerInfo:
    """What a server wrote about itself when it started listening."""

    pid: int
    url: str


def read_server_file(layout: Layout) -> ServerInfo | None:
    """The published server, or None when there is no file or it is not one a server wrote."""
    try:
        data = json.loads(layout.server_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid, url = data.get("pid"), data.get("url")
    if not isinstance(pid, int) or not isinstance(url, str) or not url:
        return None
    return ServerInfo(pid=pid, url=url)


def running_server(layout: Layout) -> ServerInfo | None:
    """The published server if its process is alive; a crashed server's file is ignored."""
    info = read_server_file(layout)
    return info if info is not None and pid_alive(info.pid) else None


def pid_alive(pid: int) -> bool:
    """Running and not a zombie (a server started by this very process may be one)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
        return _signal_zero(pid)  # no procfs (macOS): existence is all we can tell
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
