"""Real pieces for the provider tests: a fake clock, tiny HTTP servers, a load loop.

The servers are real sockets on 127.0.0.1. ``Backend`` is an asyncio HTTP/1.1 server with
keep-alive (the built-in router reuses upstream connections) whose error rate and latency a
test sets; ``JsonServer`` runs in a thread so a Prometheus process can scrape it while the
test's own event loop is not running.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(main(), timeout))


@dataclass
class Clock:
    """The controller's clock in tests: moves only when told to."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(eq=False)
class Backend:
    """One version's instance: every ``error_every``-th request gets a 500, each takes ``delay``."""

    version: str
    error_every: int = 0
    delay: float = 0.0
    served: int = 0
    port: int = 0
    server: asyncio.AbstractServer | None = field(default=None, repr=False)
    writers: set[asyncio.StreamWriter] = field(default_factory=set, repr=False)

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                self.served += 1
                failing = self.error_every and self.served % self.error_every == 0
                if self.delay:
                    await asyncio.sleep(self.delay)
                status = b"500 Internal Server Error" if failing else b"200 OK"
                body = self.version.encode()
                writer.write(
                    b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


async def send(port: int, requests: int, concurrency: int = 8) -> None:
    """``requests`` GETs through the router on ``port``, ``concurrency`` at a time."""
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:

        async def worker() -> None:
            for _ in remaining:
                await client.get("/")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


Handler = Callable[[str], tuple[int, str, bytes]]  # path -> (status, content type, body)


class JsonServer:
    """A threaded HTTP server answering GETs through ``handler``; usable without a loop."""

    def __init__(self, handler: Handler) -> None:
        serve = handler

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, content_type, body = serve(self.path)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
