"""Steady HTTP load that counts what users saw, for the demo, integration tests and benchmarks.

Conveyor's promise is measured from the outside: "zero failed requests while versions
switch" is only true if a client hammering the router saw zero failures. This generator is
that client. It is deliberately small and fast (raw asyncio protocols and httptools; httpx
costs more CPU per request than the router under test) and it records one ``Outcome`` per
request, so any time window can be asked about afterwards: which versions answered after a
rollback, when users started seeing errors, how long they saw them.

Pacing is open-loop-ish: a shared schedule hands out send times at the target rate to
whichever keep-alive connection is free, so one stuck connection does not lower the rate as
long as others are idle. A schedule that falls more than ``_MAX_LAG`` behind (every
connection waiting on slow answers) drops the missed slots instead of bursting to catch up.

Counting rules, chosen to match what a user would call a failure:
- a 5xx answer, a timeout, a refused or reset connection, or a garbled response is one
  failed request; after a broken connection the next request reconnects;
- a response carrying ``Connection: close`` is a normal answer: the connection is
  replaced before the next request and nothing is counted;
- a keep-alive connection the server closed while idle is replaced before use, silently;
- requests still in flight when ``stop()`` is called are not counted at all.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import httptools

_MAX_LAG = 1.0
_MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the user saw it. ``at`` is ``time.time()`` when it finished."""

    at: float
    latency: float
    status: int | None = None
    version: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class LoadReport:
    """Counts over a time window; ``sent == ok + failed`` (requests in flight are not counted)."""

    sent: int
    ok: int
    failed: int  # connection errors, timeouts, garbled responses and 5xx
    by_status: dict[int, int]
    by_version: dict[str, int]  # by value of the version header; responses without it are not
    errors: tuple[str, ...]  # the first 20 distinct failure descriptions, in order seen
    failures_at: tuple[float, ...]  # time.time() of each failure
    latency_p50: float
    latency_p99: float
    duration: float
    started_at: float = 0.0
    ended_at: float = 0.0

    @property
    def rate(self) -> float:
        """Requests per second actually completed over the window."""
        return self.sent / self.duration if self.duration > 0 else 0.0

    @classmethod
    def of(cls, outcomes: Sequence[Outcome], started_at: float, ended_at: float) -> LoadReport:
        by_status: dict[int, int] = {}
        by_version: dict[str, int] = {}
        errors: dict[str, None] = {}
        failures: list[float] = []
        latencies: list[float] = []
        for outcome in outcomes:
            if outcome.status is not None:
                by_status[outcome.status] = by_status.get(outcome.status, 0) + 1
                latencies.append(outcome.latency)
            if outcome.version is not None:
                by_version[outcome.version] = by_version.get(outcome.version, 0) + 1
            if outcome.error is not None:
                failures.append(outcome.at)
                if len(errors) < _MAX_ERRORS:
                    errors[outcome.error] = None
        latencies.sort()
        return cls(
            sent=len(outcomes),
            ok=len(outcomes) - len(failures),
            failed=len(failures),
            by_status=by_status,
            by_version=by_version,
            errors=tuple(errors),
            failures_at=tuple(failures),
            latency_p50=percentile(latencies, 0.50),
            latency_p99=percentile(latencies, 0.99),
            duration=max(0.0, ended_at - started_at),
            started_at=started_at,
            ended_at=ended_at,
        )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence; 0.0 when it is empty."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class Pacer:
    """Hands out send times at a fixed rate; pure (the caller passes the monotonic clock)."""

    def __init__(self, rate: float, now: float, max_lag: float = _MAX_LAG) -> None:
        self.interval = 1.0 / rate
        self.max_lag = max_lag
        self._next = now

    def claim(self, now: float) -> float:
        """The time the next request should be sent; never far in the past (no catch-up burst)."""
        if self._next < now - self.max_lag:
            self._next = now
        at = self._next
        self._next += self.interval
        return at


