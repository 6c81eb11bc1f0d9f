"""HAProxy's share of "a bad canary's GETs are answered by stable", with a real HAProxy.

What it can do: retry a GET/HEAD/OPTIONS answered 5xx, or dropped before any answer, once on
another server, and leave POSTs alone. What it cannot (docs/router.md): choose stable, keep
a budget, or show the judges the 5xx it retried away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conveyor.traffic.haproxy.config import Settings
from tests.traffic._support import (
    ENV,
    SERVICE,
    BackendRequest,
    RawClient,
    TestBackend,
    run,
    table,
)
from tests.traffic.test_canary_retries import dropping, failing

from ._support import haproxy_routed, needs_haproxy

pytestmark = [pytest.mark.integration, needs_haproxy]

Handler = Callable[[TestBackend, BackendRequest, asyncio.Transport], Awaitable[None]]


async def _answers(port: int, method: str, count: int) -> list[tuple[int, str]]:
    client = await RawClient.connect(port)
    seen = []
    for _ in range(count):
        try:
            response = await client.request(method, "/")
        except ConnectionError:  # closed without an answer
            seen.append((0, ""))
            await client.close()
            client = await RawClient.connect(port)
            continue
        seen.append((response.status, response.headers.get(b"x-version", b"").decode()))
        if not response.keep_alive:
            await client.close()
            client = await RawClient.connect(port)
    await client.close()
    return seen


@pytest.mark.parametrize("canary", [failing, dropping], ids=["5xx", "drop"])
def test_gets_are_retried_on_another_server_and_posts_are_not(
    tmp_path: Path, canary: Handler
) -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", canary).start()
        async with haproxy_routed(tmp_path, settings=Settings()) as (router, port):
            router.apply(SERVICE, ENV, table(("v1", 50, [v1]), ("v2", 50, [v2])))
            gets = await _answers(port, "GET", 40)
            assert gets == [(200, "v1")] * 40
            assert len(v2.requests) >= 10  # the canary was asked, and failed, for many of them
            before = len(v1.requests) + len(v2.requests)
            posts = await _answers(port, "POST", 40)
            assert len(v1.requests) + len(v2.requests) - before == 40  # none sent twice
            failed = {status for status, _ in posts} - {200}
            # the user sees the canary's failure: its 503, or for a drop HAProxy's 502 (or a
            # closed connection, which HAProxy sometimes answers a dropped POST with)
            assert failed == {503} if canary is failing else failed and failed <= {0, 502}
            # HAProxy shows the retries, but not as the canary's errors (docs/router.md)
            counters = router.counters(SERVICE, ENV)
            assert counters["v2"].retried >= 10
            assert counters["v1"].responses_2xx == len(v1.requests)

    run(body, timeout=60)
