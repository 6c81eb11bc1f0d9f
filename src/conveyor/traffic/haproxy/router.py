"""``HAProxyRouter``: the ``TrafficRouter`` that drives one HAProxy through its runtime API.

The router keeps the *desired* state (every route's listeners and table) in Python and
makes HAProxy match it the cheapest safe way:

* ``apply()`` turns the difference between what the current worker has and what the table
  wants into runtime commands (``plan.transition``): weights, new servers, drains. No
  reload, no new process: a canary step or an abort is a few socket writes and applies to
  the next request;
* ``serve()`` changes listeners, which only a configuration can do: it renders the whole
  file from the desired state (current weights included) and reloads gracefully;
* a background task finishes what a table change started: a removed server is drained,
  then put in maintenance and deleted once HAProxy reports no session on it, and its final
  counters are banked first. If a command ever fails (the router's book and the worker
  disagree) or the master dies, the same task reloads or restarts from the desired state.

Counters are cumulative for the router's lifetime although HAProxy's are not (a deleted
server or a replaced worker takes its counters along): the router banks a deleted server's
final tally, and keeps polling a worker replaced by a reload (through the master socket)
until it exits, then banks its last view. See ``stats`` for how HAProxy counters map onto
``VersionCounters`` and ``latency`` for latencies.

Like ``BuiltinRouter``, every method but ``serve``/``close`` is synchronous and must be
called from the event loop thread; a runtime command is a ~50 µs Unix socket round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from conveyor.core.model import RouteTable, VersionCounters
from conveyor.errors import Conflict, NotFound
from conveyor.traffic.builtin.metrics import NO_VERSION, SeriesSnapshot, render_prometheus
from conveyor.traffic.builtin.router import PREVIEW_VERSION
from conveyor.traffic.haproxy.config import Listen, RouteConfig, Settings, render
from conveyor.traffic.haproxy.latency import LatencyBook, LogReceiver
from conveyor.traffic.haproxy.plan import (
    LiveServer,
    ProxyNames,
    ServerSpec,
    drained,
    preview_servers,
    proxy_names,
    server_weights,
    succeeded,
    transition,
)
from conveyor.traffic.haproxy.process import Master, SocketError, paths_for, resolve_binary
from conveyor.traffic.haproxy.stats import StatRow, Tally, add_into, merge, parse_stat, worker_view

log = logging.getLogger(__name__)

_STAT = "show stat -1 6 -1"  # backends and servers of every proxy
_MAX_BACKOFF = 5.0


@dataclass
class _Route:
    """Desired state of one (service, environment)."""

    service: str
    env: str
    names: ProxyNames
    listen: Listen | None = None
    preview_listen: Listen | None = None
    servers: tuple[ServerSpec, ...] = ()
    preview_servers: tuple[ServerSpec, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.service}/{self.env}"


@dataclass
class _Worker:
    """What the router knows of one HAProxy worker's counters."""

    pid: int
    deleted: dict[str, dict[str, Tally]] = field(default_factory=dict)  # backend -> version
    rows: tuple[StatRow, ...] = ()
    view: dict[str, dict[str, Tally]] = field(default_factory=dict)  # route -> version


