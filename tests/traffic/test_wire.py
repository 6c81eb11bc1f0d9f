"""Pure helpers at the byte level: re-serialised requests, EOF-delimited responses, limits."""

from __future__ import annotations

import resource
from typing import Any

import httptools
import pytest

from conveyor.traffic.builtin.limits import RouterLimits, connection_budget
from conveyor.traffic.builtin.wire import (
    Collector,
    canned_response,
    check_head,
    check_request,
    declared_length,
    eof_delimited_status,
    rebuild_request,
)


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


# -- limits ---------------------------------------------------------------------------------

SMALL = RouterLimits(max_head_bytes=64, max_headers=3, max_body_bytes=10, buffer_body_bytes=4)


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", None),
        (b"\r\n\r\nGET / HTTP/1.1\r\nA: 1\r\n\r\n", None),  # blank lines before are allowed
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431),  # one field too many
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n", None),  # incomplete, still small
        (b"GET / HTTP/1.1\r\nA: " + b"x" * 60, 431),  # incomplete and already too long
        (b"GET / HTTP/1.1\r\nA: " + b"x" * 41 + b"\r\n\r\n", None),  # 64 bytes: fits
        (b"GET / HTTP/1.1\r\nA: " + b"x" * 42 + b"\r\n\r\n", 431),  # 65 bytes
        (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", None),
        (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n0123456789a", 413),
    ],
)
def test_check_head(data: bytes, verdict: int | None) -> None:
    problem = check_head(data, SMALL)
    assert (problem[0] if problem else None) == verdict


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"post / http/1.1\r\nhost: a", -1),
        (b"post / http/1.1\r\ncontent-length: 42\r\nhost: a", 42),
        (b"post / http/1.1\r\ncontent-length:7", 7),
        (b"post / http/1.1\r\ncontent-length: 3\r\ncontent-length: 900", 900),
    ],
)
def test_declared_length_takes_the_largest(block: bytes, expected: int) -> None:
    assert declared_length(block) == expected


def test_head_limits_need_no_check_below_four_bytes_a_field() -> None:
    assert RouterLimits().head_check_above == 400
    assert RouterLimits(max_head_bytes=100).head_check_above == 100


@pytest.mark.parametrize(
    ("soft", "budget"), [(1024, 384), (20000, 9872), (100, 16), (resource.RLIM_INFINITY, 524160)]
)
def test_connection_budget_keeps_descriptors_for_the_rest_of_the_process(
    soft: int, budget: int
) -> None:
    assert connection_budget(soft) == budget


@pytest.mark.parametrize(
    "change", [{"header_timeout": 0}, {"max_headers": 0}, {"max_body_bytes": -1}]
)
def test_nonsense_limits_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RouterLimits"):
        RouterLimits(**change)


def test_collector_streams_past_the_buffer_and_rechunks_the_rest() -> None:
    limits = RouterLimits(buffer_body_bytes=4, max_body_bytes=100)
    collector = Collector(limits)
    done, failure = collector.feed(
        b"PUT /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    assert (done, failure) == ([], None)  # 3 bytes: still buffered
    done, failure = collector.feed(b"3\r\ndef\r\n")
    assert failure is None and len(done) == 1
    request = done[0]
    assert request.stream is not None and request.unfinished
    sent: list[bytes] = [request.raw]
    request.stream.attach(sent.append)
    collector.feed(b"2\r\ngh\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not request.unfinished
    parsed = _Parsed(b"".join(sent))
    assert (parsed.complete, parsed.url, parsed.body) == (True, b"/u", b"abcdefgh")
    assert collector.streamed and not collector.in_message


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431),
        (b"GET /" + b"x" * 70 + b" HTTP/1.1\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n0123456789a\r\n", 413),
    ],
)
def test_collector_refuses_past_a_limit(data: bytes, status: int) -> None:
    done, failure = Collector(SMALL).feed(b"GET / HTTP/1.1\r\n\r\n" + data)
    assert len(done) == 1  # the request before the bad one stands
    assert failure is not None and failure.error == status


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", None),  # 5 line feeds: no search
        (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n\n\n\n\n\n\n\n\n\n", None),  # body LFs
        (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n0123456789a", 413),
        (b"GET / HTTP/1.1\r\nA: " + b"x" * 42 + b"\r\n\r\n", 431),
    ],
)
def test_check_request_agrees_with_check_head(data: bytes, verdict: int | None) -> None:
    problem = check_request(data, SMALL)
    assert (problem[0] if problem else None) == verdict
    assert problem == check_head(data, SMALL)
