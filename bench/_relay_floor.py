"""The floor under any Python + uvloop proxy, for the router benchmark's context.

Usage: python bench/_relay_floor.py LISTEN_PORT BACKEND_PORT

Not an HTTP proxy: each client connection is paired with one connection to the backend and
bytes are relayed both ways as they arrive, with no parsing, routing, metrics, retries or
pooling. Its CPU per request is what the socket work alone costs a Python process on
uvloop (the same reads and writes the router and HAProxy make); the router's distance
above it is the price of what the router does per request.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        transport = self.client.transport
        if transport is not None:
            transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_connection(
            lambda: _Upstream(self), "127.0.0.1", self.backend_port
        )
        self.upstream = upstream
        for data in self.pending:
            upstream.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def _main(port: int, backend_port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: _Client(backend_port), "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(_main(int(sys.argv[1]), int(sys.argv[2])))
