"""CLI start-up: what `conveyor` costs on its own, and beside the API's own answer.

Run: .venv/bin/python bench/cli_startup.py [--services 36] [--runs 10]

A temporary project of --services services (each a one-instance `python3 -m http.server`
with its own artifact) is built and deployed through a real `conveyor up` server; then
each row is timed as a fresh process, --runs times, and the median is reported:

- ``python -c pass``: the floor, an interpreter that does nothing;
- ``conveyor --version`` and ``conveyor --help``: the command with no work to do;
- ``conveyor status`` (the table of every service) and ``conveyor status --json``;
- the API alone: the same ``GET /api/v1/status`` made with ``http.client`` from this
  process, on a new connection each time (what the server takes to answer).

Targets (issue 10): --version and --help under 150 ms; status at most 150 ms more than
the API alone. The command is the ``conveyor`` console script next to this interpreter
(``python -m conveyor`` when there is none); with ``PYTHONPATH=src`` it runs this tree.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

TARGET_MS = 150.0
SETTLE = 12.0  # seconds: longer than a release's verification window
SCRIPT = Path(sys.executable).with_name("conveyor")  # the console script, as users type it
CONVEYOR = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "conveyor"]
SERVICE = """\
  s{index:02d}:
    path: services/s{index:02d}
    build: {{run: "true", outputs: [VERSION]}}
    run: "python3 -m http.server $PORT --bind 127.0.0.1"
    instances: 1
"""


def project(root: Path, services: int) -> None:
    lines = ["project: clibench", "services:"]
    for index in range(services):
        folder = root / "services" / f"s{index:02d}"
        folder.mkdir(parents=True)
        (folder / "VERSION").write_text(f"s{index:02d} v1\n")  # a digest of its own
        lines.append(SERVICE.format(index=index).rstrip("\n"))
    lines += ["environments:", "  bench: {strategy: recreate}", ""]
    (root / "conveyor.yaml").write_text("\n".join(lines))


def conveyor(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*CONVEYOR, "-C", str(root), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    if check and done.returncode != 0:
        raise SystemExit(f"conveyor {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def deploy_all(root: Path, services: int, timeout: float = 300.0) -> float:
    """Build and deploy every service; returns the seconds until all are ready."""
    started = time.monotonic()
    for index in range(services):
        conveyor(root, "deploy", f"s{index:02d}", "--env", "bench", "--build")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = json.loads(conveyor(root, "status", "--json").stdout)
        ready = [r for r in rows if r["phase"] == "succeeded" and r["ready"] >= r["desired"]]
        if len(ready) == services:
            return time.monotonic() - started
        time.sleep(1.0)
    raise SystemExit(f"not every service was ready after {timeout:.0f}s")


def admin_token(root: Path) -> str:
    from conveyor.layout import Layout

    return Layout(root).admin_token.read_text().strip()


def measure(runs: int, rows: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Milliseconds per run of each row, the rows taken in turn (drift hits them all)."""
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(runs):
        for name, action in rows.items():
            started = time.perf_counter()
            action()
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def process(argv: list[str]) -> Callable[[], object]:
    def run() -> None:
        done = subprocess.run(argv, capture_output=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr!r}")

    return run


def api_call(url: str, token: str) -> Callable[[], object]:
    """The request `conveyor status` makes, with the same token, from this process."""
    parts = urlsplit(url)
    headers = {"x-conveyor-actor": "bench@cli", "Authorization": f"Bearer {token}"}

    def call() -> None:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        try:
            connection.request("GET", "/api/v1/status", headers=headers)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise SystemExit(f"GET /api/v1/status answered {response.status}: {body[:200]!r}")

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--services", type=int, default=36)
    parser.add_argument("--runs", type=int, default=10)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="conveyor-clibench-") as tmp:
        root = Path(tmp)
        project(root, options.services)
        url = json.loads(conveyor(root, "up", "--json").stdout)["url"]
        try:
            took = deploy_all(root, options.services)
            print(f"{options.services} services built and deployed in {took:.0f}s; {url}")
            print(f"command: {' '.join(CONVEYOR)}\n")
            rows = {
                "python -c pass (floor)": process([sys.executable, "-c", "pass"]),
                "conveyor --version": process([*CONVEYOR, "--version"]),
                "conveyor --help": process([*CONVEYOR, "--help"]),
                "API alone: GET /api/v1/status": api_call(url, admin_token(root)),
                "conveyor status": process([*CONVEYOR, "-C", str(root), "status"]),
                "conveyor status --json": process([*CONVEYOR, "-C", str(root), "status", "--json"]),
            }
            time.sleep(SETTLE)  # the last rollouts' verification windows close
            for action in rows.values():
                action()  # warm the file cache
            samples = measure(options.runs, rows)
        finally:
            conveyor(root, "down", check=False)

    results = {name: statistics.median(values) for name, values in samples.items()}
    floor = results["python -c pass (floor)"]
    api = results["API alone: GET /api/v1/status"]
    print(f"median of {options.runs} runs, {options.services} services")
    print(f"{'':34} {'median':>9} {'x floor':>8} {'- API':>9}")
    for name, median in results.items():
        beyond = f"{median - api:+8.1f}" if name.startswith("conveyor status") else ""
        print(f"{name:34} {median:7.1f}ms {median / floor:7.1f}x {beyond:>9}")
    print()
    checks = {
        "--version under 150 ms": results["conveyor --version"] < TARGET_MS,
        "--help under 150 ms": results["conveyor --help"] < TARGET_MS,
        "status at most 150 ms over the API": results["conveyor status"] - api <= TARGET_MS,
    }
    for check, ok in checks.items():
        print(f"{'ok ' if ok else 'MISSED'} {check}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "cli_startup.json").write_text(json.dumps(samples, indent=2))


if __name__ == "__main__":
    main()
