"""`conveyor up` / `conveyor down`: the server as a background process of this project."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conveyor.errors import ServerUnavailable
from conveyor.server.files import read_server_file, state_dir


def server_url(root: Path) -> str | None:
    info = read_server_file(root)
    if info is None or not _alive(int(info.get("pid", 0))):
        return None
    return str(info["url"])


def _alive(pid: int) -> bool:
    """Running and not a zombie (a server started by this very process may be one)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def up(root: Path, config_file: Path, *, port: int = 0, timeout: float = 30.0) -> str:
    """Start the server in the background (or find it running) and return its URL."""
    url = server_url(root)
    if url is not None and _healthy(url):
        return url
    log_path = state_dir(root) / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor",
                "-C",
                str(root),
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
            cwd=root,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(
                f"the server exited at start (code {process.returncode})",
                hint=f"see {log_path} for why",
            )
        url = server_url(root)
        if url is not None and _healthy(url):
            return url
        time.sleep(0.1)
    raise ServerUnavailable(
        f"the server did not answer within {timeout:.0f}s", hint=f"see {log_path}"
    )


def down(root: Path, *, timeout: float = 60.0) -> int | None:
    """Stop the server (it stops its instances); returns the pid stopped, or None."""
    info = read_server_file(root)
    pid = int(info.get("pid", 0)) if info else 0
    if not _alive(pid):
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return pid


def stop_leftovers(root: Path, project: str) -> int:
    """Stop instances a SIGKILLed server left running (nothing to do after a clean `down`)."""
    import asyncio

    from conveyor.runtime.local import LocalTarget

    runtime_dir = root / ".conveyor" / "runtime"
    if not (runtime_dir / "instances").exists():
        return 0

    async def stop_all() -> int:
        target = LocalTarget(runtime_dir)
        await target.start()
        count = len(target.all_instances())
        await target.close(stop_instances=True)
        return count

    return asyncio.run(stop_all())
