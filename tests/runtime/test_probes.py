"""Probes against small real servers written for each case."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from conveyor.core.model import ProbeResult
from conveyor.runtime.local.probes import describe, http_probe, tcp_probe

Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]
"""Answers a request that was already read."""


def answering(raw: bytes) -> Handler:
    async def handle(writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return handle


async def silent(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)


def probe_with(handler: Handler, path: str = "/health", timeout: float = 2.0) -> ProbeResult:
    seen: list[bytes] = []

    async def main() -> ProbeResult:
        async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                seen.append(await reader.readuntil(b"\r\n\r\n"))
                await handler(writer)
            finally:
                writer.close()

        server = await asyncio.start_server(recording, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await http_probe(port, path, timeout, time.time)
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(main())
    assert seen and seen[0].startswith(f"GET {path} HTTP/1.1\r\n".encode())
    assert b"Connection: close" in seen[0]
    return result


def test_200_passes_with_a_short_detail() -> None:
    result = probe_with(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    assert (result.ok, result.detail) == (True, "200 OK")


def test_redirect_passes_like_kubernetes() -> None:
    result = probe_with(answering(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"))
    assert (result.ok, result.detail) == (True, "302 Found")


def test_503_fails_and_says_why_in_80_characters() -> None:
    body = b'{"ready": false, "reason": "pricing unreachable"}\n' + b"x" * 500
    raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    result = probe_with(answering(raw))
    assert not result.ok
    prefix = '503 Service Unavailable: {"ready": false, "reason": "pricing unreachable"} '
    assert result.detail.startswith(prefix)
    assert len(result.detail) == len("503 Service Unavailable: ") + 80


def test_body_without_content_length_is_read_until_close() -> None:
    result = probe_with(answering(b"HTTP/1.0 500 Internal Server Error\r\n\r\nboom\n"))
    assert (result.ok, result.detail) == (False, "500 Internal Server Error: boom")


def test_missing_reason_phrase_is_filled_in() -> None:
    result = probe_with(answering(b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n"))
    assert (result.ok, result.detail) == (False, "404 Not Found")


def test_timeout_is_reported_with_its_length() -> None:
    began = time.monotonic()
    result = probe_with(silent, timeout=0.3)
    assert (result.ok, result.detail) == (False, "timeout after 0.3s")
    assert time.monotonic() - began < 4  # the silent server holds on for 5 s


@pytest.mark.parametrize(
    "raw", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]
)
def test_malformed_responses_fail(raw: bytes) -> None:
    result = probe_with(answering(raw))
    assert not result.ok and result.detail.startswith("malformed response")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused() -> None:
    port = _closed_port()
    result = asyncio.run(http_probe(port, "/", 1.0, time.time))
    assert (result.ok, result.detail) == (False, "connection refused")
    assert asyncio.run(tcp_probe(port, 1.0, time.time)).detail == "connection refused"


def test_tcp_probe_passes_when_the_port_accepts() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        result = asyncio.run(tcp_probe(listener.getsockname()[1], 1.0, lambda: 42.0))
    assert result == ProbeResult(42.0, True, "port open")


@pytest.mark.parametrize(
    ("status", "reason", "body", "detail"),
    [
        (200, "OK", b"ignored", "200 OK"),
        (503, "", b"", "503 Service Unavailable"),
        (599, "", b"odd\n\n  spaced   out ", "599: odd spaced out"),
    ],
)
def test_describe(status: int, reason: str, body: bytes, detail: str) -> None:
    assert describe(status, reason, body) == detail
