"""Header routes: requests carrying the canary header reach the canary whatever the weights."""

from __future__ import annotations

import asyncio

import httpx

from conveyor.core.model import Backend, HeaderRoute, Pool, RouteTable
from conveyor.traffic.builtin import BuiltinRouter


async def _backend(version: str) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            body = version.encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Version: %s\r\n\r\n%s"
                % (len(body), body, body)
            )
            await writer.drain()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_header_route_sends_matching_requests_to_the_canary_only() -> None:
    async def scenario() -> None:
        stable, stable_port = await _backend("stable")
        canary, canary_port = await _backend("canary")
        router = BuiltinRouter()
        await router.serve("svc", "prod", "127.0.0.1", 0)
        port = router.bound_port("svc", "prod")
        table = RouteTable(
            pools=(
                Pool("stable", 100, (Backend("s1", "127.0.0.1", stable_port),)),
                Pool("canary", 0, (Backend("c1", "127.0.0.1", canary_port),)),
            ),
            header_route=HeaderRoute("X-Canary", "1", "canary"),
        )
        router.apply("svc", "prod", table)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                tagged = [
                    (await client.get("/", headers={"x-canary": "1"})).text for _ in range(50)
                ]
                other = [(await client.get("/", headers={"X-Canary": "2"})).text for _ in range(50)]
                plain = [(await client.get("/")).text for _ in range(50)]
            assert set(tagged) == {"canary"}
            assert set(other) == {"stable"} and set(plain) == {"stable"}
            # Without the route, weight 0 means no traffic at all for the canary.
            router.apply("svc", "prod", RouteTable(pools=table.pools))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                again = [(await client.get("/", headers={"X-Canary": "1"})).text for _ in range(20)]
            assert set(again) == {"stable"}
        finally:
            await router.close()
            for server in (stable, canary):
                server.close()
                await server.wait_closed()

    asyncio.run(scenario())
