"""Header routes on a real HAProxy: the header reaches the canary, the rest follows the weights.

Against real backends, like the built-in router's ``tests/traffic/test_header_route.py``,
plus what only HAProxy has: the one reload a new header name costs, the runtime-only steps
after it, the map, the draining header backend and adoption by a successor router.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from conveyor.config.schema import EnvironmentConfig
from conveyor.core.model import Backend, HeaderRoute, Pool, RouteTable
from conveyor.traffic.haproxy import HAProxyRouter
from conveyor.traffic.haproxy.config import Listen, RouteConfig, Settings, render
from conveyor.traffic.haproxy.headers import HeaderMatch, header_match, header_servers
from conveyor.traffic.haproxy.plan import ServerSpec, layout, proxy_names
from conveyor.traffic.haproxy.saved import SavedBook, SavedRoute, dump, load
from tests.traffic._support import RawClient, TestBackend, run, table

from ._support import ENV, HAPROXY, SERVICE, haproxy_routed, needs_haproxy, running

CANARY = {"X-Canary": "1"}


def routed(
    stable: TestBackend, canary: TestBackend, weight: int, route: HeaderRoute | None
) -> RouteTable:
    plain = table(("v1", 100 - weight, [stable]), ("v2", weight, [canary]))
    return RouteTable(pools=plain.pools, header_route=route)


async def versions(port: int, count: int, headers: dict[str, str] | None = None) -> Counter[str]:
    """Which version answered each of ``count`` keep-alive requests sent with ``headers``."""
    seen: Counter[str] = Counter()
    client = await RawClient.connect(port)
    try:
        for _ in range(count):
            response = await client.request(headers=headers)
            assert response.status == 200, response
            seen[response.headers[b"x-version"].decode()] += 1
    finally:
        await client.close()
    return seen


async def reloaded(router: HAProxyRouter, before: int | None) -> int | None:
    """Wait for the reload a new header name costs (the sweeper starts it at once)."""
    deadline = time.monotonic() + 5
    while router.worker_pid == before:
        assert time.monotonic() < deadline, "the new header name never got its rule"
        await asyncio.sleep(0.02)
    return router.worker_pid


def header_map(router: HAProxyRouter) -> str:
    path = router.config_path.parent / "maps" / f"{proxy_names(SERVICE, ENV).frontend}.map"
    return router.runtime(f"show map {path}")


# -- against HAProxy -------------------------------------------------------------------


@pytest.mark.integration
@needs_haproxy
def test_a_header_route_beats_the_weights_and_later_steps_need_no_reload(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        v1, v2 = await TestBackend("v1").start(), await TestBackend("v2").start()
        route = HeaderRoute("X-Canary", "1", "v2")
        async with haproxy_routed(tmp_path) as (router, port):
            router.apply(SERVICE, ENV, routed(v1, v2, 0, None))
            before = router.worker_pid
            router.apply(SERVICE, ENV, routed(v1, v2, 0, route))
            worker = await reloaded(router, before)  # X-Canary was new: its rule needs one
            assert "req.fhdr(x-canary,1)" in router.config_path.read_text()

            assert await versions(port, 100, CANARY) == {"v2": 100}
            assert await versions(port, 20, {"x-cAnArY": "1"}) == {"v2": 20}  # any case
            assert await versions(port, 20, {"X-Canary": "  1  "}) == {"v2": 20}  # OWS
            for mismatch in ({"X-Canary": "2"}, {"X-Canary": "11"}, {"X-Canary": "1, 2"}):
                assert await versions(port, 20, mismatch) == {"v1": 20}, mismatch
            assert await versions(port, 20, {"X-Debug": "1"}) == {"v1": 20}  # other header
            assert await versions(port, 50) == {"v1": 50}  # weight 0: nothing without it

            # the weights move; headered requests stay on the canary; no reload
            sent_v1, counted_v1 = len(v1.requests), router.counters(SERVICE, ENV)["v1"].requests
            router.apply(SERVICE, ENV, routed(v1, v2, 20, route))
            assert await versions(port, 100, CANARY) == {"v2": 100}
            seen = await versions(port, 1000)
            assert seen["v2"] / 1000 == pytest.approx(0.20, abs=0.04)
            assert router.worker_pid == worker

            # cleared (promotion, abort, rollback): headered requests follow the weights
            router.apply(SERVICE, ENV, routed(v1, v2, 0, None))
            assert await versions(port, 50, CANARY) == {"v1": 50}
            assert header_map(router).strip() == ""
            # and the same name with another value: still runtime commands only
            router.apply(SERVICE, ENV, routed(v1, v2, 0, HeaderRoute("x-canary", "a b", "v2")))
            assert await versions(port, 20, {"X-Canary": "a b"}) == {"v2": 20}
            assert await versions(port, 20, CANARY) == {"v1": 20}
            assert router.worker_pid == worker

            # header-routed requests count under the version that answered them
            counted = router.counters(SERVICE, ENV)
            assert counted["v2"].requests == len(v2.requests)
            assert counted["v1"].requests - counted_v1 == len(v1.requests) - sent_v1

    run(body, timeout=60)


@pytest.mark.integration
@needs_haproxy
def test_clearing_a_header_route_lets_its_requests_finish_and_drains_its_servers(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        v1, v2 = await TestBackend("v1").start(), await TestBackend("v2").start()
        route = HeaderRoute("X-Canary", "1", "v2")
        async with haproxy_routed(tmp_path) as (router, port):
            router.apply(SERVICE, ENV, routed(v1, v2, 0, route))
            await reloaded(router, router.worker_pid)
            client = await RawClient.connect(port)
            slow = asyncio.create_task(client.request(path="/slow?s=1", headers=CANARY))
            instance = f"v2-{v2.port}"
            while router.in_flight(SERVICE, ENV, instance) < 1:
                await asyncio.sleep(0.01)
            router.apply(SERVICE, ENV, routed(v1, v2, 0, None))
            assert await versions(port, 20, CANARY) == {"v1": 20}
            assert router.in_flight(SERVICE, ENV, instance) == 1  # still draining
            response = await slow
            assert (response.status, response.body) == (200, b"slow")
            await client.close()
            backend = proxy_names(SERVICE, ENV).header_backend
            deadline = time.monotonic() + 3
            while not all(
                "MAINT" in row
                for row in router.runtime(f"show stat {backend} 4 -1").splitlines()
                if f":{v2.port}," in row
            ):
                assert time.monotonic() < deadline, "the drained header server was never parked"
                await asyncio.sleep(0.05)
            assert await versions(port, 20, CANARY) == {"v1": 20}

    run(body)


@pytest.mark.integration
@needs_haproxy
def test_a_header_route_to_a_version_without_instances_is_not_honoured(tmp_path: Path) -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with haproxy_routed(tmp_path) as (router, port):
            pools = (*table(("v1", 100, [v1])).pools, Pool("v2", 0, ()))
            router.apply(
                SERVICE, ENV, RouteTable(pools, header_route=HeaderRoute("X-C", "1", "v2"))
            )
            await asyncio.sleep(0.3)
            assert await versions(port, 20, {"X-C": "1"}) == {"v1": 20}  # not a 503

    run(body)


_CRASHING = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from conveyor.core.model import Backend, HeaderRoute, Pool, RouteTable
    from conveyor.traffic.haproxy import HAProxyRouter

    async def main(state_dir, v1, v2):
        router = HAProxyRouter(state_dir, haproxy="/usr/sbin/haproxy")
        await router.serve("shop", "prod", "127.0.0.1", 0, None)
        pools = (
            Pool("v1", 100, (Backend(f"v1-{v1}", "127.0.0.1", v1),)),
            Pool("v2", 0, (Backend(f"v2-{v2}", "127.0.0.1", v2),)),
        )
        header = HeaderRoute("X-Canary", "1", "v2")
        router.apply("shop", "prod", RouteTable(pools, header_route=header))
        while router.worker_pid is None or not router.config_path.read_text().count("x-canary"):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the reload's book is saved
        print(router.bound_port("shop", "prod"), router.master_pid, flush=True)
        os._exit(0)

    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
    """
)


