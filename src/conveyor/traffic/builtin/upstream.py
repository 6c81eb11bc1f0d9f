"""The router's side facing instances: one keep-alive connection pool per backend.

An ``UpstreamConnection`` carries one exchange at a time (no upstream pipelining, so a
response can never be attributed to the wrong request). It forwards response bytes to the
client the moment they arrive and parses them only to learn where the message ends and
whether the connection may be reused; it never copies or rewrites a response.

Failures are reported to the exchange owner with the one fact the retry rules need: did any
response byte arrive? Before the first byte a request may be retried elsewhere; after it the
client has already seen part of an answer and the only honest move is to cut its connection.
A streamed request body is written through ``write_body`` after ``send``; when the instance
reads it more slowly than the client sends, ``pause_writing`` tells the owner to stop
reading its client until the instance catches up.

``BackendState`` outlives route tables: ``apply()`` keeps the state (idle pool, in-flight
count) of every instance that stays in the table, so switching weights costs no reconnects,
and keeps a removed instance's state until its in-flight requests have drained.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from conveyor.traffic.builtin.outbox import Corked, Outbox
from conveyor.traffic.builtin.wire import eof_delimited_status


class ExchangeOwner(Protocol):
    """What an upstream connection reports to (the client connection that sent a request)."""

    progress: int

    def response_done(self, conn: UpstreamConnection, status: int, keep_alive: bool) -> None: ...

    def upstream_failed(self, conn: UpstreamConnection | None, reused: bool, written: bool) -> None:
        """No response byte arrived; the request may be retried."""

    def upstream_broken(self, conn: UpstreamConnection) -> None:
        """The response started but cannot be completed."""

    def upstream_writable(self, writable: bool) -> None:
        """The instance stopped (``False``) or resumed reading what is written to it."""


class BackendState:
    """One instance as the router tracks it across tables: idle pool and in-flight count."""

    __slots__ = (
        "host",
        "idle",
        "idle_timeout",
        "in_flight",
        "instance_id",
        "max_idle",
        "port",
        "removed",
    )

    def __init__(
        self, instance_id: str, host: str, port: int, *, idle_timeout: float, max_idle: int
    ) -> None:
        self.instance_id = instance_id
        self.host = host
        self.port = port
        self.idle: list[UpstreamConnection] = []
        self.in_flight = 0
        self.removed = False
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle

    def take_idle(self, now: float) -> UpstreamConnection | None:
        """The most recently used idle connection, unless it idled so long it may be stale.

        The pool is a stack: if the top connection is too old, every one below is older, so
        the whole pool is dropped. That keeps the stale-connection race (the instance closing
        an idle connection just as a request is written to it) away from the common path.
        """
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.idle_timeout:
                conn.close()
                self.close_idle()
                return None
            conn.reused = True
            return conn
        return None

    def put_idle(self, conn: UpstreamConnection, now: float) -> None:
        if self.removed or conn.closed or len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        self.idle.append(conn)

    def expire_idle(self, now: float) -> None:
        limit = now - self.idle_timeout
        stale = [conn for conn in self.idle if conn.idle_since < limit]
        for conn in stale:
            conn.close()

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    def matches(self, host: str, port: int) -> bool:
        return self.host == host and self.port == port


class _HeadWatcher:
    """Parser callbacks for a response to HEAD, whose end is its header block.

    httptools cannot be told that a response carries no body, so for the rare HEAD exchange
    the connection swaps in a parser driven by this object and swaps a fresh one back after.
    """

    __slots__ = ("conn", "connection_tokens")

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.connection_tokens = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"connection":
            self.connection_tokens += b"," + value.lower()

    def on_headers_complete(self) -> None:
        conn = self.conn
        status = conn.parser.get_status_code()
        if status < 200:
            self.connection_tokens = b""
            return
        tokens = {token.strip() for token in self.connection_tokens.split(b",")}
        if conn.parser.get_http_version() == "1.0":
            keep_alive = b"keep-alive" in tokens
        else:
            keep_alive = b"close" not in tokens
        conn.finish(status, keep_alive)


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to one backend; see the module docstring."""

    __slots__ = (
        "backend",
        "closed",
        "complete",
        "first",
        "head",
        "idle_since",
        "keep_alive",
        "out",
        "outbox",
        "owner",
        "parser",
        "reused",
        "sink",
        "status",
        "transport",
        "write_paused",
    )

    def __init__(self, backend: BackendState, outbox: Outbox) -> None:
        self.backend = backend
        self.outbox = outbox
        self.transport: asyncio.Transport | None = None
        self.out: Corked | None = None
        self.parser: Any = HttpResponseParser(self)
        self.owner: ExchangeOwner | None = None
        self.sink: Any = None
        self.first: bytes | None = None
        self.complete = False
        self.status = 0
        self.keep_alive = False
        self.head = False
        self.reused = False
        self.closed = False
        self.idle_since = 0.0
        self.write_paused = False

    # -- driven by the owner -------------------------------------------------------------

    def send(self, owner: ExchangeOwner, sink: Any, raw: bytes, head: bool) -> None:
        """Write one request; ``sink`` receives the response bytes as they arrive."""
        self.owner = owner
        self.sink = sink
        self.first = None
        if head:
            self.head = True
            self.parser = HttpResponseParser(_HeadWatcher(self))
        out = self.out
        assert out is not None
        out.write(raw)

    def write_body(self, data: bytes) -> None:
        """More of a streamed request body (after ``send`` wrote its start)."""
        out = self.out
        if out is not None and not self.closed:
            out.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abandon(self) -> None:
        """Drop the exchange without a report (the owner gave up) and the connection with it."""
        self.owner = None
        self.sink = None
        self.closed = True
        if self.out is not None:
            self.out.abort()

    def close(self) -> None:
        self.closed = True
        if self.out is not None:
            self.out.close()

    # -- parser callbacks ----------------------------------------------------------------

    def on_message_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status >= 200:  # a 1xx is an interim answer: relay it and keep waiting
            self.status = status
            self.keep_alive = parser.should_keep_alive()
            self.complete = True

    def finish(self, status: int, keep_alive: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self.complete = True

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        self.out = Corked(transport, self.outbox)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:  # bytes nobody asked for: this connection cannot be trusted
            self.close()
            return
        owner.progress += 1
        if self.first is None:
            self.first = data
        self.sink(data)
        try:
            self.parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade):
            self.abandon()
            owner.upstream_broken(self)
            return
        if self.complete:
            self.complete = False
            self.owner = None
            self.sink = None
            if self.head:
                self.head = False
                self.parser = HttpResponseParser(self)
            owner.response_done(self, self.status, self.keep_alive)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.owner is not None:
            self.owner.upstream_writable(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.owner is not None:
            self.owner.upstream_writable(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        owner = self.owner
        if owner is None:
            idle = self.backend.idle
            if self in idle:
                idle.remove(self)
            return
        self.owner = None
        self.sink = None
        if self.first is None:
            owner.upstream_failed(self, self.reused, True)
            return
        status = None if self.head else eof_delimited_status(self.first)
        if status is None:
            owner.upstream_broken(self)
        else:
            owner.response_done(self, status, False)


async def open_connection(
    backend: BackendState, timeout: float, outbox: Outbox | None
) -> UpstreamConnection:
    """A fresh connection to ``backend``; raises ``OSError`` or ``TimeoutError``."""
    loop = asyncio.get_running_loop()
    writes = outbox if outbox is not None else Outbox(loop)
    async with asyncio.timeout(timeout):
        _, conn = await loop.create_connection(
            lambda: UpstreamConnection(backend, writes), backend.host, backend.port
        )
    return conn
