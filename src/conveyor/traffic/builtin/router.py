"""``BuiltinRouter``: the embedded ``TrafficRouter``, a registry of routes and listeners.

Each (service, environment) pair is a route with a stable main listener and an optional
preview listener (blue-green: the new version is reachable for checks before it takes
users). The router runs on the caller's event loop (uvloop in the router process,
``daemon``); every method except ``serve``/``close`` is synchronous and must be called
from that loop's thread.

What survives ``apply()`` and what does not:

* per-instance state (idle keep-alive connections, in-flight counts) is kept for every
  instance still listed, so a weight change costs no reconnect;
* an instance no longer listed has its idle connections closed at once, its in-flight
  requests finish normally, and ``in_flight()`` keeps reporting them until they have;
* counters are per version and cumulative for the router's lifetime, whatever the table.

Preview traffic is counted under ``RouteTable.preview_version`` (or ``"preview"`` when the
table does not name it), next to the main listener's versions.
"""

from __future__ import annotations

import asyncio
import contextlib
from time import perf_counter

from conveyor.core.model import Pool, RouteTable, VersionCounters
from conveyor.core.retry import RetryPolicy
from conveyor.errors import Conflict, NotFound
from conveyor.traffic.base import fence_table
from conveyor.traffic.builtin.admission import Gate
from conveyor.traffic.builtin.budget import RetryBudget
from conveyor.traffic.builtin.limits import RouterLimits, connection_budget
from conveyor.traffic.builtin.metrics import (
    DEFAULT_SAMPLES,
    NO_VERSION,
    SeriesSnapshot,
    VersionStats,
    render_prometheus,
)
from conveyor.traffic.builtin.outbox import Outbox
from conveyor.traffic.builtin.proxy import ProxyShared
from conveyor.traffic.builtin.table import CompiledTable, TableSlot, compile_table
from conveyor.traffic.builtin.upstream import BackendState

PREVIEW_VERSION = "preview"


class _Listener:
    __slots__ = ("gate", "host", "port", "server")

    def __init__(self, server: asyncio.AbstractServer, host: str, port: int, gate: Gate) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.gate = gate


class _Route:
    """Everything the router keeps for one (service, environment)."""

    __slots__ = (
        "backends",
        "budget",
        "env",
        "listeners",
        "main",
        "preview",
        "retired",
        "service",
        "stats",
    )

    def __init__(self, service: str, env: str, sample_size: int) -> None:
        self.service = service
        self.env = env
        self.stats: dict[str, VersionStats] = {NO_VERSION: VersionStats(NO_VERSION, sample_size)}
        empty = CompiledTable((), (), self.stats[NO_VERSION])
        self.main = TableSlot(empty, f"{service}/{env}")
        self.preview = TableSlot(empty, f"{service}/{env} (preview)")
        self.backends: dict[str, BackendState] = {}
        self.retired: list[BackendState] = []  # replaced at a new address, still draining
        self.listeners: dict[bool, _Listener] = {}
        self.budget = RetryBudget(self.stats, RetryPolicy())  # outlives tables, like stats