@pytest.mark.integration
@needs_haproxy
def test_an_adopted_haproxy_keeps_its_header_route_without_a_reload(tmp_path: Path) -> None:
    async def body() -> None:
        v1, v2 = await TestBackend("v1").start(), await TestBackend("v2").start()
        out = subprocess.run(
            [sys.executable, "-c", _CRASHING, str(tmp_path), str(v1.port), str(v2.port)],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
            cwd=Path(__file__).parents[2],
        ).stdout.split()
        port, master = int(out[0]), int(out[1])
        try:
            assert await versions(port, 10, CANARY) == {"v2": 10}  # served without Conveyor
            router = HAProxyRouter(tmp_path, haproxy=str(HAPROXY))
            await router.serve(SERVICE, ENV, "127.0.0.1", port, None)
            assert router.master_pid == master
            worker = router.worker_pid
            router.apply(SERVICE, ENV, routed(v1, v2, 0, HeaderRoute("X-Canary", "1", "v2")))
            await asyncio.sleep(0.3)
            assert await versions(port, 20, CANARY) == {"v2": 20}
            assert router.worker_pid == worker  # the book knew the rule: no reload
            router.apply(SERVICE, ENV, routed(v1, v2, 0, None))
            assert await versions(port, 20, CANARY) == {"v1": 20}
            assert router.worker_pid == worker
            await router.close()
            assert not running(master)
        finally:
            if running(master):
                os.kill(master, signal.SIGTERM)

    run(body)


