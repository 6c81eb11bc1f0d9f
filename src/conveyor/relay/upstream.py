"""Keeping the relay's sets in step with the server: a push stream, conditional polls.

Per environment, forever: a conditional GET (the ETag held, so an unchanged set costs a
304 and no body), then the SSE stream, which delivers every later change as it happens.
When the stream breaks (server restart, network), the loop waits ``interval`` and starts
over; while the server is unreachable, it keeps trying every ``interval`` and the relay
keeps serving what it holds. The server sends a comment every 15 s, so a silent stream is
noticed by the read timeout and replaced.

Upstream calls are therefore about one per ``interval`` per environment while the server
is down, and one stream per environment while it is up: they depend on the number of
relays and the interval, and on nothing the SDKs do. ``UpstreamStats`` counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from conveyor.relay.cache import FlagCache, parse

log = logging.getLogger("conveyor.relay")

READ_TIMEOUT = 45.0


@dataclass
class UpstreamStats:
    requests: int = 0  # polls and stream openings
    not_modified: int = 0
    updates: int = 0
    failures: int = 0
    connected: dict[str, bool] = field(default_factory=dict)
    last_ok: dict[str, float] = field(default_factory=dict)
    forwarded: int = 0  # outcome reports sent upstream


class Upstream:
    def __init__(
        self,
        server: str,
        token: str,
        envs: list[str],
        cache: FlagCache,
        *,
        interval: float = 5.0,
        on_change: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.envs = envs
        self.cache = cache
        self.interval = interval
        self.stats = UpstreamStats()
        self.on_change = on_change
        self._client = httpx.AsyncClient(
            base_url=self.server,
            headers={"authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=READ_TIMEOUT),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.first_sync = asyncio.Event()

    async def start(self) -> None:
        for env in self.envs:
            self.cache.load(env)
            self._tasks.append(asyncio.create_task(self._sync(env), name=f"relay-sync-{env}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    async def post(self, path: str, body: object) -> bool:
        """Forward a report upstream; False (and logged) when the server does not take it."""
        self.stats.requests += 1
        self.stats.forwarded += 1
        try:
            answer = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            log.warning("cannot forward to %s%s: %s", self.server, path, exc)
            self.stats.failures += 1
            return False
        if answer.status_code >= 300:
            self.stats.failures += 1
            log.warning(
                "the server refused %s (%s): %s; a relay forwarding outcome counts needs a "
                "deployer token",
                path,
                answer.status_code,
                answer.text[:200],
            )
            return False
        return True

    async def _sync(self, env: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._poll(env)
                self.stats.last_ok[env] = loop.time()
                await self._stream(env)
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, ValueError) as exc:
                self.stats.failures += 1
                log.info("flag sync for %s: %s; serving the last known set", env, exc)
            self.stats.connected[env] = False
            await asyncio.sleep(self.interval)

    async def _poll(self, env: str) -> None:
        held = self.cache.get(env)
        headers = {"if-none-match": held.etag} if held is not None else {}
        self.stats.requests += 1
        answer = await self._client.get(f"/api/v1/flagsets/{env}", headers=headers)
        if answer.status_code == 304:
            self.stats.not_modified += 1
            self.first_sync.set()
            return
        if answer.status_code != 200:
            raise ValueError(f"the server answered {answer.status_code}: {answer.text[:200]}")
        await self._accept(env, answer.content, answer.headers.get("etag"))

    async def _stream(self, env: str) -> None:
        held = self.cache.get(env)
        params = {"etag": held.etag} if held is not None else {}
        self.stats.requests += 1
        async with self._client.stream(
            "GET", f"/api/v1/flagsets/{env}/stream", params=params
        ) as response:
            if response.status_code != 200:
                raise ValueError(f"the stream answered {response.status_code}")
            self.stats.connected[env] = True
            etag: str | None = None
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    etag = line[4:]
                elif line.startswith("data: "):
                    await self._accept(env, line[6:].encode(), etag)
                    self.stats.last_ok[env] = asyncio.get_running_loop().time()
                elif line.startswith(":"):
                    self.stats.last_ok[env] = asyncio.get_running_loop().time()

    async def _accept(self, env: str, body: bytes, etag: str | None) -> None:
        snapshot = parse(env, body, etag, "upstream")
        self.first_sync.set()
        if self.cache.put(snapshot):
            self.stats.updates += 1
            if self.on_change is not None:
                await self.on_change(env)
