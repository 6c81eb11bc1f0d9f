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


class ServerProcess:
    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 20) -> None:
        info = self.root / ".conveyor" / "server.json"
        info.unlink(missing_ok=True)
        with (self.root / "server-test.log").open("ab") as log:
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
            if info.exists():
                self.url = json.loads(info.read_text())["url"]
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

    def log_tail(self) -> str:
        path = self.root / "server-test.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.url}{path}", json=body, timeout=30)
        assert response.status_code < 300, response.text
        return response.json()


def project_processes(project: str) -> list[int]:
    """Pids of live processes whose environment names this project (instances)."""
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
        if f"CONVEYOR_PROJECT={project}".encode() in environ.split(b"\0"):
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
