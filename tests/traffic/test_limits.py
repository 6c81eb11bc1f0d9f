"""The router is bounded: slow, huge or too many requests cannot starve the real ones.

Every test drives the real router through real sockets, with ``RouterLimits`` made small
(short timeouts, a low connection cap) so the limits are reached in well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import resource

import pytest

from conveyor.traffic.builtin import RouterLimits

from ._support import (
    ENV,
    SERVICE,
    RawClient,
    Response,
    TestBackend,
    get,
    routed,
    run,
    table,
    wait_until,
)

pytestmark = pytest.mark.integration


async def _send_quietly(client: RawClient, data: bytes) -> None:
    """Send what the router may stop reading half-way (it answers and closes)."""
    with contextlib.suppress(ConnectionError, OSError):
        await client.send(data)


async def _final_answer(client: RawClient) -> Response:
    """The router's own answer, then the end of the connection."""
    response = await asyncio.wait_for(client.read_response(), 5)
    assert response.headers[b"connection"] == b"close"
    assert await client.closed_by_peer(timeout=5)
    return response


def _head(*lines: str, start: str = "GET / HTTP/1.1") -> bytes:
    return ("\r\n".join([start, "Host: t", *lines]) + "\r\n\r\n").encode()


# -- time --------------------------------------------------------------------------------


def test_slow_partial_requests_get_408_and_do_not_starve_real_ones() -> None:
    partial_count = 300
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4 * partial_count:
        pytest.skip(f"needs `ulimit -n` of at least {4 * partial_count} (two sockets a client)")

    async def body() -> None:
        v1 = await TestBackend("v1").start()
        limits = RouterLimits(header_timeout=1.5)
        async with routed(table(("v1", 1, [v1])), limits=limits) as (router, port):
            partials = [await RawClient.connect(port) for _ in range(partial_count)]
            for client in partials:
                await client.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Never-Ends: ")
            trickle = await RawClient.connect(port)

            async def drip() -> None:  # progress does not extend the deadline of a head
                for byte in b"GET /dripping HTTP/1.1\r\nHost: t\r\nX-Drip: " + b"x" * 1000:
                    await _send_quietly(trickle, bytes([byte]))
                    await asyncio.sleep(0.05)

            dripping = asyncio.create_task(drip())
            await wait_until(lambda: router.open_connections(SERVICE, ENV) == partial_count + 1)
            for _ in range(20):  # meanwhile real requests are answered at once
                assert (await get(port)).status == 200
            assert router.open_connections(SERVICE, ENV) >= partial_count + 1  # still waiting

            answers = await asyncio.gather(*(_final_answer(c) for c in [*partials, trickle]))
            assert {r.status for r in answers} == {408}
            dripping.cancel()
            for client in [*partials, trickle]:
                await client.close()
            await wait_until(lambda: router.open_connections(SERVICE, ENV) == 0)
            assert len(v1.requests) == 20  # nothing partial ever reached the instance
            assert (await get(port)).status == 200
        await v1.stop()

    run(body)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        limits = RouterLimits(header_timeout=0.3, idle_timeout=30)
        async with routed(table(("v1", 1, [v1])), limits=limits) as (_, port):
            silent = await RawClient.connect(port)
            assert await silent.closed_by_peer(timeout=3)  # no 408 for a mere pre-connect
            await silent.close()
            # after a request the keep-alive idle timeout applies instead (30 s here)
            kept = await RawClient.connect(port)
            assert (await kept.request()).status == 200
            await asyncio.sleep(0.6)
            assert (await kept.request()).status == 200
            await kept.close()
        await v1.stop()

    run(body)


