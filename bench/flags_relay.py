"""A relay under thousands of SDK clients: requests/s served, and upstream calls made.

Usage: python bench/flags_relay.py [--clients 1000,10000] [--seconds 30] [--every 5]

Starts a real Conveyor server (in this process, on a temporary project with three flags)
and a real ``conveyor relay`` process syncing production from it. For each client count,
that many SDK-like pollers (one keep-alive connection each, a conditional GET every
``--every`` seconds, as ``FlagsClient`` does) run for ``--seconds``; a flag is changed
halfway so every client downloads one new set. Printed: the relay's requests/s, answers
by status, and the upstream calls the relay made meanwhile (from its /health counters).

The claim checked: upstream calls depend on the number of relays and the sync interval
only, so they are equal for 1,000 and 10,000 clients. The issue asks for 5 minutes per
run; the default here is 30 s (shortened: a 2-core machine shared with other work), and
``--seconds 300`` runs the full length.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from conveyor.load.pollers import poll
from conveyor.server.api import create_app
from conveyor.server.stack import build_stack

KEY = "bench-sdk-key-0123456789abcdef"
CONFIG = """\
project: relaybench
services:
  web: {build: {run: "true", outputs: [app]}, run: "true"}
environments:
  production: {}
flags:
  checkout: {environments: {production: {on: true, rollout: {percentage: 25, variant: "on"}}}}
  banner: {kind: string, variants: {a: x, b: y}, default: a, environments: {production: {on: true}}}
  search: {environments: {production: {on: false}}}
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--interval", default="5s", help="the relay's sync interval")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp()) / "p"
    root.mkdir(parents=True)
    (root / "conveyor.yaml").write_text(CONFIG)
    stack = build_stack(root / "conveyor.yaml", database_url=f"sqlite:///{root / 'state.db'}")
    stack.app.tokens.bootstrap(stack.layout.admin_token, "bench")
    token = stack.layout.admin_token.read_text().strip()
    server_port = _port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(stack.app, project_name="bench"),
            host="127.0.0.1",
            port=server_port,
            log_level="critical",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    relay_port = _port()
    keys = root / "keys"
    keys.write_text(KEY + "\n")
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "-C",
            str(root),
            "relay",
            "--server",
            f"http://127.0.0.1:{server_port}",
            "--env",
            "production",
            "--port",
            str(relay_port),
            "--sdk-keys",
            str(keys),
            "--interval",
            args.interval,
            "--cache-dir",
            str(root / "relay"),
        ],
        env={**os.environ, "CONVEYOR_TOKEN": token},
        stdout=subprocess.DEVNULL,
    )
    relay_url = f"http://127.0.0.1:{relay_port}"

    def health() -> dict[str, Any]:
        return dict(httpx.get(f"{relay_url}/health", timeout=10).json())

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if health()["sets"]["production"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the relay did not start")
            time.sleep(0.1)
        print(
            f"relay SDK load: each client polls every {args.every}s for {args.seconds}s "
            f"(relay sync interval {args.interval}; one flag change mid-run)"
        )
        print(
            f"{'clients':>8} {'req/s':>9} {'200':>7} {'304':>8} {'failed':>7} "
            f"{'upstream calls':>15} {'pushed':>7}"
        )
        for run, count in enumerate(int(c) for c in args.clients.split(",")):
            upstream_before = health()["upstream"]
            before = upstream_before["requests"]
            server_before = stack.app.flags.generation

            def flip(on: bool = run % 2 == 0) -> None:
                time.sleep(args.seconds / 2)
                stack.app.flags.set_state(
                    _admin(stack), "search", "production", on, "bench: a change mid-run"
                )

            flipper = threading.Thread(target=flip, daemon=True)
            flipper.start()
            result = asyncio.run(
                poll(
                    "127.0.0.1",
                    relay_port,
                    "/sdk/v1/flags/production",
                    KEY,
                    clients=count,
                    polls=0,
                    every=args.every,
                    duration=args.seconds,
                )
            )
            flipper.join()
            after = health()["upstream"]
            upstream = after["requests"] - before
            pushed = after["updates"] - upstream_before["updates"]
            print(
                f"{count:>8} {result.requests / result.seconds:>9,.0f} "
                f"{result.statuses.get(200, 0):>7} {result.statuses.get(304, 0):>8} "
                f"{result.failures:>7} {upstream:>15} {pushed:>7}"
            )
            assert stack.app.flags.generation > server_before
        print(json.dumps({"relay": health()["upstream"]}, sort_keys=True))
    finally:
        relay.terminate()
        relay.wait(timeout=15)
        server.should_exit = True
        thread.join(timeout=10)
        stack.store.close()


def _admin(stack: Any) -> Any:
    from conveyor.application import Caller

    return Caller.system()


if __name__ == "__main__":
    main()
