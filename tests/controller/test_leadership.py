"""Leadership (controller/leadership.py) on a real store, SQLite and PostgreSQL: two servers
claim the same environments; exactly one holds each; the other takes over when the holder
stops renewing, hands back, or is paused past its TTL."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from conveyor.controller.leadership import Leadership
from conveyor.store import Store

TTL = 0.6


class Clock:
    """A monotonic clock the test moves: a 'pause' is a jump."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Server:
    def __init__(self, store: Store, name: str, **options: object) -> None:
        self.clock = Clock()
        self.lead = Leadership(
            store,
            holder=name,
            ttl=TTL,
            monotonic=self.clock,
            **options,  # type: ignore[arg-type]
        )
        self.log: list[tuple[str, str, object]] = []
        self.lead.bind(self.acquired, self.lost)

    async def acquired(self, env: str, epoch: int) -> None:
        self.log.append(("acquired", env, epoch))

    async def lost(self, env: str, why: str) -> None:
        self.log.append(("lost", env, why))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store.open(database_url) as opened:
        yield opened


def test_one_holder_per_environment_and_takeover_after_expiry(store: Store) -> None:
    async def main() -> None:
        a, b = Server(store, "a:1:x"), Server(store, "b:2:y")
        await a.lead.claim(["production", "staging"])
        await b.lead.claim(["production", "staging"])
        assert a.lead.held == {"production": 1, "staging": 1} and b.lead.held == {}
        assert a.lead.fence("production") is not None and b.lead.fence("production") is None
        # a keeps renewing: b never gets it
        for _ in range(3):
            await asyncio.sleep(TTL / 3)
            await a.lead.claim([])
            await b.lead.claim(["production"])
        assert b.lead.held == {}
        # a stops renewing (dead): after the TTL b takes both over, epoch bumped
        await asyncio.sleep(TTL + 0.1)
        await b.lead.claim(["production", "staging"])
        assert b.lead.held == {"production": 2, "staging": 2}
        assert b.log == [("acquired", "production", 2), ("acquired", "staging", 2)]
        # a comes back: it learns it lost both, and who holds them now
        await a.lead.claim([])
        assert a.lead.held == {}
        lost = [entry for entry in a.log if entry[0] == "lost"]
        assert [entry[1] for entry in lost] == ["production", "staging"]
        assert "b:2:y (epoch 2) holds its lease now" in str(lost[0][2])

    asyncio.run(main())


def test_a_paused_holder_stops_before_asking(store: Store) -> None:
    async def main() -> None:
        a = Server(store, "a:1:x")
        await a.lead.claim(["production"])
        a.clock.now += TTL + 5  # SIGSTOP, SIGCONT: no renewal for longer than the TTL
        b = Server(store, "b:2:y")
        await asyncio.sleep(TTL + 0.1)
        await b.lead.claim(["production"])
        await a.lead.claim([])
        assert a.log[1][0:2] == ("lost", "production")
        assert "not renewed for" in str(a.log[1][2])
        assert a.lead.held == {} and b.lead.held == {"production": 2}

    asyncio.run(main())


def test_resign_hands_over_at_once(store: Store) -> None:
    async def main() -> None:
        a, b = Server(store, "a:1:x"), Server(store, "b:2:y")
        await a.lead.claim(["production"])
        await a.lead.resign()
        await b.lead.claim(["production"])  # no waiting out the TTL
        assert b.lead.held == {"production": 2}

    asyncio.run(main())


def test_exclusive_takes_a_killed_predecessors_lease_at_once(store: Store) -> None:
    async def main() -> None:
        a = Server(store, "a:1:x")
        await a.lead.claim(["production"])  # then SIGKILLed, lease still live
        b = Server(store, "b:2:y", exclusive=True)
        await b.lead.claim(["production"])
        assert b.lead.held == {"production": 2}

    asyncio.run(main())


class CuttableProxy:
    """A TCP relay to the database that the test can cut, like a network partition."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.is_cut = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut:
                client.close()
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.is_cut = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept; new connects fail
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_a_holder_cut_off_from_the_database_stops_driving(database_url: str) -> None:
    """The leader's connection is cut: its renewals fail, it keeps the environment for at
    most a TTL by its own clock, then stops; the other server takes over (PostgreSQL)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a database connection to cut needs PostgreSQL")
    parsed = sa.engine.make_url(database_url)
    proxy = CuttableProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    via_proxy = parsed.set(host="127.0.0.1", port=proxy.port)

    async def main() -> None:
        with (
            Store.open(via_proxy.render_as_string(hide_password=False)) as cut_off,
            Store.open(database_url) as healthy,
        ):
            a = Server(cut_off, "a:1:x")
            a.lead._monotonic = time.monotonic
            b = Server(healthy, "b:2:y")
            b.lead._monotonic = time.monotonic
            await a.lead.claim(["production"])
            assert a.lead.held == {"production": 1}
            proxy.cut()
            await a.lead.claim([])  # fails: still held, for at most the TTL
            assert a.lead.held == {"production": 1}
            await asyncio.sleep(TTL + 0.1)
            await a.lead.claim([])
            assert a.lead.held == {}
            assert a.log[-1][0:2] == ("lost", "production")
            await b.lead.claim(["production"])
            assert b.lead.held == {"production": 2}

    asyncio.run(main())


def test_a_slow_takeover_does_not_cost_the_other_environments_their_leases(
    store: Store,
) -> None:
    """Taking over an environment of many services takes seconds; the renewal rounds go on
    beside it, so no other lease lapses meanwhile (they used to: lost, retaken, in a loop)."""

    async def main() -> None:
        log: list[tuple[str, str]] = []

        async def acquired(env: str, epoch: int) -> None:
            log.append(("acquiring", env))
            if env == "slow":
                await asyncio.sleep(2 * TTL)  # adopting hundreds of instances
            log.append(("acquired", env))

        async def lost(env: str, why: str) -> None:
            log.append(("lost", env))

        lead = Leadership(store, holder="a:1:x", ttl=TTL)
        lead.bind(acquired, lost)
        await lead.claim(["fast"])
        assert log == [("acquiring", "fast"), ("acquired", "fast")]
        await lead.claim(["fast", "slow"], wait=False)  # the renewal loop's way
        assert lead.taking_over("slow") and not lead.taking_over("fast")
        deadline = time.monotonic() + 3 * TTL
        while time.monotonic() < deadline:
            await asyncio.sleep(TTL / 4)
            await lead.claim([], wait=False)
        assert ("lost", "fast") not in log and ("lost", "slow") not in log, log
        assert ("acquired", "slow") in log and not lead.taking_over("slow")
        assert lead.held == {"fast": 1, "slow": 1}
        # A caller that needs the environment driven waits for its takeover.
        await lead.claim(["later"])
        assert log[-1] == ("acquired", "later")
        await lead.resign()

    asyncio.run(main())
