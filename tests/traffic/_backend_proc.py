"""A test backend in its own process (so it can be SIGKILLed): prints its port, then serves.

Usage: python _backend_proc.py VERSION

Standalone on purpose (no test imports): it answers ``/slow?s=N`` after N seconds and
anything else at once, always with ``X-Version: VERSION``, keeping connections alive.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools
import uvloop


class _Handler(asyncio.Protocol):
    def __init__(self, version: bytes) -> None:
        self.version = version
        self.parser: Any = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.url = b""
        self.pending: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        parts = urlsplit(self.url.decode())
        delay = float(parse_qs(parts.query).get("s", ["0"])[0]) if parts.path == "/slow" else 0
        body = b"slow" if delay else self.version
        response = b"HTTP/1.1 200 OK\r\nX-Version: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            self.version,
            len(body),
            body,
        )
        asyncio.get_running_loop().call_later(delay, self.transport.write, response)


async def main(version: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Handler(version.encode()), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