def test_a_stalled_body_gets_408() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        limits = RouterLimits(body_timeout=0.4, buffer_body_bytes=1000)
        async with routed(table(("v1", 1, [v1])), limits=limits) as (router, port):
            buffered = await RawClient.connect(port)
            await buffered.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\nab")
            assert (await _final_answer(buffered)).status == 408
            await buffered.close()

            streamed = await RawClient.connect(port)  # past the buffer: already at the instance
            await streamed.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9000\r\n\r\n")
            await streamed.send(b"x" * 3000)
            await wait_until(lambda: len(v1.open) == 1)
            assert (await _final_answer(streamed)).status == 408
            await wait_until(lambda: not v1.open)  # the half-sent request was abandoned
            await streamed.close()
            assert v1.requests == []
            assert router.in_flight(SERVICE, ENV, f"v1-{v1.port}") == 0
            assert router.counters(SERVICE, ENV)["v1"].requests == 0  # the client's failure
        await v1.stop()

    run(body)


# -- size of the head ----------------------------------------------------------------------


def test_a_one_megabyte_header_gets_431_and_is_never_forwarded() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            client = await RawClient.connect(port)
            sending = asyncio.create_task(
                _send_quietly(client, _head("X-Huge: " + "a" * (1024 * 1024)))
            )
            response = await _final_answer(client)
            assert response.status == 431
            assert b"32768 bytes" in response.body
            await sending
            await client.close()
            assert (v1.connections, v1.requests) == (0, [])  # the backend saw nothing at all
            assert (await get(port)).status == 200
        await v1.stop()

    run(body)


def test_too_many_header_fields_get_431_on_both_parsing_paths() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            at_limit = [f"X-{i}: {i}" for i in range(99)]  # plus Host: 100 fields
            client = await RawClient.connect(port)
            await client.send(_head(*at_limit))
            assert (await client.read_response()).status == 200

            await client.send(_head(*at_limit, "X-One-Too-Many: 1"))
            response = await _final_answer(client)
            assert (response.status, b"100 header fields" in response.body) == (431, True)
            await client.close()

            # pipelined: the connection parses every header one by one, same limit
            client = await RawClient.connect(port)
            await client.send(
                _head() + _head(*at_limit, "X-One-Too-Many: 1", start="GET /x HTTP/1.1")
            )
            assert (await client.read_response()).status == 200
            assert (await _final_answer(client)).status == 431
            await client.close()
            assert [r.path for r in v1.requests] == ["/", "/"]
        await v1.stop()

    run(body)


def test_many_small_headers_past_the_head_size_get_431() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (_, port):
            client = await RawClient.connect(port)
            lines = [f"X-{i}: {'v' * 1000}" for i in range(40)]  # 40 KiB in 41 fields
            await _send_quietly(client, _head(*lines))
            assert (await _final_answer(client)).status == 431
            await client.close()
            assert v1.requests == []
        await v1.stop()

    run(body)


# -- connections ----------------------------------------------------------------------------


def test_past_the_connection_cap_new_connections_get_503_and_old_ones_carry_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1])), limits=RouterLimits(max_connections=8)) as (
            router,
            port,
        ):
            held = [await RawClient.connect(port) for _ in range(8)]
            for client in held:
                assert (await client.request()).status == 200

            for sends_first in (False, True):
                extra = await RawClient.connect(port)
                if sends_first:  # a client that wrote its request still reads the answer
                    await _send_quietly(extra, _head())
                refused = await _final_answer(extra)
                assert refused.status == 503
                assert refused.headers[b"retry-after"] == b"1"
                assert b"connection limit" in refused.body
                await extra.close()

            for client in held:  # every existing connection is still served
                assert (await client.request()).status == 200
            assert router.open_connections(SERVICE, ENV) == 8
            assert router.refused_connections(SERVICE, ENV) == 2
            await held.pop().close()
            await wait_until(lambda: router.open_connections(SERVICE, ENV) == 7)
            assert (await get(port)).status == 200  # a freed slot is usable again
            for client in held:
                await client.close()
            assert len(v1.requests) == 8 + 8 + 1
        await v1.stop()
        warnings = [r.getMessage() for r in caplog.records if "connection limit" in r.getMessage()]
        assert len(warnings) == 1  # once per episode, not once per refused connection
        assert "shop/prod" in warnings[0] and "8 of 8" in warnings[0]

    run(body)


