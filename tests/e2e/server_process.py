"""Drive a real `conveyor server` child process the way a user's CLI does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from conveyor.runtime.local.procfs import STATE_DIR_VAR


class ServerProcess:
    def __init__(
        self, root: Path, env: dict[str, str] | None = None, log_name: str = "server-test.log"
    ) -> None:
        self.root = root
        self.log_name = log_name
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 20) -> None:
        info = self.root / ".conveyor" / "server.json"
        info.unlink(missing_ok=True)
        with (self.root / self.log_name).open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "-C", str(self.root), "server"],
                stdout=log,
                stderr=log,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_tail()
            try:
                published = json.loads(info.read_text())
            except (OSError, ValueError):  # not there yet, or being written
                published = {}
            # servers sharing a store on one host share the file: wait for this one's entry
            if published.get("pid") == self.process.pid:
                self.url = published["url"]
                try:
                    if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise AssertionError("server did not start:\n" + self.log_tail())

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def down(self) -> dict[str, Any]:
        """`conveyor down`: the server, then the router process and every instance (stopping
        the server alone leaves the data plane running)."""
        self.stop()
        out = subprocess.run(
            [sys.executable, "-m", "conveyor", "-C", str(self.root), "down", "--json"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def log_tail(self) -> str:
        path = self.root / self.log_name
        return path.read_text()[-3000:] if path.exists() else ""

    @property
    def headers(self) -> dict[str, str]:
        """The admin token the server made for the local user at its first start."""
        token = (self.root / ".conveyor" / "admin.token").read_text().strip()
        return {"authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10, headers=self.headers)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.url}{path}", json=body, timeout=30, headers=self.headers)
        assert response.status_code < 300, response.text
        return response.json()


def router_pid(root: Path) -> int | None:
    """The pid of the project's router process, if one runs (its lock is held)."""
    from conveyor.traffic.builtin.files import RouterPaths, lock_held, read_state

    paths = RouterPaths.of(root / ".conveyor" / "routers")
    if not lock_held(paths.lock):
        return None
    state = read_state(paths) or {}
    pid = state.get("pid")
    return pid if isinstance(pid, int) else None


def project_processes(where: Path | str) -> list[int]:
    """Pids of live instance processes of one project: those whose runtime state dir lies
    under ``where`` (a project directory), or, given a name, those of the project of that
    name (use a name no other test uses: tests and test runs on one machine run at once)."""
    wanted = (
        (lambda item: item.startswith(f"{STATE_DIR_VAR}={where.resolve()}/".encode()))
        if isinstance(where, Path)
        else (lambda item: item == f"CONVEYOR_PROJECT={where}".encode())
    )
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            continue
        if any(wanted(item) for item in environ.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def build(root: Path, service: str = "catalog") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "conveyor", "-C", str(root), "build", service, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(out.stdout)["artifact"]["digest"])
