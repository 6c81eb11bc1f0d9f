"""HTTP/1.1 at the byte level, where the router must write or interpret bytes itself.

Almost everything the router forwards is the peers' own bytes, untouched. This module holds
the few exceptions, kept apart from the connection logic so they can be tested on their
own: the ``Request`` record the proxy queues (with its ``BodyStream`` when the body is
streamed), the head checks against ``RouterLimits``, the full-callback ``Collector`` that
splits and re-serialises pipelined requests and streams large bodies, the small answers the
router writes itself, and the decision whether a connection closed mid-response ended it or
truncated it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from conveyor.traffic.builtin.limits import RouterLimits

_NO_BODY_STATUSES = frozenset({204, 304})
RETRY_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def canned_response(
    status: int, detail: str, keep_alive: bool, head: bool, retry_after: int = 0
) -> bytes:
    """A small plain-text answer the router writes itself (errors only)."""
    body = (detail + "\n").encode()
    connection = b"keep-alive" if keep_alive else b"close"
    retry = b"Retry-After: %d\r\n" % retry_after if retry_after else b""
    head_block = (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n%sConnection: %s\r\n\r\n"
        % (status, _REASONS.get(status, "Error").encode(), len(body), retry, connection)
    )
    return head_block if head else head_block + body


def serialise_head(
    method: bytes, target: bytes, version: str, headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A parsed request head as bytes again; headers keep their order, case and values."""
    parts = [b"%s %s HTTP/%s\r\n" % (method, target, version.encode())]
    parts.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def rebuild_request(
    method: bytes,
    target: bytes,
    version: str,
    headers: list[tuple[bytes, bytes]],
    body: list[bytes],
) -> bytes:
    """Serialise a parsed request again; a chunked body is re-sent as one chunk."""
    chunked = any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in headers
    )
    parts = [serialise_head(method, target, version, headers)]
    payload = b"".join(body)
    if chunked:
        if payload:
            parts.append(b"%x\r\n%s\r\n" % (len(payload), payload))
        parts.append(b"0\r\n\r\n")  # trailers are not forwarded
    else:
        parts.append(payload)
    return b"".join(parts)


