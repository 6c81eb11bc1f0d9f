"""Run the Debian package's real Prometheus server as a child process of a test.

It gets its own temp dir (config and TSDB), a loopback port and its own session, so stopping
it cannot leave a process or a lock file behind for the next test.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

BINARY = "/usr/bin/prometheus"


def available() -> bool:
    return shutil.which(BINARY) is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrometheusServer:
    """Scrapes `targets` ("host:port" serving /metrics) every second."""

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        port: int | None = None,
        token_file: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.token_file = token_file
        self.targets = targets
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        quoted = ", ".join(f"'{target}'" for target in self.targets)
        # A 1s scrape keeps rate() windows of a few seconds meaningful in a short test.
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: conveyor\n"
            "    metrics_path: /metrics\n"
            + (
                f"    authorization: {{credentials_file: '{self.token_file}'}}\n"
                if self.token_file
                else ""
            )
            + f"    static_configs: [{{targets: [{quoted}]}}]\n"
        )
        with (self.workdir / "prometheus.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    BINARY,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_tail()
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus did not become ready:\n" + self.log_tail())

    def wait_targets_up(self, timeout: float = 30) -> None:
        """Until every target has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            active = self.api("/api/v1/targets")["activeTargets"]
            health = {t["scrapeUrl"]: t["health"] for t in active}
            if len(health) == len(self.targets) and set(health.values()) == {"up"}:
                return
            time.sleep(0.2)
        raise AssertionError(f"prometheus targets not up: {health}\n{self.log_tail()}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=promql)
        return list(data["result"])

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_tail(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
