"""The router's side facing users: one ``ClientConnection`` per accepted connection.

Shape of the hot path, and why:

* Requests up to ``RouterLimits.buffer_body_bytes`` are buffered whole before a backend is
  chosen. That makes every retry possible (the bytes can be written again elsewhere).
  A larger body is streamed: the request is handed on with its start, the client is not
  read further until the upstream connection is open (so a connection failure can still
  be retried), then the rest flows through with back-pressure both ways. The reasons are
  in ``limits``' docstring.
* A request is forwarded as the exact bytes the client sent. The request parser only needs
  two callbacks for that (message begin and complete): when a read ends exactly at the end
  of a single request, the bytes read since the previous boundary *are* the request. Only a
  client that pipelines (two requests in one read, or one starting in the middle of a read)
  or sends a body to stream needs the bytes split, and httptools reports no offsets; such a
  connection switches to a ``Collector`` that parses everything and re-serialises each
  request (same method, target, version and headers; a chunked body is re-sent as one
  chunk, or chunk by chunk when streamed). A pipelining connection stays there for good; a
  streaming one comes back once a read ends with the streamed request.
* Limits on the head cost the fast path one comparison: a request short enough that it
  cannot break them (``RouterLimits.head_check_above``) is not inspected; a longer one is
  checked on its raw bytes (``wire.check_request``: one pass counting line feeds, more only
  when that is not enough), a head arriving over several reads at each read until it is
  complete (``wire.check_head``).
* Requests are answered strictly in order, one exchange at a time, so pipelined responses
  can never overtake each other.
* Times are one ``perf_counter()`` when a request is complete and one when its response is;
  timeouts (the head, a stalled body, idle connections, silent instances) are enforced by
  the router's sweeper reading counters and flags, rather than by a timer per request.

Retry rules (what makes deploys invisible to users): a failure before any response byte is
retried at most ``MAX_RETRIES`` times on other backends (same version first), or once on a
fresh connection to the same backend when a reused keep-alive connection turned out closed.
A request that was written and is not idempotent (GET/HEAD/OPTIONS), or whose streamed body
has started to flow, is not retried, because the instance may have acted on it or the bytes
are gone; it gets a 502.

A canary's failures (what makes a bad canary invisible to users): while the table names a
stable version, every other pool is a canary (``CompiledPool.canary``). A canary attempt
that fails is counted for the canary as what it was (the judges must see it) and, when
``core.retry`` allows, the request is sent once to stable: a refused connection always
(nothing was sent), a request of the policy's methods with a buffered body when the canary
dropped the connection before answering or answered 5xx, if the retry budget has room. To
see a 5xx before the user does, the response of such a request is held back until its
status line is read (``_hold``; one set lookup decides whether a request needs it); a 5xx
to retry is then read to its end and thrown away, so the keep-alive connection survives.
A request sent to a version by the header route is never retried: whoever asked for that
version is shown what it does.

A final error answer of the router's own (400, 408, 413, 431, ...) is followed by a
lingering close: the router sends FIN and reads and discards what the client still sends
for ``RouterLimits.linger_timeout``, so that the answer is not destroyed by a TCP reset.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from conveyor.core.retry import RetryKind, retry_kind
from conveyor.traffic.builtin.limits import RouterLimits
from conveyor.traffic.builtin.metrics import VersionStats
from conveyor.traffic.builtin.outbox import Corked, Outbox
from conveyor.traffic.builtin.table import CompiledPool, TableSlot
from conveyor.traffic.builtin.upstream import BackendState, UpstreamConnection, open_connection
from conveyor.traffic.builtin.wire import (
    CONTINUE,
    Collector,
    Request,
    canned_response,
    check_head,
    check_request,
    declared_length,
    head_end,
    response_status,
)

MAX_RETRIES = 2


def _discard(data: bytes) -> None:
    """Sink of a canary's 5xx that stable will answer instead: the user never sees it."""