class BuiltinRouter:
    """Reverse proxy with weighted versions, draining and per-version metrics.

    ``limits`` bounds what clients may make it hold (see ``RouterLimits``).
    ``response_timeout`` bounds how long an instance may stay silent (before its first
    response byte or between two reads of the response); ``upstream_idle_timeout`` is how
    long an idle keep-alive connection is trusted for reuse, which must stay below the
    instances' own keep-alive timeout (2 s suits gunicorn, uvicorn and Node defaults).
    ``reuse_port`` opens listeners with ``SO_REUSEPORT`` so that the router's worker
    processes (``workers``) share each port; off, a port another process holds is a
    ``Conflict``, so two projects on one port never silently share its traffic.
    """

    def __init__(
        self,
        *,
        limits: RouterLimits | None = None,
        connect_timeout: float = 2.0,
        response_timeout: float = 30.0,
        upstream_idle_timeout: float = 2.0,
        max_idle_per_backend: int = 256,
        sample_size: int = DEFAULT_SAMPLES,
        close_grace: float = 5.0,
        reuse_port: bool = False,
    ) -> None:
        limits = limits if limits is not None else RouterLimits()
        self._shared = ProxyShared(
            connect_timeout=connect_timeout,
            response_timeout=response_timeout,
            limits=limits,
            budget=connection_budget(),
        )
        self._upstream_idle_timeout = upstream_idle_timeout
        self._max_idle = max_idle_per_backend
        self._sample_size = sample_size
        self._close_grace = close_grace
        self._reuse_port = reuse_port
        self._sweep_interval = min(
            0.25,
            response_timeout / 4,
            upstream_idle_timeout / 2,
            limits.header_timeout / 4,
            limits.body_timeout / 4,
            limits.linger_timeout / 4,
        )
        self._routes: dict[tuple[str, str], _Route] = {}
        self._epochs: dict[tuple[str, str], int] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # -- TrafficRouter -------------------------------------------------------------------

    async def serve(
        self,
        service: str,
        env: str,
        host: str = "127.0.0.1",
        port: int = 0,
        preview_port: int | None = None,
    ) -> None:
        route = self._route(service, env)
        loop = asyncio.get_running_loop()
        if self._shared.outbox is None or self._shared.outbox.loop is not loop:
            self._shared.outbox = Outbox(loop)
        await self._listen(route, False, host, port)
        if preview_port is None:
            self._unlisten(route, True)
        else:
            await self._listen(route, True, host, preview_port)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def apply(self, service: str, env: str, table: RouteTable) -> None:
        fence_table(self._epochs, service, env, table)
        route = self._route(service, env)
        listed: set[str] = set()

        def backend_for(instance_id: str, host: str, port: int) -> BackendState:
            state = route.backends.get(instance_id)
            if state is None or not state.matches(host, port):
                if state is not None:
                    self._retire(route, state)
                state = BackendState(
                    instance_id,
                    host,
                    port,
                    idle_timeout=self._upstream_idle_timeout,
                    max_idle=self._max_idle,
                )
                route.backends[instance_id] = state
            state.removed = False
            listed.add(instance_id)
            return state

        def stats_for(version: str) -> VersionStats:
            stats = route.stats.get(version)
            if stats is None:
                stats = route.stats[version] = VersionStats(version, self._sample_size)
            return stats

        none_stats = route.stats[NO_VERSION]
        route.budget.policy = table.retry
        main = compile_table(
            table.pools,
            stats_for,
            backend_for,
            none_stats,
            header_route=table.header_route,
            stable_version=table.stable_version,
            budget=route.budget,
        )
        preview_pools: tuple[Pool, ...] = ()
        if table.preview:
            version = table.preview_version or PREVIEW_VERSION
            preview_pools = (Pool(version, 1, table.preview),)
        preview = compile_table(preview_pools, stats_for, backend_for, none_stats)
        for instance_id, state in list(route.backends.items()):
            if instance_id not in listed:
                state.removed = True
                state.close_idle()
                if state.in_flight <= 0:
                    del route.backends[instance_id]
        route.retired = [state for state in route.retired if state.in_flight > 0]
        route.main.table = main
        route.preview.table = preview

    def in_flight(self, service: str, env: str, instance_id: str) -> int:
        route = self._routes.get((service, env))
        if route is None:
            return 0
        state = route.backends.get(instance_id)
        count = state.in_flight if state is not None else 0
        return count + sum(s.in_flight for s in route.retired if s.instance_id == instance_id)

    def counters(self, service: str, env: str) -> dict[str, VersionCounters]:
        route = self._routes.get((service, env))
        if route is None:
            return {}
        return {
            version: stats.snapshot()
            for version, stats in route.stats.items()
            if version != NO_VERSION or stats.requests
        }

    def prometheus_text(self) -> str:
        return render_prometheus(self.series())

    def series(self) -> list[SeriesSnapshot]:
        """Every route's counters and in-flight count per version (what worker processes
        report to the router process, which adds them up)."""
        return [
            SeriesSnapshot(route.service, route.env, version, stats.snapshot(), stats.in_flight)
            for route in self._routes.values()
            for version, stats in route.stats.items()
            if version != NO_VERSION or stats.requests
        ]

    async def close(self) -> None:
        for route in self._routes.values():
            for preview in list(route.listeners):
                self._unlisten(route, preview)
        clients = self._shared.clients
        deadline = perf_counter() + self._close_grace
        while any(c.busy for c in clients) and perf_counter() < deadline:
            await asyncio.sleep(0.02)
        for client in list(clients):
            client.close()
        for route in self._routes.values():
            for state in route.backends.values():
                state.close_idle()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await asyncio.sleep(0)  # let the transports run their close callbacks

    async def detach(self) -> None:
        """In-process, the router cannot outlive its caller: the same as ``close``. Servers
        use the router process (``client.RouterProcess``), which does outlive them."""
        await self.close()

    # -- beyond the Protocol -------------------------------------------------------------

    def unserve(self, service: str, env: str) -> None:
        """Stop listening for a service/environment (this server lost its lease: the port is
        the new leader's to open). Counters are kept; ``serve`` listens again."""
        route = self._routes.get((service, env))
        if route is not None:
            for preview in list(route.listeners):
                self._unlisten(route, preview)

    def bound_port(self, service: str, env: str, preview: bool = False) -> int:
        """The port a listener actually bound (useful after ``serve(..., port=0)``)."""
        route = self._routes.get((service, env))
        listener = route.listeners.get(preview) if route is not None else None
        if listener is None:
            which = "preview listener" if preview else "listener"
            raise NotFound(
                f"the router has no {which} for {service}/{env}",
                hint="call serve() for this service and environment first",
            )
        return listener.port

    @property
    def limits(self) -> RouterLimits:
        return self._shared.limits

    @property
    def connection_budget(self) -> int:
        """Client connections the whole router may hold, from the descriptor limit."""
        return self._shared.budget

    def open_connections(self, service: str, env: str, preview: bool = False) -> int:
        """Client connections a listener holds now (refused ones are not counted)."""
        listener = self._listener(service, env, preview)
        return listener.gate.open if listener is not None else 0

    def refused_connections(self, service: str, env: str, preview: bool = False) -> int:
        """Connections a listener refused at its cap since it opened."""
        listener = self._listener(service, env, preview)
        return listener.gate.refused if listener is not None else 0

    def _listener(self, service: str, env: str, preview: bool) -> _Listener | None:
        route = self._routes.get((service, env))
        return route.listeners.get(preview) if route is not None else None

    def latency_samples(self, service: str, env: str, version: str) -> tuple[float, ...]:
        """The most recent latencies (seconds) of a version, oldest first."""
        route = self._routes.get((service, env))
        stats = route.stats.get(version) if route is not None else None
        return tuple(stats.samples) if stats is not None else ()

    # -- internals -----------------------------------------------------------------------

    def _route(self, service: str, env: str) -> _Route:
        route = self._routes.get((service, env))
        if route is None:
            route = self._routes[(service, env)] = _Route(service, env, self._sample_size)
        return route

    @staticmethod
    def _retire(route: _Route, state: BackendState) -> None:
        state.removed = True
        state.close_idle()
        if state.in_flight > 0:
            route.retired.append(state)

    async def _listen(self, route: _Route, preview: bool, host: str, port: int) -> None:
        current = route.listeners.get(preview)
        if current is not None and current.host == host and port in (0, current.port):
            return
        self._unlisten(route, preview)
        gate = Gate(route.preview if preview else route.main, self._shared)
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                gate, host, port, reuse_address=True, reuse_port=self._reuse_port, backlog=1024
            )
        except OSError as exc:
            which = "preview listener" if preview else "listener"
            raise Conflict(
                f"cannot open the {which} of {route.service}/{route.env} on {host}:{port}: "
                f"{exc.strerror or exc}",
                hint="choose a free port for this environment, or stop the process using it",
            ) from exc
        bound = server.sockets[0].getsockname()[1]
        route.listeners[preview] = _Listener(server, host, bound, gate)

    @staticmethod
    def _unlisten(route: _Route, preview: bool) -> None:
        listener = route.listeners.pop(preview, None)
        if listener is not None:
            listener.server.close()

    async def _sweep(self) -> None:
        """Timeouts without a timer per request: a few checks per second over connections."""
        while True:
            await asyncio.sleep(self._sweep_interval)
            now = perf_counter()
            for client in list(self._shared.clients):
                client.check_timeouts(now)
            for route in self._routes.values():
                route.budget.tick(now)
                for state in route.backends.values():
                    if state.idle:
                        state.expire_idle(now)
