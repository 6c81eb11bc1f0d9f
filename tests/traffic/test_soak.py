"""Zero failed requests while the table changes under load, as it does during deploys."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from ._support import ENV, SERVICE, RawClient, TestBackend, routed, run, table, wait_until

pytestmark = pytest.mark.integration

TOTAL = 3000


async def _load(port: int, total: int, outcomes: Counter[str]) -> None:
    """``total`` requests from 12 keep-alive clients and 4 that reconnect every 10 requests."""
    remaining = [total]

    async def client(reconnect_every: int | None) -> None:
        conn = await RawClient.connect(port)
        sent = 0
        while remaining[0] > 0:
            remaining[0] -= 1
            if reconnect_every and sent and sent % reconnect_every == 0:
                await conn.close()
                conn = await RawClient.connect(port)
            sent += 1
            if sent % 4 == 0:
                method, path, body = "POST", "/echo", b"payload"
            else:  # some requests take a few ms so that flips find them in flight
                method, path, body = "GET", "/slow?s=0.004" if sent % 2 else "/", b""
            try:
                response = await conn.request(method, path, body)
            except (ConnectionError, OSError) as exc:  # a failure users would have seen
                outcomes[f"exception {type(exc).__name__}"] += 1
                await conn.close()
                conn = await RawClient.connect(port)
                continue
            if response.status != 200:
                outcomes[f"status {response.status}"] += 1
            else:
                outcomes[response.headers[b"x-version"].decode()] += 1
        await conn.close()

    await asyncio.gather(*(client(None) for _ in range(12)), *(client(10) for _ in range(4)))


def test_flipping_between_two_pools_every_50ms_loses_nothing() -> None:
    async def body() -> None:
        blue = [await TestBackend("blue").start() for _ in range(2)]
        green = [await TestBackend("green").start() for _ in range(2)]
        tables = [
            table(("blue", 100, blue), ("green", 0, green)),
            table(("blue", 50, blue), ("green", 50, green)),
            table(("green", 100, green)),
            table(("blue", 1, blue[:1]), ("green", 1, green[1:])),
        ]
        async with routed(tables[0]) as (router, port):
            outcomes: Counter[str] = Counter()
            load = asyncio.create_task(_load(port, TOTAL, outcomes))
            flips = 0
            while not load.done():
                await asyncio.sleep(0.05)
                flips += 1
                router.apply(SERVICE, ENV, tables[flips % len(tables)])
            await load
            assert sum(outcomes.values()) == TOTAL
            assert set(outcomes) == {"blue", "green"}, outcomes  # no status or exception keys
            assert flips >= 5
            for backend in blue + green:
                assert router.in_flight(SERVICE, ENV, f"{backend.version}-{backend.port}") == 0
            counters = router.counters(SERVICE, ENV)
            assert sum(c.requests for c in counters.values()) == TOTAL
            assert sum(c.errors for c in counters.values()) == 0
        for backend in blue + green:
            await backend.stop()

    run(body, timeout=60)


def test_deploy_cycles_that_stop_drained_instances_lose_nothing() -> None:
    """Each cycle: start v(n+1), split 50/50, move all traffic, wait for drain, kill v(n)."""

    async def body() -> None:
        current = [await TestBackend("v0").start(), await TestBackend("v0").start()]
        async with routed(table(("v0", 1, current))) as (router, port):
            outcomes: Counter[str] = Counter()
            load = asyncio.create_task(_load(port, TOTAL, outcomes))
            generation = 0
            while not load.done():
                generation += 1
                version = f"v{generation}"
                fresh = [await TestBackend(version).start(), await TestBackend(version).start()]
                old_version = current[0].version
                router.apply(SERVICE, ENV, table((old_version, 50, current), (version, 50, fresh)))
                await asyncio.sleep(0.05)
                router.apply(SERVICE, ENV, table((version, 100, fresh)))
                ids = [f"{b.version}-{b.port}" for b in current]

                def drained(ids: list[str] = ids) -> bool:
                    return all(router.in_flight(SERVICE, ENV, i) == 0 for i in ids)

                await wait_until(drained)
                for backend in current:
                    await backend.stop()  # drops every connection, like a killed process
                current = fresh
            await load
            assert sum(outcomes.values()) == TOTAL
            assert all(key.startswith("v") for key in outcomes), outcomes
            assert generation >= 3
            counters = router.counters(SERVICE, ENV)
            assert sum(c.errors for c in counters.values()) == 0
        for backend in current:
            await backend.stop()

    run(body, timeout=60)
