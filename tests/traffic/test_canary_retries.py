"""A bad canary's GETs answered by stable, through real sockets (``core.retry``).

Each test runs the built-in router in front of real HTTP servers: ``v1`` is the stable
version, ``v2`` a canary that answers 5xx, drops connections or refuses them. Users must
see stable's answers for idempotent requests, the canary's counters must show every one of
its failures, and a POST must get what the canary did.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from conveyor.core.model import HeaderRoute, RouteTable
from conveyor.core.retry import RetryPolicy
from conveyor.load.generator import LoadGenerator

from ._support import (
    ENV,
    SERVICE,
    BackendRequest,
    RawClient,
    TestBackend,
    routed,
    run,
    table,
)

pytestmark = pytest.mark.integration


async def failing(
    backend: TestBackend, request: BackendRequest, transport: asyncio.Transport
) -> None:
    body = b"canary is broken"
    transport.write(
        b"HTTP/1.1 503 Service Unavailable\r\nX-Version: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (backend.version.encode(), len(body), b"" if request.method == b"HEAD" else body)
    )


async def dropping(
    backend: TestBackend, request: BackendRequest, transport: asyncio.Transport
) -> None:
    transport.abort()


def canary(
    weight_v2: int = 50, policy: RetryPolicy | None = None, **backends: TestBackend
) -> RouteTable:
    route = table(("v1", 100 - weight_v2, [backends["v1"]]), ("v2", weight_v2, [backends["v2"]]))
    return replace(route, stable_version="v1", retry=policy or RetryPolicy())


async def requests(port: int, method: str, count: int) -> list[tuple[int, str]]:
    client = await RawClient.connect(port)
    seen = []
    for _ in range(count):
        response = await client.request(method, "/")
        seen.append((response.status, response.headers.get(b"x-version", b"").decode()))
    await client.close()
    return seen


def test_a_canary_5xx_is_answered_by_stable_and_still_counted_for_the_canary() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", failing).start()
        async with routed(canary(v1=v1, v2=v2, policy=RetryPolicy(budget=1.0))) as (router, port):
            seen = await requests(port, "GET", 60) + await requests(port, "HEAD", 20)
            assert seen == [(200, "v1")] * 80  # keep-alive held throughout, nobody saw a 503
            counters = router.counters(SERVICE, ENV)
            canary_hits = len(v2.requests)
            assert canary_hits > 10
            assert counters["v2"].responses_5xx == canary_hits  # the judge sees them all
            assert counters["v2"].retried == canary_hits
            assert counters["v2"].retries_denied == 0
            assert counters["v1"].responses_2xx == 80  # 80 users, each answered once by v1
            assert v2.connections == 1  # the discarded 503s kept their connection alive
            text = router.prometheus_text()
            labels = f'service="{SERVICE}",env="{ENV}",version="v2"'
            assert f"conveyor_router_retries_total{{{labels}}} {canary_hits}" in text
            assert "conveyor_router_retry_budget_exhausted_total" in text

    run(body)


def test_a_post_gets_the_canary_answer_and_is_sent_once() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", failing).start()
        async with routed(canary(v1=v1, v2=v2)) as (router, port):
            seen = await requests(port, "POST", 40)
            to_canary = [s for s in seen if s[1] == "v2"]
            assert to_canary and all(status == 503 for status, _ in to_canary)
            assert len(v1.requests) + len(v2.requests) == 40  # nothing sent twice
            assert router.counters(SERVICE, ENV)["v2"].retried == 0

    run(body)


def test_a_dropped_connection_is_answered_by_stable_for_gets_and_is_a_502_for_posts() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", dropping).start()
        async with routed(canary(v1=v1, v2=v2, policy=RetryPolicy(budget=1.0))) as (router, port):
            gets = await requests(port, "GET", 40)
            assert gets == [(200, "v1")] * 40
            dropped = len(v2.requests)
            counters = router.counters(SERVICE, ENV)["v2"]
            assert counters.proxy_errors == dropped > 5
            assert counters.retried == dropped
            posts = [await requests(port, "POST", 1) for _ in range(30)]
            assert any(p == [(502, "")] for p in posts)  # the user sees the canary's drop
            assert len(v2.requests) - dropped == sum(p == [(502, "")] for p in posts)

    run(body)


def test_a_drop_on_a_reused_keep_alive_connection_is_counted_and_answered_by_stable() -> None:
    async def sometimes(
        backend: TestBackend, request: BackendRequest, transport: asyncio.Transport
    ) -> None:
        if len(backend.requests) % 3 == 0:  # answered twice on a connection, then dropped
            transport.abort()
            return
        transport.write(b"HTTP/1.1 200 OK\r\nX-Version: v2\r\nContent-Length: 2\r\n\r\nok")

    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", sometimes).start()
        async with routed(canary(v1=v1, v2=v2, policy=RetryPolicy(budget=1.0))) as (router, port):
            seen = await requests(port, "GET", 90)
            assert {status for status, _ in seen} == {200}
            drops = len(v2.requests) // 3
            counters = router.counters(SERVICE, ENV)["v2"]
            assert drops > 5 and counters.proxy_errors == counters.retried == drops
            assert len(v2.requests) >= 2 * v2.connections  # the drops were on reused connections

    run(body)


def test_a_refused_connection_goes_to_stable_for_any_method_and_is_counted() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2").start()
        await v2.stop()  # listed, but nothing listens: connections are refused
        async with routed(canary(v1=v1, v2=v2, policy=RetryPolicy(budget=0.0, min_retries=0))) as (
            router,
            port,
        ):
            seen = await requests(port, "POST", 30)
            assert seen == [(200, "v1")] * 30  # free retries: nothing reached the canary
            counters = router.counters(SERVICE, ENV)["v2"]
            assert counters.proxy_errors == counters.retried > 5

    run(body)


def test_the_budget_limits_retries_and_counts_what_it_refused() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", failing).start()
        policy = RetryPolicy(budget=0.1, min_retries=2, window=60.0)
        async with routed(canary(v1=v1, v2=v2, policy=policy)) as (router, port):
            seen = await requests(port, "GET", 200)
            counters = router.counters(SERVICE, ENV)["v2"]
            user_503 = sum(1 for s in seen if s[0] == 503)
            assert counters.retries_denied == user_503 > 0
            assert counters.retried + counters.retries_denied == len(v2.requests)
            assert counters.retried <= max(2, 0.1 * 200) + 1
            # extra upstream requests: exactly the retries granted
            assert len(v1.requests) + len(v2.requests) == 200 + counters.retried

    run(body)


def test_without_a_stable_version_nothing_is_held_or_retried() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", failing).start()
        route = replace(canary(v1=v1, v2=v2), stable_version=None)
        async with routed(route) as (router, port):
            seen = await requests(port, "GET", 40)
            assert {s for s in seen if s[1] == "v2"} == {(503, "v2")}
            assert router.counters(SERVICE, ENV)["v2"].retried == 0

    run(body)


def test_the_budget_holds_under_load_when_stable_fails_too() -> None:
    """Both versions answer 503 to everything, half the users meet the canary: retries
    (extra requests reaching an instance) stay within 20% of the users' requests."""

    async def body() -> None:
        v1 = await TestBackend("v1", failing).start()
        v2 = await TestBackend("v2", failing).start()
        async with routed(canary(v1=v1, v2=v2)) as (router, port):
            load = LoadGenerator("127.0.0.1", port, rate=400, connections=8)
            await load.start()
            await asyncio.sleep(2.0)
            report = await load.stop()
            await asyncio.sleep(0.1)  # the last exchanges end
            counters = router.counters(SERVICE, ENV)
            users = counters["v1"].requests + counters["v2"].requests - counters["v2"].retried
            upstream = len(v1.requests) + len(v2.requests)
            assert report.sent > 400 and users >= report.sent
            assert upstream - users == counters["v2"].retried  # one extra request per retry
            assert counters["v2"].retried <= 0.2 * users + 3
            assert counters["v2"].retried >= 0.1 * users  # the budget is used, not just shut
            assert counters["v2"].retries_denied > 0.2 * users  # the rest, refused and counted

    run(body)


