"""The router's side facing users: one ``ClientConnection`` per accepted connection.

Shape of the hot path, and why:

* Requests are buffered whole before a backend is chosen. That makes every retry possible
  (the bytes can be written again elsewhere) at the cost of memory bounded by
  ``max_request_bytes``.
* A request is forwarded as the exact bytes the client sent. The request parser only needs
  two callbacks for that (message begin and complete): when a read ends exactly at the end
  of a single request, the bytes read since the previous boundary *are* the request. Only a
  client that pipelines (two requests in one read, or one starting in the middle of a read)
  needs the bytes split, and httptools reports no offsets; such a connection switches for
  good to a ``Collector`` that parses everything and re-serialises each request
  (same method, target, version and headers; a chunked body is re-sent as one chunk).
* Requests are answered strictly in order, one exchange at a time, so pipelined responses
  can never overtake each other.
* Times are one ``perf_counter()`` when a request is complete and one when its response is;
  timeouts are enforced by the router's sweeper reading ``progress``/``wait_since`` rather
  than by a timer per request.

Retry rules (what makes deploys invisible to users): a failure before any response byte is
retried at most ``MAX_RETRIES`` times on other backends (same version first), or once on a
fresh connection to the same backend when a reused keep-alive connection turned out closed.
A request that was written and is not idempotent (GET/HEAD/OPTIONS) is not retried, because
the instance may have acted on it; it gets a 502.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import perf_counter
from typing import Any, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from conveyor.traffic.builtin.metrics import VersionStats
from conveyor.traffic.builtin.outbox import Corked, Outbox
from conveyor.traffic.builtin.table import CompiledPool, TableSlot
from conveyor.traffic.builtin.upstream import BackendState, UpstreamConnection, open_connection
from conveyor.traffic.builtin.wire import CONTINUE, Collector, Request, canned_response

MAX_RETRIES = 2


class ProxyShared:
    """Limits and the live connection set, shared by every listener of one router."""

    __slots__ = (
        "client_idle_timeout",
        "clients",
        "connect_timeout",
        "max_pipeline",
        "max_request_bytes",
        "outbox",
        "response_timeout",
    )

    def __init__(
        self,
        *,
        connect_timeout: float,
        response_timeout: float,
        client_idle_timeout: float,
        max_request_bytes: int,
        max_pipeline: int = 32,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.client_idle_timeout = client_idle_timeout
        self.max_request_bytes = max_request_bytes
        self.max_pipeline = max_pipeline
        self.clients: set[ClientConnection] = set()
        self.outbox: Outbox | None = None  # set by the router once it knows its loop


class ClientConnection(asyncio.Protocol):
    """One user connection: parse, choose, forward, relay, account; see module docstring."""

    __slots__ = (
        "_attempt_no",
        "_backend",
        "_closed",
        "_collector",
        "_connecting",
        "_continue_checked",
        "_continue_pending",
        "_done",
        "_in_message",
        "_out",
        "_parser",
        "_pool",
        "_queue",
        "_reading_paused",
        "_req",
        "_retries",
        "_shared",
        "_slot",
        "_span",
        "_span_size",
        "_stop",
        "_t0",
        "_tried",
        "_upstream",
        "_write",
        "_writing_paused",
        "progress",
        "seen_progress",
        "transport",
        "wait_since",
    )

    def __init__(self, slot: TableSlot, shared: ProxyShared) -> None:
        self._slot = slot
        self._shared = shared
        self._parser: Any = HttpRequestParser(self)
        self._collector: Collector | None = None
        self._span: list[bytes] = []
        self._span_size = 0
        self._in_message = False
        self._continue_checked = False
        self._continue_pending = False
        self._done: list[Request] = []
        self._queue: deque[Request] = deque()
        self._stop = False
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self.transport: asyncio.Transport | None = None
        self._write: Any = None
        self._out: Corked | None = None
        # the exchange in progress
        self._req: Request | None = None
        self._pool: CompiledPool | None = None
        self._backend: BackendState | None = None
        self._upstream: UpstreamConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._attempt_no = 0
        self._retries = 0
        self._tried: list[BackendState] | None = None
        self._t0 = 0.0
        self.progress = 0
        self.seen_progress = 0
        self.wait_since = 0.0

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        outbox = self._shared.outbox
        assert outbox is not None
        self._out = Corked(transport, outbox)
        self._write = self._out.write
        self.wait_since = perf_counter()
        self._shared.clients.add(self)

    def data_received(self, data: bytes) -> None:
        if self._stop:
            return
        self._span_size += len(data)
        collector = self._collector
        if collector is not None:
            self._feed_collector(collector, data)
            return
        span = self._span
        span.append(data)
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade):
            self._go_slow()
            return
        done = self._done
        if self._in_message:
            if done:
                self._go_slow()
            elif self._span_size > self._shared.max_request_bytes:
                self._accept([Request.failure(413, "request too large")])
            elif not self._continue_checked:
                self._check_expect()
            return
        self._span_size = 0
        if len(done) != 1:
            if done:
                self._go_slow()
            else:
                span.clear()  # only blank lines between requests
            return
        request = done.pop()
        request.raw = data if len(span) == 1 else b"".join(span)
        span.clear()
        if self._req is None and request.keep_alive:
            self._start(request)
        else:
            self._accept([request])

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stop = True
        self._shared.clients.discard(self)
        self._attempt_no += 1
        backend, pool = self._backend, self._pool
        if backend is not None and pool is not None:
            backend.in_flight -= 1
            pool.stats.in_flight -= 1
        self._backend = None
        conn, self._upstream = self._upstream, None
        if conn is not None:
            conn.abandon()
        self._req = None
        self._queue.clear()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._upstream is not None:
            self._upstream.resume_reading()

    # -- request parser callbacks (fast mode) --------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._continue_checked = False

    def on_message_complete(self) -> None:
        parser = self._parser
        self._in_message = False
        self._done.append(Request(parser.get_method(), parser.should_keep_alive()))

    # -- request intake ------------------------------------------------------------------

    def _go_slow(self) -> None:
        raw = b"".join(self._span)
        self._span.clear()
        self._done.clear()
        collector = self._collector = Collector()
        self._feed_collector(collector, raw)

    def _feed_collector(self, collector: Collector, data: bytes) -> None:
        requests, failure = collector.feed(data)
        if requests:
            self._span_size = 0
        elif collector.in_message and self._span_size > self._shared.max_request_bytes:
            failure = Request.failure(413, "request too large")
        if failure is not None:
            requests.append(failure)
        if requests:
            self._accept(requests)

    def _check_expect(self) -> None:
        """Answer ``Expect: 100-continue`` ourselves: the body must arrive before we choose."""
        span = self._span
        head = span[0] if len(span) == 1 else b"".join(span)
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return
        self._continue_checked = True
        block = head[:end].lower()
        if b"\nexpect:" in block and b"100-continue" in block:
            if self._req is None and not self._queue:
                self._write(CONTINUE)
            else:
                self._continue_pending = True

    def _accept(self, requests: list[Request]) -> None:
        queue = self._queue
        for request in requests:
            if self._stop:
                break
            if not request.keep_alive:  # nothing after a closing request is ever answered
                self._stop = True
            if self._req is None:
                self._start(request)
            else:
                queue.append(request)
        transport = self.transport
        if (
            transport is not None
            and not self._reading_paused
            and not self._closed
            and (self._stop or len(queue) >= self._shared.max_pipeline)
        ):
            self._reading_paused = True
            transport.pause_reading()

    def _next(self) -> None:
        queue = self._queue
        if queue:
            self._start(queue.popleft())
            if (
                self._reading_paused
                and not self._stop
                and len(queue) < self._shared.max_pipeline // 2
                and self.transport is not None
            ):
                self._reading_paused = False
                self.transport.resume_reading()
        elif self._continue_pending:
            self._continue_pending = False
            self._write(CONTINUE)

    # -- the exchange --------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        self._req = request
        self.progress = 0
        now = self._t0 = perf_counter()
        if request.error:
            self._req = None
            self._write(canned_response(request.error, request.detail, False, request.head))
            self._shutdown()
            return
        table = self._slot.table
        pool = table.choose() if table.header is None else table.choose_for(request.raw)
        if pool is None:
            self._pool = None
            self._fail(table.none_stats, 503, f"no available instance of {self._slot.label}")
            return
        self._retries = 0
        self._tried = None
        self._attempt(pool, pool.next_backend(), now, False)

    def _attempt(self, pool: CompiledPool, backend: BackendState, now: float, fresh: bool) -> None:
        self._pool = pool
        self._backend = backend
        backend.in_flight += 1
        pool.stats.in_flight += 1
        self.progress = 0
        self.seen_progress = 0
        self.wait_since = now
        conn = None if fresh else backend.take_idle(now)
        if conn is None:
            self._attempt_no += 1
            self._connecting = asyncio.get_running_loop().create_task(
                self._open(backend, self._attempt_no)
            )
            return
        self._upstream = conn
        request = self._req
        assert request is not None
        conn.send(self, self._write, request.raw, request.head)
        if self._writing_paused:
            conn.pause_reading()

    async def _open(self, backend: BackendState, attempt_no: int) -> None:
        try:
            conn = await open_connection(backend, self._shared.connect_timeout, self._shared.outbox)
        except (OSError, TimeoutError):
            if attempt_no == self._attempt_no and not self._closed:
                self._connecting = None
                self.upstream_failed(None, False, False)
            return
        if attempt_no != self._attempt_no or self._closed or self._req is None:
            backend.put_idle(conn, perf_counter())  # still useful to the next request
            return
        self._connecting = None
        self._upstream = conn
        conn.send(self, self._write, self._req.raw, self._req.head)
        if self._writing_paused:
            conn.pause_reading()

    def response_done(self, conn: UpstreamConnection, status: int, keep_alive: bool) -> None:
        now = perf_counter()
        backend = self._backend
        pool = self._pool
        assert backend is not None and pool is not None
        backend.in_flight -= 1
        stats = pool.stats
        stats.in_flight -= 1
        stats.observe(status, now - self._t0)
        self._upstream = None
        self._backend = None
        if self._writing_paused:
            conn.resume_reading()
        request = self._req
        self._req = None
        self.wait_since = now
        # A request that asked to close may have the instance close this connection too.
        if keep_alive and request is not None and request.keep_alive:
            backend.put_idle(conn, now)
        else:
            conn.close()
            self._shutdown()
            return
        if self._queue or self._continue_pending:
            self._next()

    def upstream_failed(self, conn: UpstreamConnection | None, reused: bool, written: bool) -> None:
        backend, pool, request = self._backend, self._pool, self._req
        assert backend is not None and pool is not None and request is not None
        backend.in_flight -= 1
        pool.stats.in_flight -= 1
        self._upstream = None
        self._backend = None
        if conn is not None:
            conn.close()
        if written and not request.retry_safe:
            self._fail(pool.stats, 502, "the instance closed the connection without answering")
            return
        now = perf_counter()
        if reused and not backend.removed:
            self._attempt(pool, backend, now, True)
            return
        tried = self._tried
        if tried is None:
            tried = self._tried = []
        tried.append(backend)
        found = None
        if self._retries < MAX_RETRIES:
            found = self._slot.table.retry(pool.version, tried)
        if found is None:
            self._fail(pool.stats, 502, "no instance could be reached")
            return
        self._retries += 1
        self._attempt(found[0], found[1], now, False)

    def upstream_broken(self, conn: UpstreamConnection) -> None:
        backend, pool = self._backend, self._pool
        assert backend is not None and pool is not None
        backend.in_flight -= 1
        pool.stats.in_flight -= 1
        self._upstream = None
        self._backend = None
        self._fail(pool.stats, 502, "the instance broke off its response")

    def check_timeouts(self, now: float) -> None:
        """Called by the router's sweeper a few times a second."""
        shared = self._shared
        if self._backend is None:
            if (
                self._req is None
                and not self._in_message
                and now - self.wait_since > shared.client_idle_timeout
            ):
                self._shutdown()
            return
        if self.progress != self.seen_progress or self._writing_paused:
            self.seen_progress = self.progress
            self.wait_since = now
            return
        if now - self.wait_since < shared.response_timeout:
            return
        backend, pool = self._backend, self._pool
        assert pool is not None
        backend.in_flight -= 1
        pool.stats.in_flight -= 1
        self._backend = None
        self._attempt_no += 1  # a connection still being opened will be parked instead
        conn, self._upstream = self._upstream, None
        if conn is not None:
            conn.abandon()
        self._fail(pool.stats, 504, "the instance did not answer in time")

    def _fail(self, stats: VersionStats, status: int, detail: str) -> None:
        stats.fail(perf_counter() - self._t0)
        request = self._req
        self._req = None
        self._pool = None
        if request is None or self.progress or self._closed:
            self._shutdown()  # part of a response is already out: cut the connection
            return
        self._write(canned_response(status, detail, request.keep_alive, request.head))
        if not request.keep_alive:
            self._shutdown()
            return
        self._next()

    def _shutdown(self) -> None:
        self._stop = True
        if self._out is not None and not self._closed:
            self._out.close()

    @property
    def busy(self) -> bool:
        """A request is being answered or waits its turn."""
        return self._req is not None or bool(self._queue)

    def close(self) -> None:
        """Close now (router shutdown); an exchange in progress is abandoned."""
        self._shutdown()
