"""Run a relay: sync, serve, forward outcomes; stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from conveyor.relay.app import create_relay_app
from conveyor.relay.cache import FlagCache
from conveyor.relay.outcomes import Outcomes
from conveyor.relay.upstream import Upstream

log = logging.getLogger("conveyor.relay")


@dataclass(frozen=True)
class RelayConfig:
    server: str
    token: str
    envs: list[str]
    keys: list[str]
    host: str = "127.0.0.1"
    port: int = 8787
    cache_dir: Path | None = None
    interval: float = 5.0


async def forward(upstream: Upstream, outcomes: Outcomes, interval: float) -> None:
    """Every ``interval``: one upstream call with everything SDKs reported meanwhile."""
    while True:
        await asyncio.sleep(interval)
        rows = outcomes.drain()
        if rows:
            await upstream.post("/api/v1/flags/outcomes", {"counts": rows})


async def run_relay(config: RelayConfig, *, ready: asyncio.Event | None = None) -> None:
    cache = FlagCache(config.cache_dir)
    upstream = Upstream(config.server, config.token, config.envs, cache, interval=config.interval)
    outcomes = Outcomes()
    app, _ = create_relay_app(cache, upstream, outcomes, config.envs, config.keys)
    await upstream.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: without it, a response's headers and body leave as two
    # segments and the second waits for the client's delayed ACK (40 ms per kept-alive
    # request — 25 requests a second per connection).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((config.host, config.port))
    sock.listen(2048)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            backlog=2048,
            timeout_keep_alive=30,
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    forwarder = asyncio.create_task(forward(upstream, outcomes, config.interval))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if ready is not None:
            ready.set()
        print(
            f"relay serving {', '.join(config.envs)} on http://{config.host}:{config.port}",
            flush=True,
        )
        await serving
    finally:
        forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forwarder
        await upstream.close()
        sock.close()