@pytest.mark.parametrize("status", [200, 503])
def test_a_status_line_split_over_reads_is_still_read_before_deciding(status: int) -> None:
    async def split(
        backend: TestBackend, request: BackendRequest, transport: asyncio.Transport
    ) -> None:
        transport.write(b"HTTP/1.1 %d" % (status // 100))
        await asyncio.sleep(0.02)
        transport.write(b"%02d X\r\nX-Version: v2\r\nContent-Length: 5\r\n\r\n" % (status % 100))
        await asyncio.sleep(0.02)
        transport.write(b"hello")

    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", split).start()
        async with routed(canary(v1=v1, v2=v2, policy=RetryPolicy(budget=1.0))) as (router, port):
            client = await RawClient.connect(port)
            seen = set()
            for _ in range(20):
                response = await client.request("GET", "/")
                version = response.headers[b"x-version"].decode()
                seen.add((response.status, version, response.body if version == "v2" else b""))
            await client.close()
            if status == 200:
                assert (200, "v2", b"hello") in seen  # relayed byte for byte
            else:
                assert {s[:2] for s in seen} == {(200, "v1")}
                assert router.counters(SERVICE, ENV)["v2"].responses_5xx == len(v2.requests) > 0

    run(body)


def test_a_request_routed_to_the_canary_by_header_sees_what_the_canary_does() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", failing).start()
        route = replace(canary(0, v1=v1, v2=v2), header_route=HeaderRoute("X-Canary", "1", "v2"))
        async with routed(route) as (router, port):
            client = await RawClient.connect(port)
            pinned = await client.request("GET", "/", headers={"X-Canary": "1"})
            plain = await client.request("GET", "/")
            await client.close()
            assert (pinned.status, pinned.headers[b"x-version"]) == (503, b"v2")
            assert (plain.status, plain.headers[b"x-version"]) == (200, b"v1")
            assert router.counters(SERVICE, ENV)["v2"].retried == 0

    run(body)


def test_a_configured_put_dropped_by_the_canary_is_answered_by_stable() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2", dropping).start()
        policy = RetryPolicy(methods=("GET", "PUT"), budget=1.0)
        async with routed(canary(100, v1=v1, v2=v2, policy=policy)) as (router, port):
            assert await requests(port, "PUT", 5) == [(200, "v1")] * 5
            assert router.counters(SERVICE, ENV)["v2"].retried == 5
            assert (await requests(port, "HEAD", 1))[0][0] == 502  # not in this policy

    run(body)
