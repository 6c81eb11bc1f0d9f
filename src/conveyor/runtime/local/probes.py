"""HTTP and TCP probes, with the one-line details a human reads in ``conveyor status``.

A probe is one short HTTP/1.1 GET on a fresh connection (``Connection: close``), written by
hand on asyncio streams: probes run every second for every instance, and a full HTTP client
per probe would cost more than the service's own answer. Like Kubernetes, any status from
200 to 399 passes. The result's ``detail`` names what a person needs to act: the status
and the start of the body ("503 Service Unavailable: {"reason": "pricing unreachable"...}"),
"connection refused" or "timeout after 2s".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from http import HTTPStatus

from conveyor.core.model import ProbeResult

MAX_HEAD = 16 * 1024
BODY_SNIPPET = 80
_READ_BODY = 1024


async def http_probe(
    port: int, path: str, timeout: float, clock: Callable[[], float], host: str = "127.0.0.1"
) -> ProbeResult:
    at = clock()
    try:
        async with asyncio.timeout(timeout):
            status, reason, body = await _get(host, port, path)
    except TimeoutError:
        return ProbeResult(at, False, f"timeout after {timeout:g}s")
    except ConnectionRefusedError:
        return ProbeResult(at, False, "connection refused")
    except ConnectionResetError:
        return ProbeResult(at, False, "connection reset")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        return ProbeResult(at, False, f"malformed response: {_short(str(exc)) or 'cut short'}")
    except OSError as exc:
        return ProbeResult(at, False, _short(exc.strerror or str(exc)).lower())
    return ProbeResult(at, 200 <= status < 400, describe(status, reason, body))


async def tcp_probe(
    port: int, timeout: float, clock: Callable[[], float], host: str = "127.0.0.1"
) -> ProbeResult:
    """Whether the port accepts a connection: readiness for services that declare no probe."""
    at = clock()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(at, False, f"timeout after {timeout:g}s")
    except ConnectionRefusedError:
        return ProbeResult(at, False, "connection refused")
    except OSError as exc:
        return ProbeResult(at, False, _short(exc.strerror or str(exc)).lower())
    await _close(writer)
    return ProbeResult(at, True, "port open")


def describe(status: int, reason: str, body: bytes) -> str:
    """The status line for a pass; for a failure also the start of the body, which says why."""
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    head = f"{status} {reason}".rstrip()
    if 200 <= status < 400:
        return head
    snippet = _short(body.decode(errors="replace"))
    return f"{head}: {snippet}" if snippet else head


def _short(text: str) -> str:
    return " ".join(text.split())[:BODY_SNIPPET]


async def _get(host: str, port: int, path: str) -> tuple[int, str, bytes]:
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
    try:
        request = (
            f"GET {path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "User-Agent: conveyor-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("latin-1"))
        head = await reader.readuntil(b"\r\n\r\n")
        status, reason, length = _parse_head(head)
        if length is None:
            body = await reader.read(_READ_BODY)
        else:
            body = await reader.readexactly(min(length, _READ_BODY))
        return status, reason, body
    finally:
        await _close(writer)


def _parse_head(head: bytes) -> tuple[int, str, int | None]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP status line: {lines[0]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    return int(parts[1]), parts[2].strip() if len(parts) > 2 else "", length


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
