"""The router as the controller uses it: listeners, tables, preview, draining, shutdown."""

from __future__ import annotations

import asyncio
import inspect
import socket

import pytest

from conveyor.core.model import Backend, Pool, RouteTable
from conveyor.errors import Conflict, Fenced, NotFound
from conveyor.traffic.base import TrafficRouter
from conveyor.traffic.builtin import PREVIEW_VERSION, BuiltinRouter, RouterLimits

from ._support import ENV, SERVICE, RawClient, TestBackend, get, routed, run, table, wait_until

pytestmark = pytest.mark.integration


def test_builtin_router_implements_the_protocol() -> None:
    router: TrafficRouter = BuiltinRouter()  # checked statically by mypy
    for name, member in inspect.getmembers(TrafficRouter, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = getattr(router, name)
        expected = list(inspect.signature(member).parameters)[1:]
        assert list(inspect.signature(ours).parameters)[: len(expected)] == expected, name
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(member), name


def test_serve_is_idempotent_and_the_port_comes_back_after_a_restart() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        first = BuiltinRouter()
        first.apply(SERVICE, ENV, table(("v1", 1, [v1])))  # a table may come before serve
        await first.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = first.bound_port(SERVICE, ENV)
        await first.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        await first.serve(SERVICE, ENV, "127.0.0.1", port, None)
        assert first.bound_port(SERVICE, ENV) == port
        conn = await RawClient.connect(port)
        assert (await conn.request()).status == 200
        await first.close()
        assert await conn.closed_by_peer()
        await conn.close()
        with pytest.raises(OSError):
            await RawClient.connect(port)

        second = BuiltinRouter()  # same port at once, despite the connection just closed
        await second.serve(SERVICE, ENV, "127.0.0.1", port, None)
        second.apply(SERVICE, ENV, table(("v1", 1, [v1])))
        assert (await get(port)).status == 200
        await second.close()
        await v1.stop()

    run(body)


def test_port_in_use_is_a_conflict_with_a_hint() -> None:
    async def body() -> None:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        router = BuiltinRouter()
        try:
            with pytest.raises(Conflict) as caught:
                await router.serve(SERVICE, ENV, "127.0.0.1", port, None)
            assert f"{SERVICE}/{ENV}" in caught.value.message
            assert str(port) in caught.value.message
            assert caught.value.hint and "port" in caught.value.hint
        finally:
            taken.close()
            await router.close()

    run(body)


def test_unknown_routes_report_nothing_rather_than_fail() -> None:
    router = BuiltinRouter()
    assert router.in_flight("nope", "dev", "i-1") == 0
    assert router.counters("nope", "dev") == {}
    assert router.latency_samples("nope", "dev", "v1") == ()
    with pytest.raises(NotFound) as caught:
        router.bound_port("nope", "dev")
    assert caught.value.hint
    assert "# TYPE conveyor_router_requests_total counter" in router.prometheus_text()


def test_preview_listener_serves_only_the_preview_backends() -> None:
    async def body() -> None:
        blue, green = await TestBackend("blue").start(), await TestBackend("green").start()
        router = BuiltinRouter()
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, 0)
        main, preview = router.bound_port(SERVICE, ENV), router.bound_port(SERVICE, ENV, True)
        assert main != preview
        router.apply(
            SERVICE,
            ENV,
            RouteTable(
                pools=(Pool("blue", 100, (Backend("b1", "127.0.0.1", blue.port),)),),
                preview=(Backend("g1", "127.0.0.1", green.port),),
                preview_version="green",
            ),
        )
        assert {(await get(main)).body for _ in range(5)} == {b"blue"}
        assert {(await get(preview)).body for _ in range(5)} == {b"green"}
        counters = router.counters(SERVICE, ENV)
        assert (counters["blue"].requests, counters["green"].requests) == (5, 5)

        router.apply(
            SERVICE,
            ENV,
            RouteTable(preview=(Backend("g1", "127.0.0.1", green.port),)),  # unnamed version
        )
        assert (await get(preview)).status == 200
        assert router.counters(SERVICE, ENV)[PREVIEW_VERSION].requests == 1
        assert (await get(main)).status == 503  # nothing on the main listener any more

        await router.serve(SERVICE, ENV, "127.0.0.1", main, None)  # preview switched off
        with pytest.raises(OSError):
            await RawClient.connect(preview)
        with pytest.raises(NotFound):
            router.bound_port(SERVICE, ENV, preview=True)
        await router.close()
        await blue.stop()
        await green.stop()

    run(body)


