"""Real pieces for the router tests: tiny HTTP backends and a raw HTTP/1.1 client.

The backends are asyncio servers on the test's own event loop (or, where a test must kill
one with SIGKILL, a child process running ``_backend_proc.py``). They answer with an
``X-Version`` header so a test sees which version served it, and count the connections
they accepted so keep-alive reuse is observable from the outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httptools
import uvloop

from conveyor.core.model import Backend, Pool, RouteTable
from conveyor.traffic.builtin import BuiltinRouter

T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
    """Run one test body on a fresh uvloop loop, with an overall deadline."""

    async def guarded() -> T:
        try:
            return await asyncio.wait_for(main(), timeout)
        finally:  # a failed test must not leave servers behind on the loop
            for backend in list(_LIVE):
                await backend.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(guarded())


# -- backends -----------------------------------------------------------------------------


@dataclass
class BackendRequest:
    method: bytes
    path: str
    query: dict[str, list[str]]
    headers: dict[bytes, bytes]
    body: bytes


class _BackendProtocol(asyncio.Protocol):
    def __init__(self, backend: TestBackend) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.queue: asyncio.Queue[BackendRequest | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.connections += 1
        self.backend.open.add(self)
        self.worker = asyncio.get_running_loop().create_task(self.serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.open.discard(self)
        self.queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        parts = urlsplit(self.url.decode())
        self.queue.put_nowait(
            BackendRequest(
                self.parser.get_method(),
                parts.path,
                parse_qs(parts.query),
                self.headers,
                b"".join(self.body),
            )
        )

    async def serve(self) -> None:
        while True:
            request = await self.queue.get()
            if request is None or self.transport is None or self.transport.is_closing():
                return
            self.backend.requests.append(request)
            await self.backend.handler(self.backend, request, self.transport)


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def default_handler(
    backend: TestBackend, request: BackendRequest, transport: asyncio.Transport
) -> None:
    """The behaviours the proxy tests need, selected by path."""
    version = ("X-Version", backend.version)
    path, query = request.path, request.query
    is_head = request.method == b"HEAD"

    def send(status: int, body: bytes, extra: list[tuple[str, str]] | None = None) -> None:
        headers = [version, ("Content-Length", str(len(body))), *(extra or [])]
        transport.write(_head(status, headers) + (b"" if is_head else body))

    if path == "/slow":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
        send(200, b"slow")
    elif path == "/echo":
        digest = hashlib.sha256(request.body).hexdigest()
        send(200, request.body, [("X-Length", str(len(request.body))), ("X-Sha256", digest)])
    elif path == "/big":
        size = int(query.get("n", ["1048576"])[0])
        body = (bytes(range(251)) * (size // 251 + 1))[:size]
        send(200, body, [("X-Sha256", hashlib.sha256(body).hexdigest())])
    elif path == "/chunked":
        transport.write(_head(200, [version, ("Transfer-Encoding", "chunked")]))
        for piece in (b"alpha-", b"beta-", b"gamma"):
            await asyncio.sleep(0.02)
            transport.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        transport.write(b"0\r\n\r\n")
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        if status in (204, 304):
            transport.write(_head(status, [version]))
        else:
            send(status, b"status")
    elif path == "/close":
        send(200, b"bye", [("Connection", "close")])
        transport.close()
    elif path == "/eof":  # no framing: the body ends when the connection does
        transport.write(_head(200, [version, ("Connection", "close")]) + b"until-eof")
        transport.close()
    elif path == "/reset":  # read the request, then drop the connection without a word
        transport.abort()
    elif path == "/headers":
        body = repr(sorted(request.headers.items())).encode()
        send(200, body)
    else:
        send(200, backend.version.encode())


@dataclass(eq=False)
class TestBackend:
    """An HTTP server on the test's loop that identifies itself by ``version``."""

    version: str
    handler: Callable[[TestBackend, BackendRequest, asyncio.Transport], Awaitable[None]] = (
        default_handler
    )
    connections: int = 0
    requests: list[BackendRequest] = field(default_factory=list)
    open: set[_BackendProtocol] = field(default_factory=set)
    server: asyncio.AbstractServer | None = None
    port: int = 0

    __test__ = False  # not a pytest class

    async def start(self, port: int = 0) -> TestBackend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _BackendProtocol(self), "127.0.0.1", port, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]
        _LIVE.add(self)
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection (like a crashed instance)."""
        _LIVE.discard(self)
        if self.server is not None:
            self.server.close()
            self.server = None
        for proto in list(self.open):
            if proto.transport is not None:
                proto.transport.abort()
            if proto.worker is not None:
                proto.worker.cancel()
        await asyncio.sleep(0)


_LIVE: set[TestBackend] = set()


class BackendProcess:
    """A backend in a child process, so that a test can SIGKILL it."""

    def __init__(self, version: str) -> None:
        script = Path(__file__).with_name("_backend_proc.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), version],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# -- client ---------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    keep_alive: bool


class _ResponseCollector:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.head_next = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        if self.head_next and self.parser.get_status_code() >= 200:
            self.finish()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() >= 200 and not self.head_next:
            self.finish()
        elif self.parser.get_status_code() < 200:
            self.headers = {}

    def finish(self) -> None:
        self.done.append(
            Response(
                self.parser.get_status_code(),
                self.headers,
                b"".join(self.body),
                self.parser.should_keep_alive(),
            )
        )
        self.headers = {}
        self.body = []


class RawClient:
    """One client connection that writes exact bytes and parses what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.collector = _ResponseCollector()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self, head: bool = False) -> Response:
        collector = self.collector
        collector.head_next = head
        while not collector.done:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("connection closed before a complete response")
            collector.parser.feed_data(data)
            if head and collector.done:  # a HEAD answer has no body for the parser to wait on
                self.collector = _ResponseCollector()
        return collector.done.pop(0)

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Response:
        lines = [f"{method} {path} HTTP/1.1", "Host: test"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await self.read_response(head=method == "HEAD")

    async def closed_by_peer(self, timeout: float = 2.0) -> bool:
        data = await asyncio.wait_for(self.reader.read(1), timeout)
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def get(port: int, path: str = "/") -> Response:
    """One request on a fresh connection."""
    client = await RawClient.connect(port)
    try:
        return await client.request("GET", path)
    finally:
        await client.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# -- router setup ------------------------------------------------------------------------

SERVICE, ENV = "shop", "prod"


def table(*pools: tuple[str, int, Sequence[TestBackend | BackendProcess]]) -> RouteTable:
    """``table(("v1", 80, [a]), ("v2", 20, [b]))``; instance ids are ``version-port``."""
    return RouteTable(
        pools=tuple(
            Pool(
                version,
                weight,
                tuple(Backend(f"{version}-{b.port}", "127.0.0.1", b.port) for b in backends),
            )
            for version, weight, backends in pools
        )
    )


@contextlib.asynccontextmanager
async def routed(
    route: RouteTable | None = None, **options: Any
) -> AsyncIterator[tuple[BuiltinRouter, int]]:
    """A router serving ``SERVICE``/``ENV`` on a free port, closed afterwards."""
    router = BuiltinRouter(**options)
    try:
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        if route is not None:
            router.apply(SERVICE, ENV, route)
        yield router, router.bound_port(SERVICE, ENV)
    finally:
        await router.close()