class BodyStream:
    """The rest of a request body, arriving after its request was handed to an exchange.

    Until the exchange has an upstream connection (``attach``), pieces wait in ``pending``;
    the connection stops reading its client meanwhile, so at most one read waits here.
    After ``discard`` (the exchange ended or was refused) pieces are dropped.
    """

    __slots__ = ("attached", "discarded", "ended", "pending", "sink")

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.sink: Callable[[bytes], None] | None = None
        self.attached = False
        self.ended = False
        self.discarded = False

    def push(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink(data)
        elif not self.discarded:
            self.pending.append(data)

    def attach(self, sink: Callable[[bytes], None]) -> None:
        for data in self.pending:
            sink(data)
        self.pending.clear()
        self.sink = sink
        self.attached = True

    def discard(self) -> None:
        self.pending.clear()
        self.sink = None
        self.discarded = True


class Request:
    """One client request, ready to be written to any backend.

    ``raw`` is the whole request, or for a streamed one (``stream`` set) its head and the
    start of its body; the rest arrives through the stream.
    """

    __slots__ = (
        "detail",
        "error",
        "head",
        "keep_alive",
        "method",
        "raw",
        "stream",
    )

    def __init__(self, method: bytes, keep_alive: bool, raw: bytes = b"") -> None:
        self.raw = raw
        self.method = method
        self.keep_alive = keep_alive
        self.head = method == b"HEAD"
        self.error = 0
        self.detail = ""
        self.stream: BodyStream | None = None

    @classmethod
    def failure(cls, status: int, detail: str) -> Request:
        """A placeholder that answers ``status`` in its turn and then closes the connection."""
        request = cls(b"", False)
        request.error = status
        request.detail = detail
        return request

    @property
    def retry_safe(self) -> bool:
        """Idempotent (GET/HEAD/OPTIONS): may be sent again after an instance failed it.

        Computed when asked, which is only after a failure, not for every request.
        """
        return self.method in RETRY_SAFE_METHODS

    @property
    def unfinished(self) -> bool:
        """Part of the body is still to arrive: the connection cannot carry on after it."""
        stream = self.stream
        return stream is not None and not stream.ended


class LimitExceeded(Exception):
    """Raised inside a parser callback to stop parsing at a limit; becomes ``status``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_head(data: bytes, limits: RouterLimits) -> tuple[int, str] | None:
    """``(status, detail)`` when the request starting ``data`` breaks a limit, else ``None``.

    Works on the raw bytes, so the fast path needs no per-header parser callback: the head
    ends at the first blank line (llhttp insists on CRLF line ends and refuses folded
    lines, so every header is one CRLF-terminated line), and the body is what follows. A
    head not complete yet is only checked for its size so far.
    """
    start = 0
    while data.startswith(b"\r\n", start):  # blank lines before a request are allowed
        start += 2
    max_head = limits.max_head_bytes
    end = data.find(b"\r\n\r\n", start, start + max_head)
    if end < 0:
        if len(data) - start >= max_head:
            return 431, f"the request head is larger than {max_head} bytes"
        return None
    count = data.count(b"\r\n", start, end)
    if count > limits.max_headers:
        return 431, f"the request has more than {limits.max_headers} header fields"
    if len(data) - end - 4 > limits.max_body_bytes:
        return 413, f"the request body is larger than {limits.max_body_bytes} bytes"
    return None


def check_request(data: bytes, limits: RouterLimits) -> tuple[int, str] | None:
    """``check_head`` for a complete request, with a cheaper pass first.

    A request no longer than both size limits can only break the header count, and it
    cannot when it holds no more line feeds than a head of ``max_headers`` fields (request
    line, fields, blank line). Counting one byte value is a single pass; finding the end of
    the head and counting its lines is only needed past that.
    """
    limit = limits.max_headers + 2
    if (
        len(data) <= limits.max_head_bytes
        and len(data) <= limits.max_body_bytes
        and data.count(b"\n") <= limit
    ):
        return None
    return check_head(data, limits)


def head_end(data: bytes) -> int:
    """Offset just past the blank line that ends the head in ``data``, or -1."""
    end = data.find(b"\r\n\r\n")
    return end + 4 if end >= 0 else -1


def declared_length(block: bytes) -> int:
    """The largest Content-Length in a lower-cased head block, or -1 when there is none."""
    longest = -1
    position = block.find(b"\ncontent-length:")
    while position >= 0:
        line_end = block.find(b"\r\n", position + 1)
        value = block[position + 16 : line_end if line_end >= 0 else len(block)].strip()
        if value.isdigit():
            longest = max(longest, int(value))
        position = block.find(b"\ncontent-length:", position + 1)
    return longest


class Collector:
    """Full-callback request parsing for connections whose reads do not align with requests.

    Also the streaming path: once a request's buffered body passes
    ``limits.buffer_body_bytes`` it is handed on at once with a ``BodyStream``, which
    receives the rest (re-chunked when the request was chunked). Limits are checked as
    the callbacks arrive: the head from the sizes of its parts (plus, in the caller, the
    bytes of a header field still being received), the body as it is counted.
    """

    __slots__ = (
        "body",
        "body_size",
        "chunked",
        "done",
        "ended",
        "head_size",
        "headers",
        "in_headers",
        "in_message",
        "limits",
        "parser",
        "stream",
        "streamed",
        "target",
    )

    def __init__(self, limits: RouterLimits) -> None:
        self.limits = limits
        self.parser: Any = HttpRequestParser(self)
        self.done: list[Request] = []
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.in_headers = True
        self.in_message = False
        self.head_size = 0
        self.body_size = 0
        self.chunked = False
        self.stream: BodyStream | None = None
        self.streamed = False
        self.ended = 0  # messages completed so far, streamed ones included

    def on_message_begin(self) -> None:
        self.target = b""
        self.headers = []
        self.body = []
        self.in_headers = True
        self.in_message = True
        self.head_size = 16  # the method, the version and the line ends around them
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.target += url
        self.head_size += len(url)
        if self.head_size > self.limits.max_head_bytes:
            raise LimitExceeded(
                431, f"the request head is larger than {self.limits.max_head_bytes} bytes"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_headers:  # chunked-body trailers: not forwarded
            return
        headers = self.headers
        headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        limits = self.limits
        if len(headers) > limits.max_headers:
            raise LimitExceeded(
                431, f"the request has more than {limits.max_headers} header fields"
            )
        if self.head_size > limits.max_head_bytes:
            raise LimitExceeded(
                431, f"the request head is larger than {limits.max_head_bytes} bytes"
            )

    def on_headers_complete(self) -> None:
        self.in_headers = False
        chunked = False
        declared = -1
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif lowered == b"content-length" and value.strip().isdigit():
                declared = max(declared, int(value))
        self.chunked = chunked
        if declared > self.limits.max_body_bytes:
            raise LimitExceeded(
                413, f"the request body is larger than {self.limits.max_body_bytes} bytes"
            )

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        limits = self.limits
        if self.body_size > limits.max_body_bytes:
            raise LimitExceeded(
                413, f"the request body is larger than {limits.max_body_bytes} bytes"
            )
        stream = self.stream
        if stream is not None:
            stream.push(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)
            return
        self.body.append(body)
        if self.body_size > limits.buffer_body_bytes:
            self._start_stream()

    def _start_stream(self) -> None:
        parser = self.parser
        method = parser.get_method()
        raw = serialise_head(method, self.target, parser.get_http_version(), self.headers)
        payload = b"".join(self.body)
        if self.chunked:
            raw += b"%x\r\n%s\r\n" % (len(payload), payload)
        else:
            raw += payload
        request = Request(method, parser.should_keep_alive(), raw)
        request.stream = self.stream = BodyStream()
        self.done.append(request)
        self.body = []
        self.streamed = True

    def on_message_complete(self) -> None:
        self.in_message = False
        self.ended += 1
        stream = self.stream
        if stream is not None:
            if self.chunked:
                stream.push(b"0\r\n\r\n")  # trailers are not forwarded
            stream.ended = True
            self.stream = None
            return
        parser = self.parser
        method = parser.get_method()
        raw = rebuild_request(
            method, self.target, parser.get_http_version(), self.headers, self.body
        )
        self.done.append(Request(method, parser.should_keep_alive(), raw))

    def feed(self, data: bytes) -> tuple[list[Request], Request | None]:
        """Requests completed (or streaming) after ``data``, and a failure to answer after them."""
        failure = None
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            if self.done:
                self.done.pop()  # the upgrade request itself
            failure = Request.failure(501, "protocol upgrades are not supported by this router")
        except HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, LimitExceeded):
                failure = Request.failure(cause.status, cause.detail)
            else:
                failure = Request.failure(400, f"malformed request: {exc}")
        done, self.done = self.done, []
        return done, failure

    @property
    def in_head(self) -> bool:
        return self.in_message and self.in_headers


def eof_delimited_status(head: bytes) -> int | None:
    """The status of a response whose body ends at connection close, else ``None``.

    httptools cannot be told "the connection closed", so when an instance closes a connection
    in the middle of a response this decides whether that close was the end of a response
    without Content-Length or chunked framing (complete) or a truncation (an error).
    """
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = head[:end].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    status = int(parts[1])
    if status < 200 or status in _NO_BODY_STATUSES:
        return None
    for line in lines[1:]:
        name = line.partition(b":")[0].strip().lower()
        if name in (b"content-length", b"transfer-encoding"):
            return None
    return status


STATUS_LINE_MAX = 64
"""Bytes of a response held back at most to read its status line (``response_status``)."""


def response_status(start: bytes) -> int | None:
    """The status code at the start of a response, ``None`` while the line is incomplete.

    ``0`` when the start cannot be a status line (or is longer than ``STATUS_LINE_MAX``
    without one): such a response is relayed as it is, never retried.
    """
    end = start.find(b"\r\n")
    if end < 0:
        return None if len(start) < STATUS_LINE_MAX else 0
    parts = start[:end].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return 0
    return int(parts[1])