def test_instance_moved_to_a_new_address_drains_at_the_old_one() -> None:
    async def body() -> None:
        old, new = await TestBackend("v1").start(), await TestBackend("v1").start()
        async with routed() as (router, port):
            router.apply(
                SERVICE, ENV, RouteTable((Pool("v1", 1, (Backend("i-1", "127.0.0.1", old.port),)),))
            )
            slow = asyncio.create_task(get(port, "/slow?s=0.5"))
            await wait_until(lambda: router.in_flight(SERVICE, ENV, "i-1") == 1)
            router.apply(
                SERVICE, ENV, RouteTable((Pool("v1", 1, (Backend("i-1", "127.0.0.1", new.port),)),))
            )
            assert (await get(port)).status == 200
            assert len(new.requests) == 1
            assert router.in_flight(SERVICE, ENV, "i-1") == 1  # the old address still counts
            assert (await slow).status == 200
            assert router.in_flight(SERVICE, ENV, "i-1") == 0
        await old.stop()
        await new.stop()

    run(body)


def test_close_lets_requests_in_flight_finish() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        router = BuiltinRouter(close_grace=3.0)
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        router.apply(SERVICE, ENV, table(("v1", 1, [v1])))
        port = router.bound_port(SERVICE, ENV)
        slow = asyncio.create_task(get(port, "/slow?s=0.3"))
        await wait_until(lambda: router.in_flight(SERVICE, ENV, f"v1-{v1.port}") == 1)
        await router.close()
        assert (await slow).status == 200
        await wait_until(lambda: not v1.open)  # pooled upstream connections were closed
        await v1.stop()

    run(body)


def test_idle_connections_expire_on_both_sides() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        limits = RouterLimits(idle_timeout=0.4)
        route = table(("v1", 1, [v1]))
        async with routed(route, upstream_idle_timeout=0.2, limits=limits) as (_, port):
            conn = await RawClient.connect(port)
            assert (await conn.request()).status == 200
            assert len(v1.open) == 1
            await wait_until(lambda: not v1.open, timeout=2)  # upstream idle connection dropped
            assert await conn.closed_by_peer(timeout=2)  # and the idle client as well
            await conn.close()
            assert (await get(port)).status == 200  # a new connection is opened as needed
            assert v1.connections == 2
        await v1.stop()

    run(body)


def test_a_table_from_an_older_lease_epoch_is_refused_and_unserve_frees_the_port() -> None:
    """Fencing (core/leases.py): the router obeys the newest epoch it has seen per route."""

    async def body() -> None:
        v1 = await TestBackend("v1").start()
        v2 = await TestBackend("v2").start()
        router = BuiltinRouter()
        await router.serve(SERVICE, ENV, "127.0.0.1", 0, None)
        port = router.bound_port(SERVICE, ENV)
        router.apply(SERVICE, ENV, RouteTable(table(("v1", 1, [v1])).pools, epoch=2))
        with pytest.raises(Fenced, match=r"epoch 1.*epoch 2"):
            router.apply(SERVICE, ENV, RouteTable(table(("v2", 1, [v2])).pools, epoch=1))
        assert (await get(port)).body == b"v1"  # the refused table changed nothing
        router.apply(SERVICE, ENV, RouteTable(table(("v2", 1, [v2])).pools, epoch=3))
        assert (await get(port)).body == b"v2"
        router.apply(SERVICE, "other", RouteTable(table(("v1", 1, [v1])).pools, epoch=1))
        router.unserve(SERVICE, ENV)  # the lease was lost: the port is the new leader's
        other = BuiltinRouter()
        await other.serve(SERVICE, ENV, "127.0.0.1", port, None)
        other.apply(SERVICE, ENV, RouteTable(table(("v1", 1, [v1])).pools, epoch=4))
        assert (await get(port)).body == b"v1"
        await other.close()
        await router.close()
        await v1.stop()
        await v2.stop()

    run(body)
