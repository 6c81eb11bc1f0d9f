"""Pure helpers at the byte level: re-serialised requests, EOF-delimited responses."""

from __future__ import annotations

from typing import Any

import httptools
import pytest

from conveyor.traffic.builtin.wire import canned_response, eof_delimited_status, rebuild_request


class _Parsed:
    def __init__(self, data: bytes, response: bool = False) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.url = b""
        self.complete = False
        self.keep_alive = False
        cls = httptools.HttpResponseParser if response else httptools.HttpRequestParser
        self.parser: Any = cls(self)
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # only valid inside the callback


def test_rebuilt_request_keeps_line_headers_and_body() -> None:
    headers = [(b"Host", b"shop.local"), (b"X-Case", b"KeepMe"), (b"Content-Length", b"5")]
    raw = rebuild_request(b"POST", b"/a?b=1", "1.1", headers, [b"he", b"llo"])
    assert raw == (
        b"POST /a?b=1 HTTP/1.1\r\nHost: shop.local\r\nX-Case: KeepMe\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )


@pytest.mark.parametrize("body", [[], [b"abc", b"defgh"]])
def test_rebuilt_chunked_request_is_valid_and_complete(body: list[bytes]) -> None:
    headers = [(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")]
    raw = rebuild_request(b"PUT", b"/", "1.1", headers, body)
    parsed = _Parsed(raw)
    assert parsed.complete
    assert parsed.body == b"".join(body)
    assert parsed.headers == headers


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody", 200),
        (b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n", 404),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", None),
        (b"HTTP/1.1 200 OK\r\ncontent-length : 10\r\n\r\nabc", None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc", None),
        (b"HTTP/1.1 204 No Content\r\n\r\n", None),
        (b"HTTP/1.1 304 Not Modified\r\n\r\n", None),
        (b"HTTP/1.1 100 Continue\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nServer: half", None),
        (b"garbage\r\n\r\n", None),
    ],
)
def test_eof_delimited_status(head: bytes, status: int | None) -> None:
    assert eof_delimited_status(head) == status


@pytest.mark.parametrize("keep_alive", [True, False])
def test_canned_response_is_well_framed(keep_alive: bool) -> None:
    raw = canned_response(503, "no available instance of shop/prod", keep_alive, head=False)
    parsed = _Parsed(raw, response=True)
    assert parsed.complete
    assert parsed.parser.get_status_code() == 503
    assert parsed.keep_alive is keep_alive
    assert parsed.body == b"no available instance of shop/prod\n"
    head_only = canned_response(503, "x", keep_alive, head=True)
    assert head_only.endswith(b"\r\n\r\n") and b"Content-Length: 2" in head_only