class ProxyShared:
    """Limits, connection counts and the live connection set, shared by every listener."""

    __slots__ = (
        "budget",
        "check_above",
        "clients",
        "connect_timeout",
        "limits",
        "open",
        "outbox",
        "refusing",
        "response_timeout",
        "stream_above",
    )

    def __init__(
        self,
        *,
        connect_timeout: float,
        response_timeout: float,
        limits: RouterLimits,
        budget: int,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.limits = limits
        self.check_above = limits.head_check_above
        # a partial request larger than this leaves the fast path (to be streamed or refused)
        self.stream_above = min(limits.buffer_body_bytes, limits.max_body_bytes)
        self.budget = budget  # client connections the whole router may hold
        self.open = 0
        self.refusing = 0
        self.clients: set[ClientConnection] = set()
        self.outbox: Outbox | None = None  # set by the router once it knows its loop


class ClientConnection(asyncio.Protocol):
    """One user connection: parse, choose, forward, relay, account; see module docstring."""

    __slots__ = (
        "_attempt_no",
        "_backend",
        "_body_seen",
        "_body_since",
        "_closed",
        "_collector",
        "_connecting",
        "_continue_pending",
        "_done",
        "_head_done",
        "_head_since",
        "_held",
        "_in_message",
        "_lingering",
        "_out",
        "_parser",
        "_pool",
        "_queue",
        "_reading_paused",
        "_release",
        "_req",
        "_retried",
        "_retries",
        "_retry_to",
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

    def __init__(
        self, slot: TableSlot, shared: ProxyShared, release: Callable[[], None] | None = None
    ) -> None:
        self._slot = slot
        self._shared = shared
        self._release = release  # gives the connection's admission slot back
        self._parser: Any = HttpRequestParser(self)
        self._collector: Collector | None = None
        self._span: list[bytes] = []
        self._span_size = 0
        self._in_message = False
        self._head_done = False
        self._head_since = 0.0  # when the sweeper first saw the current head incomplete
        self._body_seen = -1
        self._body_since = 0.0
        self._continue_pending = False
        self._done: list[Request] = []
        self._queue: deque[Request] = deque()
        self._stop = False
        self._closed = False
        self._lingering = False
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
        self._retried = False  # this request was sent to stable after a canary failure
        self._retry_to: CompiledPool | None = None  # the canary's 5xx is being discarded
        self._held: list[bytes] | None = None  # response bytes held until the status is known
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
        if self._stop and not self._streaming_in():
            return  # closing: what the client still sends is thrown away
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
                return
            if not self._head_done:
                self._check_head()
                if not self._head_done or self._stop:
                    return
            if self._span_size > self._shared.stream_above:
                self._go_slow()
            return
        size = self._span_size
        self._span_size = 0
        if self._head_since:
            self._head_since = 0.0
        if len(done) != 1:
            if done:
                self._go_slow()
            else:
                span.clear()  # only blank lines between requests
            return
        request = done.pop()
        raw = data if len(span) == 1 else b"".join(span)
        span.clear()
        if size > self._shared.check_above:
            problem = check_request(raw, self._shared.limits)
            if problem is not None:
                self._refuse(Request.failure(*problem))
                return
        request.raw = raw
        if self._req is None and request.keep_alive:
            self._start(request)
        else:
            self._accept([request])

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stop = True
        self._shared.clients.discard(self)
        if self._release is not None:
            self._release()
            self._release = None
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
        self._head_done = False

    def on_message_complete(self) -> None:
        parser = self._parser
        self._in_message = False
        self._done.append(Request(parser.get_method(), parser.should_keep_alive()))

    # -- request intake ------------------------------------------------------------------

    def _go_slow(self) -> None:
        raw = b"".join(self._span)
        self._span.clear()
        self._done.clear()
        self._in_message = False  # the fast parser is dropped mid-message
        collector = self._collector = Collector(self._shared.limits)
        self._feed_collector(collector, raw)

    def _feed_collector(self, collector: Collector, data: bytes) -> None:
        ended = collector.ended
        requests, failure = collector.feed(data)
        if requests or collector.ended != ended:
            self._span_size = 0  # from here on it counts the bytes of the current request
        elif collector.in_head and self._span_size > self._shared.limits.max_head_bytes:
            # one header field still arriving: httptools reports it only once complete
            limit = self._shared.limits.max_head_bytes
            failure = Request.failure(431, f"the request head is larger than {limit} bytes")
        if requests:
            self._accept(requests)
        if failure is not None:
            self._refuse(failure)
            return
        if self._head_since and not collector.in_head:
            self._head_since = 0.0
        if collector.streamed and not collector.in_message and self._collector is collector:
            # a read ended with the streamed request: back to the fast path
            self._collector = None
            self._parser = HttpRequestParser(self)
            self._span_size = 0
        self._sync_reading()

    def _check_head(self) -> None:
        """A head arriving over several reads: its limits, then ``Expect: 100-continue``.

        The router answers 100 itself (the body must arrive before a backend is chosen),
        unless the declared body is too large, which gets its 413 before the body is sent.
        """
        span = self._span
        data = span[0] if len(span) == 1 else b"".join(span)
        limits = self._shared.limits
        problem = check_head(data, limits)
        if problem is not None:
            self._refuse(Request.failure(*problem))
            return
        end = head_end(data)
        if end < 0:
            return
        self._head_done = True
        self._head_since = 0.0
        block = data[:end].lower()
        if declared_length(block) > limits.max_body_bytes:
            limit = limits.max_body_bytes
            self._refuse(Request.failure(413, f"the request body is larger than {limit} bytes"))
            return
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
        self._sync_reading()

    def _refuse(self, failure: Request) -> None:
        """Answer ``failure`` in its turn, then close; a half-received streamed request goes.

        An unfinished streamed request is always the last one accepted. Still queued, it
        was never sent and is dropped; in progress, its exchange is abandoned.
        """
        queue = self._queue
        if queue and queue[-1].unfinished:
            dropped = queue.pop()
            assert dropped.stream is not None
            dropped.stream.discard()
            self._stop = False  # whatever it asked for, the failure now ends the connection
        request = self._req
        if request is not None and request.unfinished:
            self._abort(request, failure)
            return
        self._accept([failure])

    def _sync_reading(self) -> None:
        """Read from the client unless something downstream cannot take more.

        Reasons to pause: the connection is closing (unless a streamed body still has to
        be read to its end), too many pipelined requests wait, or a streamed body has
        nowhere to go yet (no upstream connection, or one that stopped reading). A
        lingering connection is always read, to be drained.
        """
        transport = self.transport
        if transport is None or self._closed:
            return
        paused = self._reading_paused
        if self._lingering:
            want = False
        else:
            limit = self._shared.limits.max_pipeline
            want = len(self._queue) >= ((limit + 1) // 2 if paused else limit)
            collector = self._collector
            stream = collector.stream if collector is not None else None
            if stream is not None:
                upstream = self._upstream
                want = want or not stream.attached
                want = want or (upstream is not None and upstream.write_paused)
            elif self._stop:
                want = True
        if want != paused:
            self._reading_paused = want
            if want:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _streaming_in(self) -> bool:
        collector = self._collector
        return collector is not None and collector.stream is not None and not self._lingering

    def _next(self) -> None:
        queue = self._queue
        if queue:
            self._start(queue.popleft())
            if self._reading_paused:
                self._sync_reading()
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
            self._shutdown(linger=True)
            return
        table = self._slot.table
        pinned = False
        if table.header is None:
            pool = table.choose()
        else:
            pool = table.header_pool(request.raw)
            pinned = pool is not None  # asked for this version: shown what it does, no retry
            if pool is None:
                pool = table.choose()
        if pool is None:
            self._pool = None
            self._fail(table.none_stats, 503, f"no available instance of {self._slot.label}")
            return
        self._retries = 0
        self._tried = None
        self._retried = pinned  # (``_retry_to`` and ``_held`` are None between exchanges)
        self._attempt(pool, pool.next_backend(), now, False)

    def _attempt(self, pool: CompiledPool, backend: BackendState, now: float, fresh: bool) -> None:
        self._pool = pool
        self._backend = backend
        backend.in_flight += 1
        pool.stats.in_flight += 1
        self.progress = 0
        self.seen_progress = 0
        self.wait_since = now
        request = self._req
        assert request is not None
        # A streamed body cannot be replayed: never risk it on a keep-alive connection that
        # may turn out closed.
        conn = None if fresh or request.stream is not None else backend.take_idle(now)
        if conn is None:
            self._attempt_no += 1
            self._connecting = asyncio.get_running_loop().create_task(
                self._open(backend, self._attempt_no)
            )
            return
        self._upstream = conn
        hold = request.method in pool.hold and request.stream is None and not self._retried
        conn.send(self, self._hold if hold else self._write, request.raw, request.head)
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
        request = self._req
        if attempt_no != self._attempt_no or self._closed or request is None:
            backend.put_idle(conn, perf_counter())  # still useful to the next request
            return
        self._connecting = None
        self._upstream = conn
        pool = self._pool
        hold = (
            pool is not None
            and request.method in pool.hold
            and request.stream is None
            and not self._retried
        )
        conn.send(self, self._hold if hold else self._write, request.raw, request.head)
        if self._writing_paused:
            conn.pause_reading()
        if request.stream is not None:
            request.stream.attach(conn.write_body)  # from here on it cannot be retried
            self._sync_reading()

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
        target = self._retry_to
        if target is not None:  # the canary's 5xx, counted above: stable answers instead
            if keep_alive:
                backend.put_idle(conn, now)
            else:
                conn.close()
            self._retry_on(target, now)
            return
        held = self._held
        if held is not None:  # ended before a status line could be read: relay it as it is
            self._held = None
            self._write(b"".join(held))
        request = self._req
        self._req = None
        self.wait_since = now
        if request is not None and request.stream is not None and request.unfinished:
            # Answered before the whole body arrived: the connection to the instance is
            # out of step, and the client's connection ends once the rest is drained.
            request.stream.discard()
            conn.close()
            self._shutdown(linger=True)
            return
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
        now = perf_counter()
        if pool.canary and not backend.removed and not self._retried:
            # A canary's drop counts even on a reused connection: a stale keep-alive race
            # is rare (idle connections are trusted for less than instances keep them), a
            # canary that drops connections is what the judges must see.
            table = self._slot.table
            if table.stable is not None and table.stable.version != pool.version:
                target = self._retry_away(pool, request, written, None, now)
                if target is not None:
                    pool.stats.fail(now - self._t0)  # the judges see what the canary did
                    self._retry_on(target, now)
                    return
                if not reused:
                    detail = "the instance closed the connection without answering"
                    self._fail(pool.stats, 502, detail if written else "no instance answered")
                    return
        if written and (not request.retry_safe or request.stream is not None):
            self._fail(pool.stats, 502, "the instance closed the connection without answering")
            return
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
        target = self._retry_to
        if target is not None:  # the canary's 5xx being discarded broke off: stable answers
            now = perf_counter()
            pool.stats.fail(now - self._t0)
            self._retry_on(target, now)
            return
        self._fail(pool.stats, 502, "the instance broke off its response")

    # -- a canary's failures, answered by stable ----------------------------------------

    def _hold(self, data: bytes) -> None:
        """A canary's response to a retryable request, until its status line is read.

        Below 500 (or no status line), the held bytes go to the client and the rest of the
        response flows straight through. A 5xx the budget allows to retry is read to its
        end and discarded (``response_done`` then sends the request to stable); one it
        does not allow reaches the user as it is.
        """
        held = self._held
        if held is None:
            if len(data) > 12 and 48 < data[9] < 53 and data.startswith(b"HTTP/1."):
                # the common case: the first read holds a status line below 500
                conn = self._upstream
                if conn is not None:
                    conn.sink = self._write
                self._write(data)
                return
            held = self._held = []
        held.append(data)
        start = held[0] if len(held) == 1 else b"".join(held)
        status = response_status(start)
        if status is None:
            return
        self._held = None
        conn, pool, request = self._upstream, self._pool, self._req
        if status >= 500 and conn is not None and pool is not None and request is not None:
            target = self._retry_away(pool, request, True, status, perf_counter())
            if target is not None:
                self._retry_to = target
                conn.sink = _discard
                return
        if conn is not None:
            conn.sink = self._write
        self._write(start)

    def _retry_away(
        self, pool: CompiledPool, request: Request, sent: bool, status: int | None, now: float
    ) -> CompiledPool | None:
        """The stable pool that should answer this canary failure, or ``None`` (see
        ``core.retry``); counts the retry or the budget's refusal on the canary."""
        table = self._slot.table
        stable, budget = table.stable, table.budget
        if stable is None or budget is None or stable.version == pool.version:
            return None
        kind = retry_kind(
            budget.policy,
            method=request.method.decode("latin-1"),
            sent=sent,
            body_buffered=request.stream is None,
            status=status,
        )
        if kind is RetryKind.ANSWER:
            return None
        if kind is RetryKind.BUDGETED and not budget.spend(now):
            pool.stats.retry_denied += 1
            return None
        pool.stats.retried += 1
        return stable

    def _retry_on(self, stable: CompiledPool, now: float) -> None:
        """Send the current request to stable: its one retry, timed on its own."""
        self._retried = True
        self._retry_to = None
        self._held = None
        self._t0 = now  # stable's latency is its own, not the canary's plus its own
        self._attempt(stable, stable.next_backend(), now, False)

    def upstream_writable(self, writable: bool) -> None:
        self._sync_reading()

    def check_timeouts(self, now: float) -> None:
        """Called by the router's sweeper a few times a second; see ``RouterLimits``."""
        if self._closed:
            return
        limits = self._shared.limits
        if self._lingering:
            if now - self.wait_since > limits.linger_timeout and self._out is not None:
                self._out.close()
            return
        collector = self._collector
        if collector is None:
            in_message = self._in_message
            in_head = in_message and not self._head_done
        else:
            in_message = collector.in_message
            in_head = collector.in_head
        if not self._stop or self._streaming_in():
            if in_head:
                since = self._head_since
                if not since:
                    self._head_since = now
                elif now - since > limits.header_timeout:
                    self._refuse(Request.failure(408, "the request head did not arrive in time"))
                    return
            elif in_message and not self._reading_paused:
                if self._span_size != self._body_seen:
                    self._body_seen = self._span_size
                    self._body_since = now
                elif now - self._body_since > limits.body_timeout:
                    self._refuse(Request.failure(408, "the request body stopped arriving"))
                    return
            else:
                self._body_seen = -1  # a new body, or a resumed one, starts a new wait
        if self._backend is None:
            if self._req is None and not self._queue and not in_message:
                # before its first request a connection has the head's time, not an idle one's
                idle = limits.idle_timeout if self._t0 else limits.header_timeout
                if now - self.wait_since > idle:
                    self._shutdown()
            return
        if self.progress != self.seen_progress or self._writing_paused:
            self.seen_progress = self.progress
            self.wait_since = now
            return
        request, upstream = self._req, self._upstream
        if (
            request is not None
            and request.unfinished
            and (upstream is None or not upstream.write_paused)
        ):
            self.wait_since = now  # no answer is due before the body is in
            return
        if now - self.wait_since < self._shared.response_timeout:
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
        target = self._retry_to
        if target is not None:  # the canary's 5xx being discarded stalled: stable answers
            pool.stats.fail(now - self._t0)
            self._retry_on(target, now)
            return
        self._fail(pool.stats, 504, "the instance did not answer in time")

    def _fail(self, stats: VersionStats, status: int, detail: str) -> None:
        stats.fail(perf_counter() - self._t0)
        self._retry_to = None
        self._held = None
        request = self._req
        self._req = None
        self._pool = None
        if request is None or self.progress or self._closed:
            self._shutdown()  # part of a response is already out: cut the connection
            return
        unfinished = request.unfinished
        if request.stream is not None and unfinished:
            request.stream.discard()
        keep_alive = request.keep_alive and not unfinished
        self._write(canned_response(status, detail, keep_alive, request.head))
        if not keep_alive:
            self._shutdown(linger=unfinished)
            return
        self._next()

    def _abort(self, request: Request, failure: Request) -> None:
        """End the exchange of a streamed request the client failed to finish; not counted."""
        backend, pool = self._backend, self._pool
        if backend is not None and pool is not None:
            backend.in_flight -= 1
            pool.stats.in_flight -= 1
        self._backend = None
        self._pool = None
        self._retry_to = None
        self._held = None
        self._attempt_no += 1  # a connection still being opened will be parked instead
        conn, self._upstream = self._upstream, None
        if conn is not None:
            conn.abandon()
        if request.stream is not None:
            request.stream.discard()
        self._req = None
        self._queue.clear()
        if self.progress:
            self._shutdown()  # part of a response is already out: cut the connection
            return
        self._write(canned_response(failure.error, failure.detail, False, request.head))
        self._shutdown(linger=True)

    def _shutdown(self, linger: bool = False) -> None:
        """Close after what is queued; ``linger``: send FIN, then drain for a while."""
        self._stop = True
        out = self._out
        if out is None or self._closed:
            return
        if not linger:
            out.close()
        elif not self._lingering:
            self._lingering = True
            self.wait_since = perf_counter()
            out.close_write()
            self._sync_reading()

    @property
    def busy(self) -> bool:
        """A request is being answered or waits its turn."""
        return self._req is not None or bool(self._queue)

    def close(self) -> None:
        """Close now (router shutdown); an exchange in progress is abandoned."""
        self._shutdown()