class HAProxyRouter:
    """Weighted versions, draining and per-version metrics, by HAProxy.

    ``state_dir`` holds ``haproxy/haproxy.cfg``, the sockets, the pidfile and HAProxy's own
    output. ``latency_log`` makes every request's latency available (see ``latency``) at
    the cost of one log datagram per request; without it ``latency_samples()`` is empty and
    the latency histogram has no buckets.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        haproxy: str = "haproxy",
        nbthread: int = 1,
        settings: Settings | None = None,
        latency_log: bool = True,
        close_grace: float = 5.0,
        sweep_interval: float = 0.1,
    ) -> None:
        self._settings = replace(settings or Settings(), nbthread=nbthread)
        self._paths = paths_for(state_dir)
        self._master = Master(resolve_binary(haproxy), self._paths)
        self._close_grace = close_grace
        self._sweep_interval = sweep_interval
        self._routes: dict[tuple[str, str], _Route] = {}
        self._backends: dict[str, str] = {}  # backend -> route label, never shrinks
        self._versions: dict[tuple[str, str], str] = {}  # (backend, server) -> version
        self._instances: dict[tuple[str, str], str] = {}  # (backend, server) -> instance id
        self._live: dict[str, dict[str, LiveServer]] = {}  # the current worker's servers
        self._served: dict[str, tuple[Listen | None, Listen | None]] = {}  # in the config
        self._current: _Worker | None = None
        self._retired: list[_Worker] = []
        self._bank: dict[str, dict[str, Tally]] = {}  # exited workers' final views
        self._book = LatencyBook(self._resolve)
        self._receiver = LogReceiver(self._paths.log_socket, self._book) if latency_log else None
        self._sweeper: asyncio.Task[None] | None = None
        self._resync = False
        self._reloading = False  # apply() only records; the reload pushes the rest after
        self._lock = asyncio.Lock()

    # -- TrafficRouter -------------------------------------------------------------------

    async def serve(
        self,
        service: str,
        env: str,
        host: str = "127.0.0.1",
        port: int = 0,
        preview_port: int | None = None,
    ) -> None:
        async with self._lock:
            route = self._route(service, env)
            listen = self._listen(route, route.listen, host, port)
            preview = (
                None
                if preview_port is None
                else self._listen(route, route.preview_listen, host, preview_port)
            )
            if preview == listen:
                raise Conflict(
                    f"the preview listener of {route.label} cannot share {listen.address} "
                    "with its main listener",
                    hint="give the preview listener its own port",
                )
            route.listen, route.preview_listen = listen, preview
            if self._receiver is not None:
                self._paths.sockets.mkdir(parents=True, exist_ok=True)
                self._receiver.open()
            if not self._master.running():
                await self._start()
            elif self._served.get(route.label) != (route.listen, route.preview_listen):
                await self._reload()
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def apply(self, service: str, env: str, table: RouteTable) -> None:
        route = self._route(service, env)
        route.servers = server_weights(table.pools)
        version = table.preview_version or PREVIEW_VERSION
        route.preview_servers = preview_servers(version, table.preview)
        self._remember(route)
        if route.label in self._served and not self._reloading and self._master.running():
            self._push(route.names.backend, route.servers)
            self._push(route.names.preview_backend, route.preview_servers)

    def in_flight(self, service: str, env: str, instance_id: str) -> int:
        route = self._routes.get((service, env))
        if route is None:
            return 0
        backends = (route.names.backend, route.names.preview_backend)
        return sum(
            row.scur
            for worker in self._refreshed()
            for row in worker.rows
            if row.proxy in backends and self._instances.get((row.proxy, row.server)) == instance_id
        )

    def counters(self, service: str, env: str) -> dict[str, VersionCounters]:
        label = f"{service}/{env}"
        tallies = self._tallies().get(label, {})
        return {version: self._counters(label, version, t) for version, t in tallies.items()}

    def prometheus_text(self) -> str:
        tallies = self._tallies()
        busy: dict[tuple[str, str], int] = {}
        for worker in [self._current, *self._retired]:
            for row in worker.rows if worker is not None else ():
                label = self._backends.get(row.proxy)
                version = self._versions.get((row.proxy, row.server))
                if label is not None and version is not None:
                    busy[(label, version)] = busy.get((label, version), 0) + row.scur
        series = []
        for route in self._routes.values():
            for version, tally in sorted(tallies.get(route.label, {}).items()):
                series.append(
                    SeriesSnapshot(
                        route.service,
                        route.env,
                        version,
                        self._counters(route.label, version, tally),
                        busy.get((route.label, version), 0),
                    )
                )
        return render_prometheus(series)

    async def close(self) -> None:
        async with self._lock:
            if self._sweeper is not None:
                self._sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sweeper
                self._sweeper = None
            if self._master.running():
                with contextlib.suppress(SocketError):
                    self._refreshed()
                self._bank_workers([w for w in (self._current, *self._retired) if w])
                await self._master.stop(self._close_grace)
            self._current, self._retired = None, []
            self._served.clear()
            self._live.clear()
            if self._receiver is not None:
                self._receiver.close()

    # -- beyond the Protocol -------------------------------------------------------------

    def bound_port(self, service: str, env: str, preview: bool = False) -> int:
        """The port a listener uses (``serve(..., port=0)`` picks a free one)."""
        route = self._routes.get((service, env))
        listen = None if route is None else route.preview_listen if preview else route.listen
        if listen is None:
            which = "preview listener" if preview else "listener"
            raise NotFound(
                f"the router has no {which} for {service}/{env}",
                hint="call serve() for this service and environment first",
            )
        return listen.port

    def latency_samples(self, service: str, env: str, version: str) -> tuple[float, ...]:
        """The most recent latencies (seconds) of a version, oldest first (needs latency_log)."""
        stats = self._book.get(f"{service}/{env}", version)
        return tuple(stats.samples) if stats is not None else ()

    def runtime(self, command: str) -> str:
        """Send one runtime API command to the current worker (diagnostics, tests)."""
        return self._master.stats(command)

    @property
    def worker_pid(self) -> int | None:
        """The pid of the HAProxy worker serving new requests (it changes only on reload)."""
        return self._master.worker

    @property
    def master_pid(self) -> int | None:
        return self._master.pid

    @property
    def config_path(self) -> Path:
        return self._paths.config

    # -- desired state -------------------------------------------------------------------

    def _route(self, service: str, env: str) -> _Route:
        route = self._routes.get((service, env))
        if route is None:
            route = _Route(service, env, proxy_names(service, env))
            for backend in (route.names.backend, route.names.preview_backend):
                self._backends[backend] = route.label
            self._routes[(service, env)] = route
            self._book.forget_names()
        return route

    def _remember(self, route: _Route) -> None:
        for backend, specs in (
            (route.names.backend, route.servers),
            (route.names.preview_backend, route.preview_servers),
        ):
            for spec in specs:
                self._versions[(backend, spec.name)] = spec.version
                self._instances[(backend, spec.name)] = spec.instance_id

    def _resolve(self, backend: str, server: str) -> tuple[str, str] | None:
        label = self._backends.get(backend)
        if label is None:
            return None
        if not server:
            return label, NO_VERSION
        version = self._versions.get((backend, server))
        return None if version is None else (label, version)

    def _listen(self, route: _Route, current: Listen | None, host: str, port: int) -> Listen:
        if port == 0:
            if current is not None and current.host == host:
                return current
            port = _free_port(host)
        wanted = Listen(host, port)
        if wanted == current:
            return current
        for other in self._routes.values():
            if other is not route and wanted in (other.listen, other.preview_listen):
                raise Conflict(
                    f"cannot listen for {route.label} on {wanted.address}: "
                    f"{other.label} already does",
                    hint="give every environment its own port",
                )
        if wanted not in {bound for pair in self._served.values() for bound in pair if bound}:
            _check_free(route.label, wanted)
        return wanted

    def _config(self) -> tuple[str, dict[str, tuple[ServerSpec, ...]]]:
        """The configuration text, and the servers it gives each backend."""
        routes = [
            RouteConfig(r.names, r.listen, r.preview_listen, r.servers, r.preview_servers)
            for r in self._routes.values()
            if r.listen is not None
        ]
        servers: dict[str, tuple[ServerSpec, ...]] = {}
        for route in routes:
            servers[route.names.backend] = route.servers
            servers[route.names.preview_backend] = route.preview_servers
        log_socket = self._paths.log_socket if self._receiver is not None else None
        return render(self._settings, self._paths.stats_socket, routes, log_socket), servers

    def _configured(self, servers: dict[str, tuple[ServerSpec, ...]]) -> None:
        """The book after a start or reload, then whatever ``apply()`` asked for meanwhile."""
        self._served = {
            r.label: (r.listen, r.preview_listen)
            for r in self._routes.values()
            if r.listen is not None
        }
        self._live = {
            backend: {spec.name: LiveServer(spec) for spec in specs}
            for backend, specs in servers.items()
        }
        self._resync = False
        for route in self._routes.values():
            if route.label in self._served:
                self._push(route.names.backend, route.servers)
                self._push(route.names.preview_backend, route.preview_servers)

    # -- HAProxy -------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._master.adopt():
            await self._reload()
            return
        text, servers = self._config()
        await self._master.start(text)
        assert self._master.worker is not None
        self._current = _Worker(self._master.worker)
        self._configured(servers)

    async def _reload(self) -> None:
        with contextlib.suppress(SocketError):
            self._refreshed()
        text, servers = self._config()
        self._reloading = True
        try:
            old = await self._master.reload(text)
        finally:
            self._reloading = False
        if self._current is not None and self._current.pid == old:
            self._retired.append(self._current)
        assert self._master.worker is not None
        self._current = _Worker(self._master.worker)
        self._configured(servers)

    def _push(self, backend: str, desired: tuple[ServerSpec, ...]) -> None:
        live = self._live.setdefault(backend, {})
        for command in transition(backend, live, desired):
            try:
                answer = self._master.stats(command.text)
            except SocketError as exc:
                log.warning("HAProxy did not take %r (%s); will resync", command.text, exc)
                self._resync = True
                return
            if not succeeded(command, answer):
                log.warning("HAProxy refused %r: %s; will resync", command.text, answer.strip())
                self._resync = True
                return
        wanted = {spec.name: LiveServer(spec) for spec in desired}
        for name, current in live.items():
            if name not in wanted:
                wanted[name] = LiveServer(current.spec, draining=True)
        self._live[backend] = wanted

    async def _sweep(self) -> None:
        """Finish drains, follow old workers, and heal: a few times a second.

        A failing round (HAProxy cannot start: its port was taken meanwhile) is retried
        with exponential backoff, up to a few seconds, so it neither spins nor gives up.
        """
        failures = 0
        while True:
            await asyncio.sleep(min(_MAX_BACKOFF, self._sweep_interval * 2**failures))
            try:
                async with self._lock:
                    await self._sweep_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = min(failures + 1, 10)
                log.exception("HAProxy router maintenance failed; will retry")

    async def _sweep_once(self) -> None:
        if not self._master.running():
            if self._served:
                log.warning("HAProxy exited unexpectedly; starting it again")
                self._bank_workers([w for w in (self._current, *self._retired) if w])
                self._current, self._retired = None, []
                await self._master.stop(0.0)
                await self._start()
            return
        if self._resync:
            await self._reload()
            return
        # Poll every worker: a crash, or a replaced worker's exit, loses only what happened
        # since the last poll. Drains move on only from rows read in this very round.
        fresh = self._current is not None and self._refresh(
            self._current, self._master.stats(_STAT)
        )
        self._refreshed(current=False)
        draining = any(s.draining for servers in self._live.values() for s in servers.values())
        if fresh and draining:
            self._finish_drains()
        if self._retired:
            alive = set(self._master.procs().old_workers)
            gone = [w for w in self._retired if w.pid not in alive]
            self._bank_workers(gone)
            self._retired = [w for w in self._retired if w.pid in alive]

    def _finish_drains(self) -> None:
        current = self._current
        if current is None:
            return
        rows = {(row.proxy, row.server): row for row in current.rows}
        for backend, servers in self._live.items():
            for name, server in list(servers.items()):
                if not server.draining:
                    continue
                row = rows.get((backend, name))
                if row is None:  # already gone (deleted by hand?): nothing left to bank
                    del servers[name]
                    continue
                if row.scur > 0:
                    continue
                answers = [(c, self._master.stats(c.text)) for c in drained(backend, name)]
                if all(succeeded(c, a) for c, a in answers):
                    by_version = current.deleted.setdefault(backend, {})
                    add_into(by_version, server.spec.version, row.tally)
                    del servers[name]

    # -- counters ------------------------------------------------------------------------

    def _refresh(self, worker: _Worker, text: str) -> bool:
        if not text.startswith("# pxname"):
            return False  # not a stats answer: the worker is gone, keep its last view
        worker.rows = parse_stat(text)
        view = worker_view(worker.rows, self._backends, self._versions, worker.deleted, NO_VERSION)
        worker.view = {route: dict(v) for route, v in view.routes.items()}
        return True

    def _refreshed(self, current: bool = True) -> list[_Worker]:
        """Every worker with fresh rows (old workers through the master socket)."""
        workers: list[_Worker] = []
        if current and self._current is not None and self._master.running():
            with contextlib.suppress(SocketError):
                self._refresh(self._current, self._master.stats(_STAT))
            workers.append(self._current)
        for worker in self._retired:
            with contextlib.suppress(SocketError):
                self._refresh(worker, self._master.on_worker(worker.pid, _STAT))
            workers.append(worker)
        return workers

    def _bank_workers(self, workers: list[_Worker]) -> None:
        self._bank = merge([self._bank, *(w.view for w in workers)])

    def _tallies(self) -> dict[str, dict[str, Tally]]:
        return merge([self._bank, *(w.view for w in self._refreshed())])

    def _counters(self, label: str, version: str, tally: Tally) -> VersionCounters:
        stats = self._book.get(label, version)
        if stats is None:
            return tally.counters()
        snapshot = stats.snapshot()
        return tally.counters(snapshot.latency_sum, snapshot.latency_buckets)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_free(label: str, listen: Listen) -> None:
    """Fail with a clear error before HAProxy would fail to bind (and the reload with it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((listen.host, listen.port))
        except OSError as exc:
            raise Conflict(
                f"cannot open the listener of {label} on {listen.address}: {exc.strerror or exc}",
                hint="choose a free port for this environment, or stop the process using it",
            ) from exc
