"""Many SDK-like pollers, each on its own keep-alive connection, for relay tests and benches.

Each poller is what an SDK process does: one connection, a conditional GET of its flag set
every ``every`` seconds carrying the ETag it holds. Raw asyncio streams rather than an
HTTP library: with thousands of clients, a shared client's connection pool becomes the
bottleneck (and the thing measured), and one connection per client is the honest model.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class PollResult:
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


async def poll(
    host: str,
    port: int,
    path: str,
    key: str,
    *,
    clients: int,
    polls: int,
    every: float = 0.0,
    duration: float | None = None,
) -> PollResult:
    """``clients`` pollers, each ``polls`` times (or until ``duration`` seconds passed)."""
    result = PollResult()
    started = time.monotonic()
    opening = asyncio.Semaphore(256)  # connect in waves: the listen backlog is finite

    async def client() -> None:
        async with opening:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                result.failures += 1
                return
        etag = ""
        try:
            done = 0
            while done < polls or duration is not None:
                if duration is not None and time.monotonic() - started >= duration:
                    break
                extra = f"If-None-Match: {etag}\r\n" if etag else ""
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                    f"{extra}\r\n".encode()
                )
                status, etag = await _response(reader, etag)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                done += 1
                if every:
                    await asyncio.sleep(every)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            result.failures += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.monotonic() - started
    return result


async def _response(reader: asyncio.StreamReader, etag: str) -> tuple[int, str]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "etag":
            etag = value.strip()
    if length:
        await reader.readexactly(length)
    return status, etag
