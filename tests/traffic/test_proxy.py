"""The proxy through real sockets: HTTP/1.1 framing, keep-alive, retries, draining, errors."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

import pytest

from conveyor.traffic.builtin import NO_VERSION, RouterLimits

from ._support import (
    ENV,
    SERVICE,
    BackendProcess,
    BackendRequest,
    RawClient,
    TestBackend,
    get,
    routed,
    run,
    table,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_weights_are_followed_per_request() -> None:
    async def body() -> None:
        v1, v2 = await TestBackend("v1").start(), await TestBackend("v2").start()
        async with routed(table(("v1", 80, [v1]), ("v2", 20, [v2]))) as (router, port):
            seen: Counter[str] = Counter()

            async def client() -> None:
                conn = await RawClient.connect(port)
                for _ in range(500):
                    response = await conn.request()
                    assert response.status == 200
                    seen[response.headers[b"x-version"].decode()] += 1
                await conn.close()

            await asyncio.gather(*(client() for _ in range(4)))
            assert sum(seen.values()) == 2000
            assert abs(seen["v2"] / 2000 - 0.20) < 0.04  # > 4 standard deviations
            counters = router.counters(SERVICE, ENV)
            assert counters["v1"].requests == seen["v1"]
            assert counters["v2"].responses_2xx == seen["v2"]
        await v1.stop()
        await v2.stop()

    run(body)


def test_upstream_connections_are_kept_alive_and_reused() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            conn = await RawClient.connect(port)
            for _ in range(100):
                assert (await conn.request()).status == 200
            await conn.close()
            assert v1.connections == 1
            # a new client connection reuses the pooled upstream connection too
            assert (await get(port)).status == 200
            assert v1.connections == 1

            async def burst() -> None:
                c = await RawClient.connect(port)
                for _ in range(25):
                    await c.request()
                await c.close()

            await asyncio.gather(*(burst() for _ in range(4)))
            assert v1.connections <= 4
            assert len(v1.requests) == 201
        await v1.stop()

    run(body)


def test_chunked_request_and_chunked_response() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            conn = await RawClient.connect(port)
            await conn.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n"
            )
            await asyncio.sleep(0.05)  # the body arrives in several reads
            await conn.send(b"6\r\n world\r\n")
            await asyncio.sleep(0.05)
            await conn.send(b"0\r\n\r\n")
            response = await conn.read_response()
            assert (response.status, response.body) == (200, b"hello world")
            assert v1.requests[-1].body == b"hello world"

            response = await conn.request("GET", "/chunked")
            assert (response.status, response.body) == (200, b"alpha-beta-gamma")
            assert response.headers[b"transfer-encoding"] == b"chunked"
            assert (await conn.request()).status == 200  # the connection is still in sync
            await conn.close()
        await v1.stop()

    run(body)


def test_head_204_and_304_end_without_a_body() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (router, port):
            conn = await RawClient.connect(port)
            head = await conn.request("HEAD", "/big?n=5000")
            assert (head.status, head.body, head.headers[b"content-length"]) == (200, b"", b"5000")
            for status in (204, 304):
                assert (await conn.request("GET", f"/status/{status}")).status == status
            # every exchange ended cleanly: the same connections carry on
            assert (await conn.request()).body == b"v1"
            assert (await conn.request("HEAD", "/")).status == 200
            assert (await conn.request()).body == b"v1"
            await conn.close()
            assert v1.connections == 1
            counters = router.counters(SERVICE, ENV)["v1"]
            assert (counters.responses_2xx, counters.responses_3xx) == (5, 1)
        await v1.stop()

    run(body)


def test_one_mebibyte_bodies_both_ways() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            conn = await RawClient.connect(port)
            big = await conn.request("GET", "/big?n=1048576")
            assert len(big.body) == 1048576
            assert hashlib.sha256(big.body).hexdigest() == big.headers[b"x-sha256"].decode()
            payload = bytes(range(256)) * 4096
            echo = await conn.request("POST", "/echo", payload)
            assert echo.headers[b"x-sha256"].decode() == hashlib.sha256(payload).hexdigest()
            assert echo.body == payload
            await conn.close()
        await v1.stop()

    run(body)


def test_expect_100_continue_is_answered_before_the_body() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            conn = await RawClient.connect(port)
            await conn.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 2)
            assert interim.startswith(b"HTTP/1.1 100 ")
            await conn.send(b"data")
            response = await conn.read_response()
            assert (response.status, response.body) == (200, b"data")
            await conn.close()
        await v1.stop()

    run(body)


def test_http10_client_and_connection_close_are_honoured() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            conn = await RawClient.connect(port)
            await conn.send(b"GET / HTTP/1.0\r\n\r\n")
            response = await conn.read_response()
            assert (response.status, response.body) == (200, b"v1")
            assert await conn.closed_by_peer()
            await conn.close()

            conn = await RawClient.connect(port)
            response = await conn.request("GET", "/", headers={"Connection": "close"})
            assert response.status == 200
            assert await conn.closed_by_peer()
            await conn.close()
        await v1.stop()

    run(body)


def test_backend_connection_close_and_eof_delimited_body() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (router, port):
            conn = await RawClient.connect(port)
            response = await conn.request("GET", "/close")
            assert (response.status, response.body) == (200, b"bye")
            assert await conn.closed_by_peer()  # the client was told "close" as well
            await conn.close()

            conn = await RawClient.connect(port)
            await conn.send(b"GET /eof HTTP/1.1\r\nHost: t\r\n\r\n")
            raw = await asyncio.wait_for(conn.reader.read(), 2)
            assert raw.endswith(b"\r\n\r\nuntil-eof")
            await conn.close()
            assert (await get(port)).status == 200
            counters = router.counters(SERVICE, ENV)["v1"]
            assert (counters.responses_2xx, counters.proxy_errors) == (3, 0)
        await v1.stop()

    run(body)


def test_pipelined_requests_are_answered_in_order() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            conn = await RawClient.connect(port)
            await conn.send(
                b"GET /slow?s=0.2 HTTP/1.1\r\nHost: t\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            await conn.send(b"2\r\nxy\r\n0\r\n\r\nGET /status/404 HTTP/1.1\r\nHost: t\r\n\r\n")
            bodies = [(await conn.read_response()).body for _ in range(4)]
            assert bodies == [b"slow", b"abc", b"v1", b"xy"]
            assert (await conn.read_response()).status == 404
            assert (await conn.request()).body == b"v1"
            await conn.close()
        await v1.stop()

    run(body)


def test_no_usable_backend_answers_503_and_is_counted() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed() as (router, port):
            conn = await RawClient.connect(port)
            response = await conn.request()
            assert response.status == 503
            assert b"shop/prod" in response.body
            # zero weight everywhere is "no usable backend" too
            router.apply(SERVICE, ENV, table(("v1", 0, [v1])))
            assert (await conn.request()).status == 503
            assert (await conn.request("HEAD", "/")).status == 503
            router.apply(SERVICE, ENV, table(("v1", 5, [v1])))
            assert (await conn.request()).status == 200  # the connection survived the 503s
            await conn.close()
            counters = router.counters(SERVICE, ENV)
            assert counters[NO_VERSION].proxy_errors == 3
            assert counters[NO_VERSION].requests == 3
            assert counters["v1"].requests == 1
            text = router.prometheus_text()
            labels = 'service="shop",env="prod",version="-"'
            assert f"conveyor_router_proxy_errors_total{{{labels}}} 3" in text
        await v1.stop()

    run(body)


def test_requests_in_flight_drain_after_a_switch() -> None:
    async def body() -> None:
        blue, green = await TestBackend("blue").start(), await TestBackend("green").start()
        blue_id = f"blue-{blue.port}"
        async with routed(table(("blue", 1, [blue]))) as (router, port):
            warm = await RawClient.connect(port)
            assert (await warm.request()).body == b"blue"  # leaves an idle pooled connection
            slow = asyncio.create_task(get(port, "/slow?s=1"))
            await wait_until(lambda: router.in_flight(SERVICE, ENV, blue_id) == 1)
            router.apply(SERVICE, ENV, table(("green", 1, [green])))
            assert (await warm.request()).body == b"green"  # the next request follows the table
            assert router.in_flight(SERVICE, ENV, blue_id) == 1
            await wait_until(lambda: len(blue.open) == 1)  # the idle connection was closed
            response = await slow
            assert (response.status, response.body) == (200, b"slow")
            assert response.headers[b"x-version"] == b"blue"
            assert router.in_flight(SERVICE, ENV, blue_id) == 0
            await wait_until(lambda: not blue.open)  # not pooled: blue is gone from the table
            await warm.close()
            counters = router.counters(SERVICE, ENV)
            assert counters["blue"].responses_2xx == 2
            assert counters["blue"].proxy_errors == 0
        await blue.stop()
        await green.stop()

    run(body)


def test_killed_backend_is_retried_on_another_without_client_errors() -> None:
    async def body() -> None:
        doomed = BackendProcess("v1")
        healthy = await TestBackend("v2").start()
        try:
            route = table(("v1", 50, [doomed]), ("v2", 50, [healthy]))
            async with routed(route) as (router, port):
                conn = await RawClient.connect(port)
                versions = {(await conn.request()).headers[b"x-version"] for _ in range(20)}
                assert versions == {b"v1", b"v2"}  # both warm: v1 has pooled connections
                router.apply(SERVICE, ENV, table(("v1", 1, [doomed])))
                in_flight = asyncio.create_task(get(port, "/slow?s=5"))
                doomed_id = f"v1-{doomed.port}"
                await wait_until(lambda: router.in_flight(SERVICE, ENV, doomed_id) == 1)
                router.apply(SERVICE, ENV, route)
                doomed.kill()
                statuses: Counter[tuple[int, bytes]] = Counter()
                for i in range(60):
                    method = "POST" if i % 3 == 0 else "GET"
                    response = await conn.request(method, "/", b"x" if method == "POST" else b"")
                    statuses[(response.status, response.headers[b"x-version"])] += 1
                assert statuses == Counter({(200, b"v2"): 60})
                response = await in_flight  # reset before any byte: retried on v2
                assert (response.status, response.headers[b"x-version"]) == (200, b"v2")
                await conn.close()
                counters = router.counters(SERVICE, ENV)
                assert counters["v1"].proxy_errors == 0
                assert counters["v2"].proxy_errors == 0
        finally:
            if doomed.proc.poll() is None:
                doomed.kill()
            await healthy.stop()

    run(body)


async def _reset_everything(
    backend: TestBackend, request: BackendRequest, transport: asyncio.Transport
) -> None:
    transport.abort()


def test_written_non_idempotent_request_is_not_retried() -> None:
    async def body() -> None:
        bad = await TestBackend("v1", handler=_reset_everything).start()
        good = await TestBackend("v1").start()
        route = table(("v1", 1, [bad, good]))  # round-robin starts with ``bad``
        async with routed(route) as (router, port):
            conn = await RawClient.connect(port)
            response = await conn.request("GET", "/")
            assert (response.status, response.body) == (200, b"v1")  # retried on ``good``
            await conn.close()
            router.apply(SERVICE, ENV, route)  # fresh cursor: the next request hits ``bad``
            conn = await RawClient.connect(port)
            response = await conn.request("POST", "/", b"pay")
            assert response.status == 502  # it may have been acted on: never replayed
            assert [r.method for r in good.requests] == [b"GET"]
            await conn.close()
            counters = router.counters(SERVICE, ENV)["v1"]
            assert (counters.requests, counters.responses_2xx, counters.proxy_errors) == (2, 1, 1)
        await bad.stop()
        await good.stop()

    run(body)


async def _one_request_per_connection(
    backend: TestBackend, request: BackendRequest, transport: asyncio.Transport
) -> None:
    """Answer the first request of a connection; drop it on the second (a stale keep-alive)."""
    served = transport.get_extra_info("peername")
    if served in backend.seen:  # type: ignore[attr-defined]
        transport.abort()
        return
    backend.seen.add(served)  # type: ignore[attr-defined]
    transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_stale_keep_alive_connection_is_retried_on_a_fresh_one() -> None:
    async def body() -> None:
        flaky = TestBackend("v1", handler=_one_request_per_connection)
        flaky.seen = set()  # type: ignore[attr-defined]
        await flaky.start()
        async with routed(table(("v1", 1, [flaky]))) as (router, port):
            conn = await RawClient.connect(port)
            for _ in range(5):
                assert (await conn.request("GET", "/")).status == 200
            assert flaky.connections == 5  # every reuse failed and was replaced by a fresh one
            response = await conn.request("POST", "/", b"x")
            assert response.status == 502  # written to a reused connection: not replayed
            await conn.close()
            counters = router.counters(SERVICE, ENV)["v1"]
            assert (counters.responses_2xx, counters.proxy_errors) == (5, 1)
        await flaky.stop()

    run(body)


def test_silent_backend_times_out_with_504() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1])), response_timeout=0.3) as (router, port):
            started = asyncio.get_running_loop().time()
            response = await get(port, "/slow?s=3")
            assert response.status == 504
            assert asyncio.get_running_loop().time() - started < 2.5
            assert router.counters(SERVICE, ENV)["v1"].proxy_errors == 1
            assert router.in_flight(SERVICE, ENV, f"v1-{v1.port}") == 0
            # a response that keeps streaming is not cut by the timeout
            assert (await get(port, "/chunked")).body == b"alpha-beta-gamma"
        await v1.stop()

    run(body)


def test_unreachable_only_backend_gives_502() -> None:
    async def body() -> None:
        gone = await TestBackend("v1").start()
        await gone.stop()
        async with routed(table(("v1", 1, [gone]))) as (router, port):
            response = await get(port)
            assert response.status == 502
            assert router.counters(SERVICE, ENV)["v1"].proxy_errors == 1

    run(body)


def test_client_leaving_mid_request_releases_the_backend() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (router, port):
            conn = await RawClient.connect(port)
            await conn.send(b"GET /slow?s=2 HTTP/1.1\r\nHost: t\r\n\r\n")
            instance = f"v1-{v1.port}"
            await wait_until(lambda: router.in_flight(SERVICE, ENV, instance) == 1)
            await conn.close()
            await wait_until(lambda: router.in_flight(SERVICE, ENV, instance) == 0)
            await wait_until(lambda: not v1.open)  # the half-done upstream exchange is dropped
            assert router.counters(SERVICE, ENV)["v1"].requests == 0  # no outcome, not counted
        await v1.stop()

    run(body)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 501),
        (b"BREW /pot HTCPCP/1.0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n", 400),
    ],
)
def test_unsupported_or_malformed_requests_get_a_clean_error(raw: bytes, status: int) -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            conn = await RawClient.connect(port)
            await conn.send(raw)
            assert (await conn.read_response()).status == status
            assert await conn.closed_by_peer()
            await conn.close()
            assert v1.requests == []
        await v1.stop()

    run(body)


def test_request_larger_than_the_limit_gets_413() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        limits = RouterLimits(max_body_bytes=10_000)
        async with routed(table(("v1", 1, [v1])), limits=limits) as (_, port):
            conn = await RawClient.connect(port)
            await conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 50000\r\n\r\n")
            await conn.send(b"x" * 20_000)
            assert (await conn.read_response()).status == 413
            await conn.close()
        await v1.stop()

    run(body)


def test_counters_and_prometheus_text_after_mixed_traffic() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (router, port):
            conn = await RawClient.connect(port)
            for path in ("/", "/", "/status/302", "/status/404", "/status/500", "/slow?s=0.05"):
                await conn.request("GET", path)
            await conn.close()
            counters = router.counters(SERVICE, ENV)
            assert set(counters) == {"v1"}
            c = counters["v1"]
            assert (c.requests, c.responses_2xx, c.responses_3xx) == (6, 3, 1)
            assert (c.responses_4xx, c.responses_5xx, c.proxy_errors, c.errors) == (1, 1, 0, 1)
            assert c.latency_buckets[-1] == (float("inf"), 6)
            assert 0.04 <= c.latency_sum < 5
            assert dict(c.latency_buckets)[0.025] <= 5  # the slow one is above 25 ms
            samples = router.latency_samples(SERVICE, ENV, "v1")
            assert len(samples) == 6 and max(samples) >= 0.04
            text = router.prometheus_text()
            labels = 'service="shop",env="prod",version="v1"'
            assert f"conveyor_router_requests_total{{{labels}}} 6" in text
            assert f'conveyor_router_responses_total{{{labels},code_class="5xx"}} 1' in text
            assert f"conveyor_router_request_duration_seconds_count{{{labels}}} 6" in text
            assert f"conveyor_router_in_flight{{{labels}}} 0" in text
            assert 'version="-"' not in text  # no 503 happened
        await v1.stop()

    run(body)


def test_runs_on_the_standard_asyncio_loop_too() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            conn = await RawClient.connect(port)
            for _ in range(20):
                assert (await conn.request("POST", "/echo", b"abc")).body == b"abc"
            assert (await conn.request("GET", "/big?n=300000")).status == 200
            await conn.close()
        await v1.stop()

    asyncio.run(asyncio.wait_for(body(), 20))


def test_slow_reader_gets_every_byte_and_is_not_timed_out() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1])), response_timeout=0.3) as (router, port):
            conn = await RawClient.connect(port)
            await conn.send(b"GET /big?n=16777216 HTTP/1.1\r\nHost: t\r\n\r\n")
            await asyncio.sleep(1.0)  # buffers fill up; the router must pause, not give up
            response = await conn.read_response()
            assert len(response.body) == 16777216
            assert (
                hashlib.sha256(response.body).hexdigest() == response.headers[b"x-sha256"].decode()
            )
            assert (await conn.request()).status == 200
            await conn.close()
            assert router.counters(SERVICE, ENV)["v1"].proxy_errors == 0
        await v1.stop()

    run(body)


def test_warm_zero_weight_version_catches_retries_when_the_new_one_is_down() -> None:
    async def body() -> None:
        old = await TestBackend("v1").start()
        new = await TestBackend("v2").start()
        await new.stop()  # crashed right after the switch: connections are refused
        async with routed(table(("v1", 0, [old]), ("v2", 100, [new]))) as (router, port):
            conn = await RawClient.connect(port)
            for method in ("GET", "POST"):  # nothing was written, so POST is safe to retry
                response = await conn.request(method, "/", b"x" if method == "POST" else b"")
                assert (response.status, response.headers[b"x-version"]) == (200, b"v1")
            await conn.close()
            counters = router.counters(SERVICE, ENV)
            assert counters["v1"].responses_2xx == 2
            assert "v2" not in counters or counters["v2"].requests == 0
        await old.stop()

    run(body)
