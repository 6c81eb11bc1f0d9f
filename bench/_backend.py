"""The fast HTTP backend every benchmark path talks to: uvloop + httptools, one process.

Usage: python bench/_backend.py PORT:VERSION [PORT:VERSION ...]

Each listener answers every request with a tiny 200 whose ``X-Version`` header names the
version, so one process can stand in for two versions of a service. Keeping the backend in
one process for all paths (direct, router, HAProxy) makes their ratios comparable.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import cast

import httptools
import uvloop


class _Handler(asyncio.Protocol):
    __slots__ = ("parser", "response", "transport")

    def __init__(self, response: bytes) -> None:
        self.response = response  # its body is the last three bytes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.get_method() == b"HEAD":
            self.transport.write(self.response[:-3])
        else:
            self.transport.write(self.response)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def _main(specs: list[str]) -> None:
    loop = asyncio.get_running_loop()
    for spec in specs:
        port, _, version = spec.partition(":")
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
            b"X-Version: " + version.encode() + b"\r\n\r\nok\n"
        )
        await loop.create_server(
            functools.partial(_Handler, response),
            "127.0.0.1",
            int(port),
            reuse_address=True,
            backlog=1024,
        )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(_main(sys.argv[1:]))
