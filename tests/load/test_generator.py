"""The load generator against a real asyncio HTTP server that misbehaves on command."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import uvloop

from conveyor.load import LoadGenerator, LoadReport, Outcome
from conveyor.load.generator import Pacer, percentile


@dataclass
class Server:
    """Answers per ``mode``: ok, error (500), close (drop the connection), conn-close
    (200 with Connection: close), hang (never answer), garbage (not HTTP)."""

    port: int = 0
    mode: str = "ok"
    version: str = "v1"
    connections: int = 0
    requests: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            await self.serve(reader, writer)
        except asyncio.CancelledError:
            return  # the loop is shutting down; Python 3.11's streams would log a cancelled task
        finally:
            writer.transport.abort()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            self.requests += 1
            if self.mode == "hang":
                await asyncio.sleep(3600)
            if self.mode == "close":
                writer.transport.abort()
                return
            if self.mode == "garbage":
                writer.write(b"this is not HTTP\r\n\r\n")
                await writer.drain()
                continue
            status = b"500 Internal Server Error" if self.mode == "error" else b"200 OK"
            extra = b"Connection: close\r\n" if self.mode == "conn-close" else b""
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Length: 2\r\n"
                + extra
                + b"X-Conveyor-Revision: "
                + self.version.encode()
                + b"\r\n\r\nok"
            )
            await writer.drain()
            if extra:
                writer.close()
                return


@asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for writer in server.writers:
            writer.transport.abort()
        await listener.wait_closed()


def run(scenario: Callable[[], Awaitable[None]], loop: str = "asyncio") -> None:
    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(scenario(), timeout=30))


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


@LOOPS
def test_counts_versions_and_honours_the_rate(loop: str) -> None:
    async def scenario() -> None:
        async with serving() as server:
            load = LoadGenerator("127.0.0.1", server.port, rate=200, connections=4)
            await load.start()
            await asyncio.sleep(1.0)
            server.version = "v2"
            switch = time.time()
            mid = load.snapshot()
            await asyncio.sleep(0.5)
            report = await load.stop()

        assert report.failed == 0 and report.errors == () and report.failures_at == ()
        assert report.sent == report.ok == report.by_status[200]
        assert report.sent <= server.requests <= report.sent + 4  # + those in flight at stop
        assert set(report.by_version) == {"v1", "v2"}
        assert sum(report.by_version.values()) == report.sent
        assert 0.6 * 200 * report.duration <= report.sent <= 1.2 * 200 * report.duration
        assert 0 < report.latency_p50 <= report.latency_p99 < 1.0
        assert 0 < mid.sent < report.sent
        assert set(load.report(until=switch).by_version) == {"v1"}
        assert set(load.versions_since(switch + 0.05)) == {"v2"}
        assert set(load.versions_since(mid)) >= {"v2"}
        assert load.report(since=switch).duration == pytest.approx(
            report.ended_at - switch, abs=0.01
        )

    run(scenario, loop)


def test_5xx_answers_are_failures_stamped_when_they_happened() -> None:
    async def scenario() -> None:
        async with serving() as server:
            load = LoadGenerator("127.0.0.1", server.port, rate=200, connections=4)
            await load.start()
            await asyncio.sleep(0.3)
            server.mode = "error"
            broke = time.time()
            await asyncio.sleep(0.4)
            report = await load.stop()

        assert report.failed == report.by_status[500] > 20
        assert report.ok == report.by_status[200] > 20
        assert report.errors == ("HTTP 500",)
        assert min(report.failures_at) >= broke
        assert load.report(until=broke).failed == 0
        assert server.connections == 4  # 5xx answers keep the connection

    run(scenario)


@LOOPS
def test_dropped_connections_are_failures_and_load_recovers(loop: str) -> None:
    async def scenario() -> None:
        async with serving() as server:
            load = LoadGenerator("127.0.0.1", server.port, rate=200, connections=4)
            await load.start()
            await asyncio.sleep(0.3)
            server.mode = "close"
            await asyncio.sleep(0.3)
            server.mode = "ok"
            healed = time.time()
            await asyncio.sleep(0.5)
            report = await load.stop()

        assert report.failed > 20
        assert set(report.errors) <= {"connection closed before the response", "connection reset"}
        assert server.connections > 20  # every failure was followed by a reconnect
        after = load.report(since=healed + 0.05)
        assert after.failed == 0 and after.ok > 40
        assert report.sent == report.ok + report.failed

    run(scenario, loop)


def test_connection_close_header_reconnects_without_failing() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.mode = "conn-close"
            load = LoadGenerator("127.0.0.1", server.port, rate=200, connections=4)
            await load.start()
            await asyncio.sleep(0.5)
            report = await load.stop()

        assert report.failed == 0, report.errors
        assert report.ok > 50
        assert server.connections >= report.ok

    run(scenario)


def test_timeouts_are_failures_and_stop_never_waits_for_a_hung_server() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.mode = "hang"
            load = LoadGenerator("127.0.0.1", server.port, rate=50, connections=2, timeout=0.2)
            await load.start()
            await asyncio.sleep(0.7)
            async with asyncio.timeout(3):
                report = await load.stop()
            assert report.errors == ("timeout after 0.2s",)
            assert 2 <= report.failed <= 8  # two connections, each failing every 0.2s
            assert report.by_status == {}

            patient = LoadGenerator("127.0.0.1", server.port, rate=50, connections=2)
            await patient.start()
            await asyncio.sleep(0.2)
            async with asyncio.timeout(3):
                report = await patient.stop()
            assert report.sent == 0  # in-flight requests are not counted either way

    run(scenario)


def test_refused_connections_fail_at_the_paced_rate() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        load = LoadGenerator("127.0.0.1", port, rate=100, connections=4)
        await load.start()
        await asyncio.sleep(0.5)
        report = await load.stop()
        assert report.errors == ("connection refused",)
        assert report.ok == 0
        assert 20 <= report.failed <= 100 * report.duration * 1.3 + 5  # paced, not a hot loop

    run(scenario)


def test_garbage_answers_are_failures() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.mode = "garbage"
            load = LoadGenerator("127.0.0.1", server.port, rate=100, connections=2)
            await load.start()
            await asyncio.sleep(0.3)
            report = await load.stop()
        assert report.failed > 5 and report.ok == 0
        assert all(error.startswith("invalid HTTP response") for error in report.errors)

    run(scenario)


def test_a_generator_runs_once_and_checks_its_arguments() -> None:
    async def scenario() -> None:
        async with serving() as server:
            load = LoadGenerator("127.0.0.1", server.port, rate=10, connections=1)
            await load.start()
            with pytest.raises(RuntimeError):
                await load.start()
            await load.stop()
            with pytest.raises(RuntimeError):
                await load.start()
            assert (await load.stop()).sent == load.snapshot().sent

    run(scenario)
    with pytest.raises(ValueError):
        LoadGenerator("127.0.0.1", 1, rate=0)
    with pytest.raises(ValueError):
        LoadGenerator("127.0.0.1", 1, connections=0)


# --- pure parts ---------------------------------------------------------------------------


def test_pacer_spaces_claims_and_drops_backlog_after_a_stall() -> None:
    pacer = Pacer(rate=10, now=100.0, max_lag=1.0)
    assert [pacer.claim(100.0) for _ in range(3)] == pytest.approx([100.0, 100.1, 100.2])
    assert pacer.claim(100.9) == pytest.approx(100.3)  # behind, but within the lag: catch up
    assert pacer.claim(105.0) == pytest.approx(105.0)  # stalled: no burst of missed slots
    assert pacer.claim(105.0) == pytest.approx(105.1)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0


def test_report_of_outcomes() -> None:
    outcomes = [
        Outcome(at=1.0, latency=0.01, status=200, version="a"),
        Outcome(at=2.0, latency=0.03, status=503, version="b", error="HTTP 503"),
        Outcome(at=3.0, latency=5.0, error="timeout after 5s"),
        Outcome(at=4.0, latency=0.02, status=404),
        *[Outcome(at=5.0, latency=0.1, error=f"e{i}") for i in range(30)],
    ]
    report = LoadReport.of(outcomes, 0.0, 10.0)
    assert (report.sent, report.ok, report.failed) == (34, 2, 32)
    assert report.by_status == {200: 1, 503: 1, 404: 1}
    assert report.by_version == {"a": 1, "b": 1}
    assert report.errors[:3] == ("HTTP 503", "timeout after 5s", "e0")
    assert len(report.errors) == 20
    assert report.failures_at[:2] == (2.0, 3.0)
    assert report.latency_p50 == 0.02  # only answered requests have a latency
    assert report.rate == pytest.approx(3.4)