# -- the pure parts --------------------------------------------------------------------


def test_the_header_backend_holds_the_routed_version_only() -> None:
    a, b = Backend("a", "127.0.0.1", 9001), Backend("b", "127.0.0.1", 9002)
    pools = (Pool("v1", 100, (a,)), Pool("v2", 0, (b,)))
    servers = header_servers(pools, HeaderRoute("X-Canary", "1", "v2"))
    assert servers == (ServerSpec("v2", "b", "127.0.0.1", 9002, 1),)
    assert header_match(HeaderRoute("X-Canary", "1", "v2"), servers) == HeaderMatch("x-canary", "1")
    assert header_servers(pools, None) == ()
    assert header_servers(pools, HeaderRoute("X-Canary", "1", "v3")) == ()
    assert header_match(HeaderRoute("X-Canary", "1", "v3"), ()) is None  # no instance
    for name, value in (("X#Canary", "1"), ("X Canary", "1"), ("X-Canary", "")):
        assert header_match(HeaderRoute(name, value, "v2"), servers) is None


def test_the_map_key_is_the_value_as_hex() -> None:
    assert HeaderMatch("x-canary", "a b\\").key == "6120625C"


@needs_haproxy
def test_haproxy_accepts_header_rules(tmp_path: Path) -> None:
    names = proxy_names("shop", "prod")
    route = RouteConfig(
        names,
        Listen("127.0.0.1", 18080),
        None,
        layout(()),
        layout(()),
        layout((ServerSpec("v2", "b", "127.0.0.1", 9002, 1),)),
        ("x-canary", "x_debug.v2"),
        tmp_path / "shop.map",
    )
    (tmp_path / "shop.map").write_text("31 x-canary\n")
    text = render(Settings(), tmp_path / "stats.sock", [route])
    assert f"use_backend {names.header_backend} if {{ req.fhdr(x-canary,1)" in text
    assert f"backend {names.header_backend}" in text
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    result = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_book_keeps_header_rules_and_reads_books_without_them() -> None:
    route = SavedRoute(
        "shop", "prod", Listen("127.0.0.1", 8080), None, ("x-canary",), HeaderMatch("x-canary", "1")
    )
    book = SavedBook(42, (route,), {})
    assert load(dump(book)) == book
    old = '{"worker": 42, "routes": [{"service": "shop", "env": "prod", '
    old += '"listen": ["127.0.0.1", 8080], "preview": null}], "slots": {}}'
    assert load(old).routes[0].headers == () and load(old).routes[0].header is None


def _environment(header: str, value: str, router: str = "haproxy") -> EnvironmentConfig:
    step = {"set_header_route": {"header": header, "value": value}}
    return EnvironmentConfig.model_validate(
        {"router": router, "strategy": {"canary": {"steps": [step, {"set_weight": 50}]}}}
    )


def test_config_accepts_header_routes_on_haproxy_but_not_names_it_cannot_write() -> None:
    assert _environment("X-Canary", "1").router == "haproxy"
    for header, value in (("X#Canary", "1"), ("X Canary", "1"), ("X-Canary", "")):
        with pytest.raises(ValidationError, match="cannot route by header"):
            _environment(header, value)
        assert _environment(header, value, router="builtin").router == "builtin"