def test_when_even_refusals_are_at_their_limit_a_connection_is_reset() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        limits = RouterLimits(max_connections=1, max_refusing=0)
        async with routed(table(("v1", 1, [v1])), limits=limits) as (_, port):
            held = await RawClient.connect(port)
            assert (await held.request()).status == 200
            extra = await RawClient.connect(port)
            try:
                data = await asyncio.wait_for(extra.reader.read(), 5)
            except ConnectionError:
                data = b""
            assert data == b""  # closed without a word: nothing to hold a descriptor for
            await extra.close()
            assert (await held.request()).status == 200
            await held.close()
        await v1.stop()

    run(body)


# -- bodies --------------------------------------------------------------------------------


def test_a_four_mebibyte_body_reaches_the_backend_intact() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        async with routed(table(("v1", 1, [v1]))) as (router, port):
            payload = hashlib.sha256(b"seed").digest() * (4 * 1024 * 1024 // 32)
            digest = hashlib.sha256(payload).hexdigest()
            client = await RawClient.connect(port)
            echo = await client.request("POST", "/echo", payload)
            assert (echo.status, echo.headers[b"x-sha256"].decode()) == (200, digest)
            assert echo.body == payload

            # chunked, in pieces, with Expect: 100-continue answered by the router
            await client.send(
                b"PUT /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
            assert interim.startswith(b"HTTP/1.1 100 ")
            for offset in range(0, len(payload), 512 * 1024):
                piece = payload[offset : offset + 512 * 1024]
                await client.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            await client.send(b"0\r\n\r\n")
            chunked = await client.read_response()
            assert (chunked.status, chunked.headers[b"x-sha256"].decode()) == (200, digest)

            assert (await client.request()).body == b"v1"  # the connection carries on
            await client.close()
            assert [len(r.body) for r in v1.requests] == [len(payload), len(payload), 0]
            assert router.counters(SERVICE, ENV)["v1"].responses_2xx == 3
        await v1.stop()

    run(body)


class _CountingBackend(asyncio.Protocol):
    """Counts the bytes it receives and never answers: shows what the router sent so far."""

    received = 0

    def data_received(self, data: bytes) -> None:
        type(self).received += len(data)


def test_a_large_body_is_streamed_not_buffered() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        _CountingBackend.received = 0
        server = await loop.create_server(_CountingBackend, "127.0.0.1", 0)
        port_of_backend = server.sockets[0].getsockname()[1]
        backend = TestBackend("v1")
        backend.port = port_of_backend
        async with routed(table(("v1", 1, [backend]))) as (_, port):
            client = await RawClient.connect(port)
            await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8000000\r\n\r\n")
            await client.send(b"x" * 2_000_000)
            # the instance has most of it while the client has not sent the rest
            await wait_until(lambda: _CountingBackend.received > 1_500_000)
            await client.close()
        server.close()

    run(body)


def test_a_declared_oversized_body_gets_413_before_it_is_sent() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        limits = RouterLimits(max_body_bytes=1024 * 1024)
        async with routed(table(("v1", 1, [v1])), limits=limits) as (_, port):
            client = await RawClient.connect(port)  # asks first: gets 413 instead of 100
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            response = await _final_answer(client)
            assert (response.status, b"1048576 bytes" in response.body) == (413, True)
            await client.close()

            client = await RawClient.connect(port)  # or starts sending at once
            sending = asyncio.create_task(
                _send_quietly(
                    client,
                    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\n\r\n"
                    + b"x" * 200_000,
                )
            )
            assert (await _final_answer(client)).status == 413
            await sending
            await client.close()
            assert (v1.connections, v1.requests) == (0, [])
        await v1.stop()

    run(body)


def test_a_chunked_body_past_the_maximum_gets_413_and_is_abandoned() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        limits = RouterLimits(max_body_bytes=300_000)
        async with routed(table(("v1", 1, [v1])), limits=limits) as (router, port):
            client = await RawClient.connect(port)
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            piece = b"y" * 100_000
            chunks = b"%x\r\n%s\r\n" % (len(piece), piece) * 5
            sending = asyncio.create_task(_send_quietly(client, chunks))
            assert (await _final_answer(client)).status == 413
            await sending
            await client.close()
            await wait_until(lambda: not v1.open)  # the instance's half request was dropped
            assert v1.requests == []
            assert router.in_flight(SERVICE, ENV, f"v1-{v1.port}") == 0
        await v1.stop()

    run(body)


class _EarlyAnswer(asyncio.Protocol):
    """Answers 401 as soon as a request head arrives, whatever the body (as auth does)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.seen = b""

    def data_received(self, data: bytes) -> None:
        if self.seen is not None:
            self.seen += data
            if b"\r\n\r\n" in self.seen:
                self.seen = None  # type: ignore[assignment]
                self.transport.write(  # type: ignore[attr-defined]
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope"
                )


def test_an_answer_before_the_body_ends_reaches_the_client_then_the_connection_ends() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_EarlyAnswer, "127.0.0.1", 0)
        backend = TestBackend("v1")
        backend.port = server.sockets[0].getsockname()[1]
        async with routed(table(("v1", 1, [backend]))) as (router, port):
            client = await RawClient.connect(port)
            await client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4000000\r\n\r\n")
            sending = asyncio.create_task(_send_quietly(client, b"z" * 1_000_000))
            response = await asyncio.wait_for(client.read_response(), 5)
            assert (response.status, response.body) == (401, b"nope")
            assert await client.closed_by_peer(timeout=5)
            await sending
            await client.close()
            assert router.counters(SERVICE, ENV)["v1"].responses_4xx == 1
        server.close()

    run(body)


def test_a_slow_but_steady_upload_is_neither_408_nor_504() -> None:
    async def body() -> None:
        v1 = await TestBackend("v1").start()
        limits = RouterLimits(header_timeout=0.3, body_timeout=0.3)
        route = table(("v1", 1, [v1]))
        async with routed(route, limits=limits, response_timeout=0.3) as (router, port):
            client = await RawClient.connect(port)
            await client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1200000\r\n\r\n")
            for _ in range(12):  # 1.2 s in all, far past every timeout, never stalling long
                await asyncio.sleep(0.1)
                await client.send(b"u" * 100_000)
            response = await client.read_response()
            assert (response.status, response.headers[b"x-length"]) == (200, b"1200000")
            await client.close()
            assert router.counters(SERVICE, ENV)["v1"].proxy_errors == 0
        await v1.stop()

    run(body)


class _SlowReader(asyncio.Protocol):
    """Stops reading after a megabyte until told to go on: an instance that falls behind."""

    last: _SlowReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.received = 0
        self.paused = False
        type(self).last = self

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > 1_000_000 and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def go_on(self) -> None:
        self.transport.resume_reading()  # type: ignore[attr-defined]


def test_an_instance_that_reads_slowly_slows_the_client_down() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        _SlowReader.last = None
        server = await loop.create_server(_SlowReader, "127.0.0.1", 0)
        backend = TestBackend("v1")
        backend.port = server.sockets[0].getsockname()[1]
        size = 48 * 1024 * 1024  # far more than every socket buffer on the way can hold
        async with routed(table(("v1", 1, [backend]))) as (_, port):
            client = await RawClient.connect(port)
            try:
                head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
                client.writer.write(head + b"w" * size)
                drained = asyncio.ensure_future(client.writer.drain())
                done, _ = await asyncio.wait([drained], timeout=1.0)
                assert not done  # the router stopped reading: nothing piles up in it
                reader = _SlowReader.last
                assert reader is not None and reader.paused
                reader.go_on()
                await asyncio.wait_for(drained, 10)
                await wait_until(lambda: reader.received > size, timeout=10)
            finally:
                if _SlowReader.last is not None:
                    _SlowReader.last.transport.abort()  # type: ignore[attr-defined]
                client.writer.transport.abort()
                server.close()

    run(body)
