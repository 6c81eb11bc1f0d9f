"""HTTP/1.1 at the byte level, where the router must write or interpret bytes itself.

Almost everything the router forwards is the peers' own bytes, untouched. This module holds
the few exceptions, kept apart from the connection logic so they can be tested on their
own: the ``Request`` record the proxy queues, the full-callback ``Collector`` that splits
and re-serialises pipelined requests, the small answers the router writes itself, and the
decision whether a connection closed mid-response ended it or truncated it.
"""

from __future__ import annotations

from typing import Any

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

_NO_BODY_STATUSES = frozenset({204, 304})
RETRY_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_REASONS = {
    400: "Bad Request",
    413: "Content Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def canned_response(status: int, detail: str, keep_alive: bool, head: bool) -> bytes:
    """A small plain-text answer the router writes itself (errors only)."""
    body = (detail + "\n").encode()
    connection = b"keep-alive" if keep_alive else b"close"
    head_block = (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: %s\r\n\r\n"
        % (status, _REASONS.get(status, "Error").encode(), len(body), connection)
    )
    return head_block if head else head_block + body


def rebuild_request(
    method: bytes,
    target: bytes,
    version: str,
    headers: list[tuple[bytes, bytes]],
    body: list[bytes],
) -> bytes:
    """Serialise a parsed request again; headers keep their order, case and values."""
    chunked = any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in headers
    )
    parts = [b"%s %s HTTP/%s\r\n" % (method, target, version.encode())]
    parts.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    parts.append(b"\r\n")
    payload = b"".join(body)
    if chunked:
        if payload:
            parts.append(b"%x\r\n%s\r\n" % (len(payload), payload))
        parts.append(b"0\r\n\r\n")  # trailers are not forwarded
    else:
        parts.append(payload)
    return b"".join(parts)


class Request:
    """One complete client request, ready to be written to any backend."""

    __slots__ = ("detail", "error", "head", "keep_alive", "raw", "retry_safe")

    def __init__(self, method: bytes, keep_alive: bool, raw: bytes = b"") -> None:
        self.raw = raw
        self.keep_alive = keep_alive
        self.head = method == b"HEAD"
        self.retry_safe = method in RETRY_SAFE_METHODS
        self.error = 0
        self.detail = ""

    @classmethod
    def failure(cls, status: int, detail: str) -> Request:
        """A placeholder that answers ``status`` in its turn and then closes the connection."""
        request = cls(b"", False)
        request.error = status
        request.detail = detail
        return request


class Collector:
    """Full-callback request parsing for connections whose reads do not align with requests."""

    __slots__ = ("body", "done", "headers", "in_headers", "in_message", "parser", "target")

    def __init__(self) -> None:
        self.parser: Any = HttpRequestParser(self)
        self.done: list[Request] = []
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.in_headers = True
        self.in_message = False

    def on_message_begin(self) -> None:
        self.target = b""
        self.headers = []
        self.body = []
        self.in_headers = True
        self.in_message = True

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_headers:  # later calls are chunked-body trailers
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_headers = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        method = parser.get_method()
        raw = rebuild_request(
            method, self.target, parser.get_http_version(), self.headers, self.body
        )
        self.done.append(Request(method, parser.should_keep_alive(), raw))
        self.in_message = False

    def feed(self, data: bytes) -> tuple[list[Request], Request | None]:
        """Requests completed by ``data``, and a failure to answer after them, if any."""
        failure = None
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            if self.done:
                self.done.pop()  # the upgrade request itself
            failure = Request.failure(501, "protocol upgrades are not supported by this router")
        except HttpParserError as exc:
            failure = Request.failure(400, f"malformed request: {exc}")
        done, self.done = self.done, []
        return done, failure


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