class LoadGenerator:
    """N keep-alive HTTP/1.1 connections sending ``rate`` requests per second in total."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        rate: float = 200,
        connections: int = 8,
        path: str = "/",
        timeout: float = 5.0,
        version_header: str = "x-conveyor-revision",
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if rate <= 0 or connections < 1 or timeout <= 0:
            raise ValueError("rate and timeout must be positive and connections at least 1")
        self.host = host
        self.port = port
        self.rate = rate
        self.connections = connections
        self.timeout = timeout
        self.version_header = version_header.lower().encode("latin-1")
        self._request = _request_bytes(method, host, port, path, headers or {})
        self._outcomes: list[Outcome] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._started_at: float | None = None
        self._stopped_at: float | None = None

    async def start(self) -> None:
        if self._tasks or self._stopped_at is not None:
            raise RuntimeError("a LoadGenerator runs once; create a new one")
        loop = asyncio.get_running_loop()
        pacer = Pacer(self.rate, loop.time())
        self._started_at = time.time()
        self._tasks = [
            asyncio.create_task(self._connection(pacer), name=f"load-{index}")
            for index in range(self.connections)
        ]

    async def stop(self) -> LoadReport:
        """Stop at once; requests in flight are dropped, uncounted."""
        if self._stopped_at is None:
            self._stopped_at = time.time()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.report()

    def snapshot(self) -> LoadReport:
        """Live counts since start; safe to call from another thread than the generator's loop."""
        return self.report()

    def report(self, since: float | None = None, until: float | None = None) -> LoadReport:
        """Counts over requests that finished in [since, until] (``time.time()`` values)."""
        outcomes = self._outcomes[:]  # a slice is atomic under the GIL: thread-safe snapshot
        begin = self._started_at if self._started_at is not None else time.time()
        end = self._stopped_at if self._stopped_at is not None else time.time()
        if since is not None:
            begin = max(begin, since)
        if until is not None:
            end = min(end, until)
        low = -math.inf if since is None else since
        high = math.inf if until is None else until
        return LoadReport.of([o for o in outcomes if low <= o.at <= high], begin, end)

    def versions_since(self, since: float | LoadReport) -> dict[str, int]:
        """Which versions answered after a time, or after a report was taken."""
        at = since.ended_at if isinstance(since, LoadReport) else since
        return self.report(since=at).by_version

    def outcomes(self) -> tuple[Outcome, ...]:
        return tuple(self._outcomes)

    # --- one connection ---------------------------------------------------------------

    async def _connection(self, pacer: Pacer) -> None:
        loop = asyncio.get_running_loop()
        client: _Client | None = None
        try:
            while True:
                delay = pacer.claim(loop.time()) - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if client is not None and not client.usable:
                    client.close()
                    client = None
                sent = time.perf_counter()
                try:
                    async with asyncio.timeout(self.timeout):
                        if client is None:
                            client = await _connect(loop, self.host, self.port)
                        response = await client.request(self._request)
                except TimeoutError:
                    outcome = self._failure(sent, f"timeout after {self.timeout:g}s")
                except (OSError, _BrokenResponse) as exc:
                    outcome = self._failure(sent, _describe(exc))
                else:
                    outcome = self._answer(sent, response)
                    if response.keep_alive:
                        self._outcomes.append(outcome)
                        continue
                self._outcomes.append(outcome)
                if client is not None:
                    client.close()
                    client = None
        finally:
            if client is not None:
                client.close()

    def _failure(self, sent: float, error: str) -> Outcome:
        return Outcome(at=time.time(), latency=time.perf_counter() - sent, error=error)

    def _answer(self, sent: float, response: _Response) -> Outcome:
        version = response.headers.get(self.version_header)
        status = response.status
        return Outcome(
            at=time.time(),
            latency=time.perf_counter() - sent,
            status=status,
            version=version.decode("latin-1") if version is not None else None,
            error=f"HTTP {status}" if status >= 500 else None,
        )


def _request_bytes(
    method: str, host: str, port: int, path: str, headers: Mapping[str, str]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: conveyor-load"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _BrokenResponse):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError):
        return "connection closed while sending"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


# --- the wire: one asyncio protocol per connection ---------------------------------------


class _BrokenResponse(Exception):
    """The server closed the connection mid-response or sent something that is not HTTP."""


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[bytes, bytes]  # lower-cased names; the last value of a repeated one
    keep_alive: bool


async def _connect(loop: asyncio.AbstractEventLoop, host: str, port: int) -> _Client:
    _, protocol = await loop.create_connection(_Client, host, port)
    return protocol


class _Client(asyncio.Protocol):
    """An HTTP/1.1 client connection: one request at a time, responses parsed by httptools."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[_Response] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: dict[bytes, bytes] = {}
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the end of the body is known
        self._closed = False

    @property
    def usable(self) -> bool:
        return not self._closed and self._transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    async def request(self, payload: bytes) -> _Response:
        if self._transport is None or self._closed:
            raise _BrokenResponse("connection closed before the request")
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._headers = {}
        self._headers_done = False
        self._framed = False
        self._transport.write(payload)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self._waiter is None:
            self._closed = True  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_BrokenResponse(f"invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._headers_done and not self._framed and self._parser is not None:
            self.on_message_complete()  # body delimited by the close itself
            return
        if exc is not None:
            self._fail(exc if isinstance(exc, OSError) else _BrokenResponse(str(exc)))
        else:
            self._fail(_BrokenResponse("connection closed before the response"))

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        self._headers[lowered] = value
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_message_complete(self) -> None:
        parser, self._parser = self._parser, None
        if parser is None or self._waiter is None or self._waiter.done():
            return
        status = parser.get_status_code()
        keep_alive = bool(parser.should_keep_alive()) and not self._closed
        self._waiter.set_result(_Response(status, self._headers, keep_alive))
