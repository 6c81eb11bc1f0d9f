"""``HAProxyRouter``: the ``TrafficRouter`` that drives one HAProxy through its runtime API.

The router keeps the *desired* state (every route's listeners and table) in Python and
makes HAProxy match it the cheapest safe way:

* ``apply()`` turns the difference between what the current worker has and what the table
  wants into runtime commands (``plan.transition``): weights, instances taking free server
  slots, drains. No reload, no new process: a canary step or an abort is a few socket
  writes and applies to the next request;
* ``serve()`` changes listeners, which only a configuration can do: it renders the whole
  file from the desired state (current weights included) and reloads gracefully. In-flight
  requests finish on the old worker, but HAProxy 2.6 closes its *idle* keep-alive client
  connections at once, so a client that sends its next request at that very moment sees
  the connection close (RFC 9112 lets it retry; browsers do). Reloads are therefore kept
  to new listeners, and to healing after an error;
* a header route (``RouteTable.header_route``) is a third backend holding the header
  version's instances and a one-entry map the frontend's rule reads (see ``headers``):
  setting, changing or removing it is runtime commands too. Only a header *name* the
  route has never used needs a rule in the configuration, hence one reload, the first
  time;
* a background task finishes what a table change started: a removed instance's slot is
  drained, then parked in maintenance once HAProxy reports no session on it, and what the
  instance did is banked. If a command ever fails (the router's book and the worker
  disagree) or the master dies, the same task reloads or restarts from the desired state.

Counters are cumulative for the router's lifetime although HAProxy's are not (a slot serves
several instances over time, a replaced worker takes its counters along): see ``workers``
for the books, ``stats`` for how HAProxy counters map onto ``VersionCounters`` and
``latency`` for latencies. A worker replaced by a reload is polled through the master
socket until it exits; requests it finishes after its last poll (at most one sweep
interval) are missing from the counters, though not from the latency histogram.

Like ``BuiltinRouter``, every method but ``serve``/``close`` is synchronous and must be
called from the event loop thread; a runtime command is a ~50 µs Unix socket round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from conveyor.core.model import RouteTable, VersionCounters
from conveyor.errors import Conflict, NotFound
from conveyor.net import free_port
from conveyor.traffic.base import fence_table
from conveyor.traffic.builtin.metrics import NO_VERSION, SeriesSnapshot, render_prometheus
from conveyor.traffic.builtin.router import PREVIEW_VERSION
from conveyor.traffic.haproxy import saved
from conveyor.traffic.haproxy.config import Listen, RouteConfig, Settings, bound, render
from conveyor.traffic.haproxy.headers import (
    HeaderMatch,
    fill,
    header_match,
    header_servers,
    map_text,
    prepare,
    prepared_version,
)
from conveyor.traffic.haproxy.latency import LatencyBook, LogReceiver
from conveyor.traffic.haproxy.plan import (
    Command,
    ProxyNames,
    ServerSpec,
    Slot,
    layout,
    park,
    preview_servers,
    proxy_names,
    server_weights,
    succeeded,
    transition,
)
from conveyor.traffic.haproxy.process import (
    Master,
    SocketError,
    paths_for,
    private_dir,
    resolve_binary,
)
from conveyor.traffic.haproxy.stats import Tally, Views, merge, negated
from conveyor.traffic.haproxy.workers import WorkerBook

log = logging.getLogger(__name__)

_STAT = "show stat -1 6 -1"  # backends and servers of every proxy
_MAX_BACKOFF = 5.0
_EXITED_KEPT = 8  # exited workers whose books still resolve late log lines


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
    header_servers: tuple[ServerSpec, ...] = ()
    header: HeaderMatch | None = None  # what the header map should hold
    header_names: tuple[str, ...] = ()  # every header name routed by so far: rules to render
    applied: bool = False  # a table has arrived

    @property
    def label(self) -> str:
        return f"{self.service}/{self.env}"

    def backends(self) -> tuple[tuple[str, tuple[ServerSpec, ...]], ...]:
        return (
            (self.names.backend, self.servers),
            (self.names.preview_backend, self.preview_servers),
            (self.names.header_backend, self.header_servers),
        )


@dataclass(frozen=True)
class _Rendered:
    """A configuration, and what a worker started from it has: slots, rules, map entries."""

    text: str
    slots: dict[str, dict[str, Slot]]
    rules: dict[str, tuple[str, ...]]  # route label -> header names with a rule
    maps: dict[str, HeaderMatch | None]  # route label -> map file content


class HAProxyRouter:
    """Weighted versions, draining and per-version metrics, by HAProxy.

    ``state_dir`` holds ``haproxy/haproxy.cfg``, the sockets, the pidfile and HAProxy's own
    output. ``latency_log`` makes every request's latency available (see ``latency``) at
    the cost of one log datagram per request; without it ``latency_samples()`` is empty and
    the latency histogram has no buckets.

    A router whose state dir has a running HAProxy (left by a Conveyor process that died)
    adopts it: ``serve()`` on the listeners it already has changes nothing, users keep the
    split they had, and the first reload happens once every served route has its table
    (or ``adoption_grace`` seconds after the first ``serve()``).
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
        adoption_grace: float = 5.0,
    ) -> None:
        self._settings = replace(settings or Settings(), nbthread=nbthread)
        self._paths = paths_for(state_dir)
        self._master = Master(resolve_binary(haproxy), self._paths)
        self._close_grace = close_grace
        self._sweep_interval = sweep_interval
        self._routes: dict[tuple[str, str], _Route] = {}
        self._epochs: dict[tuple[str, str], int] = {}
        self._backends: dict[str, str] = {}  # backend -> route label
        self._served: dict[str, tuple[Listen | None, Listen | None]] = {}  # in the config
        self._rules: dict[str, tuple[str, ...]] = {}  # header rules in the worker's config
        self._maps: dict[str, HeaderMatch | None] = {}  # the worker's header maps, if known
        self._inherited: frozenset[Listen] = frozenset()  # an adopted HAProxy's listeners
        self._awaiting: set[str] = set()  # adopted routes served, waiting for their tables
        self._adopted_at: float | None = None
        self._adoption_grace = adoption_grace
        self._current: WorkerBook | None = None
        self._retired: list[WorkerBook] = []  # replaced by a reload, still finishing requests
        self._exited: deque[WorkerBook] = deque(maxlen=_EXITED_KEPT)
        self._bank: Views = {}  # exited workers' last views
        self._book = LatencyBook(self._resolve)
        self._receiver = LogReceiver(self._paths.log_socket, self._book) if latency_log else None
        self._sweeper: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._resync = False  # the worker must be reloaded from the desired state
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
            if not self._master.running() and self._master.adopt():
                # A previous router's HAProxy still serves: its listeners are ours to keep,
                # and so is its worker if the saved book matches it.
                with contextlib.suppress(OSError):
                    self._inherited = bound(self._paths.config.read_text())
                self._take_over()
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
                private_dir(self._paths.sockets)
                self._receiver.open()
            if not self._master.running():
                await self._start()
            elif self._current is None and {listen, preview} - {None} <= self._inherited:
                # Adopted: users keep what they had until the tables arrive (see apply).
                self._awaiting.add(route.label)
                self._adopted_at = self._adopted_at or asyncio.get_running_loop().time()
                self._adopted_tables()
            elif self._served.get(route.label) != (listen, preview):
                await self._reload()
            if self._sweeper is None or self._sweeper.done():
                self._wake = asyncio.Event()
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def apply(self, service: str, env: str, table: RouteTable) -> None:
        fence_table(self._epochs, service, env, table)
        route = self._route(service, env)
        route.servers = server_weights(table.pools)
        version = table.preview_version or PREVIEW_VERSION
        route.preview_servers = preview_servers(version, table.preview)
        route.header_servers = header_servers(table.pools, table.header_route)
        route.header = header_match(table.header_route, route.header_servers)
        if route.header is not None and route.header.name not in route.header_names:
            route.header_names += (route.header.name,)
        route.applied = True
        if route.label in self._awaiting:
            self._adopted_tables()
        elif route.label in self._served and not self._reloading and self._master.running():
            self._push(route)
            self._save_book()

    def in_flight(self, service: str, env: str, instance_id: str) -> int:
        route = self._routes.get((service, env))
        if route is None:
            return 0
        backends = {backend for backend, _ in route.backends()}
        return sum(
            sessions
            for worker in self._refreshed()
            for backend, spec, sessions in worker.busy()
            if backend in backends and spec.instance_id == instance_id
        )

    def counters(self, service: str, env: str) -> dict[str, VersionCounters]:
        label = f"{service}/{env}"
        tallies = self._tallies().get(label, {})
        return {version: self._counters(label, version, t) for version, t in tallies.items()}

    def prometheus_text(self) -> str:
        tallies = self._tallies()
        busy: dict[tuple[str, str], int] = {}
        for worker in self._workers():
            for backend, spec, sessions in worker.busy():
                key = (self._backends.get(backend, ""), spec.version)
                busy[key] = busy.get(key, 0) + sessions
        series = [
            SeriesSnapshot(
                route.service,
                route.env,
                version,
                self._counters(route.label, version, tally),
                busy.get((route.label, version), 0),
            )
            for route in self._routes.values()
            for version, tally in sorted(tallies.get(route.label, {}).items())
        ]
        return render_prometheus(series)

    async def close(self) -> None:
        async with self._lock:
            if self._sweeper is not None:
                self._sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sweeper
                self._sweeper = None
            if self._master.running():
                self._refreshed()
                await self._master.stop(self._close_grace)
            self._forget_workers()
            self._served.clear()
            if self._receiver is not None:
                self._receiver.close()

    async def detach(self) -> None:
        """Let go of HAProxy, leaving it serving: the book is saved for a successor to adopt
        the worker as is (see ``saved``); the latency log socket closes with us."""
        async with self._lock:
            if self._sweeper is not None:
                self._sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sweeper
                self._sweeper = None
            self._save_book()
            self._master.release()
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

    def servers(self, service: str, env: str, preview: bool = False) -> dict[str, Slot]:
        """What each ``server`` line of a route's backend stands for now (diagnostics)."""
        route = self._routes.get((service, env))
        if route is None or self._current is None:
            return {}
        backend = route.names.preview_backend if preview else route.names.backend
        return dict(self._current.slots.get(backend, {}))

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
            for backend, _ in route.backends():
                self._backends[backend] = route.label
            self._routes[(service, env)] = route
        return route

    def _listen(self, route: _Route, current: Listen | None, host: str, port: int) -> Listen:
        if port == 0:
            if current is not None and current.host == host:
                return current
            port = free_port(host)
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
        ours = {listen for pair in self._served.values() for listen in pair if listen}
        if wanted not in ours | self._inherited:
            _check_free(route.label, wanted)
        return wanted

    def _config(self) -> _Rendered:
        """The configuration of the desired state, with its header maps written to disk."""
        previous = self._current.slots if self._current is not None else {}
        slots: dict[str, dict[str, Slot]] = {}
        rules: dict[str, tuple[str, ...]] = {}
        maps: dict[str, HeaderMatch | None] = {}
        routes: list[RouteConfig] = []
        for route in self._routes.values():
            if route.listen is None:
                continue
            for backend, specs in route.backends():
                slots[backend] = layout(specs, previous.get(backend))
            names = route.names
            header_map = self._paths.header_map(names.frontend)
            rules[route.label] = route.header_names
            if route.header_names:
                maps[route.label] = route.header
                _write(header_map, map_text(route.header))
            routes.append(
                RouteConfig(
                    names,
                    route.listen,
                    route.preview_listen,
                    slots[names.backend],
                    slots[names.preview_backend],
                    slots[names.header_backend],
                    route.header_names,
                    header_map,
                )
            )
        log_socket = self._paths.log_socket if self._receiver is not None else None
        text = render(self._settings, self._paths.stats_socket, routes, log_socket)
        return _Rendered(text, slots, rules, maps)

    def _resolve(self, pid: int, backend: str, server: str) -> tuple[str, str] | None:
        label = self._backends.get(backend)
        if label is None:
            return None
        if not server:
            return label, NO_VERSION
        for worker in self._workers(exited=True):
            if worker.pid == pid:
                spec = worker.spec_of(backend, server)
                return None if spec is None else (label, spec.version)
        return None

    # -- HAProxy -------------------------------------------------------------------------

    async def _start(self) -> None:
        rendered = self._config()
        await self._master.start(rendered.text)
        self._configured(rendered)

    async def _reload(self) -> None:
        self._refreshed()
        rendered = self._config()
        self._reloading = True
        try:
            old = await self._master.reload(rendered.text)
        finally:
            self._reloading = False
        if self._current is not None and self._current.pid == old:
            self._retired.append(self._current)
        self._configured(rendered)

    def _configured(self, rendered: _Rendered) -> None:
        """A new worker runs ``rendered``; then whatever ``apply()`` asked for meanwhile."""
        assert self._master.worker is not None
        self._current = WorkerBook(self._master.worker, rendered.slots)
        self._rules, self._maps = rendered.rules, rendered.maps
        self._served = {
            r.label: (r.listen, r.preview_listen)
            for r in self._routes.values()
            if r.listen is not None
        }
        self._resync = False
        self._awaiting.clear()
        self._adopted_at = None
        for route in self._routes.values():
            if route.label in self._served:
                self._push(route)
        self._save_book()

    def _save_book(self) -> None:
        """Save the current worker's slots and listeners for a successor to adopt."""
        current = self._current
        if current is None:
            return
        routes = tuple(
            saved.SavedRoute(
                r.service,
                r.env,
                r.listen,
                r.preview_listen,
                self._rules.get(r.label, ()),
                self._maps.get(r.label),
            )
            for r in self._routes.values()
            if r.label in self._served and r.listen is not None
        )
        temporary = self._paths.book.with_suffix(".tmp")
        try:
            temporary.write_text(saved.dump(saved.SavedBook(current.pid, routes, current.slots)))
            temporary.replace(self._paths.book)
        except OSError as exc:
            log.warning("cannot save the HAProxy router's book %s: %s", self._paths.book, exc)

    def _take_over(self) -> bool:
        """Carry on with an adopted worker as it is, if the saved book describes it."""
        try:
            book = saved.load(self._paths.book.read_text())
            answer = self._master.stats(_STAT)
        except (OSError, ValueError) as exc:  # SocketError is an OSError
            log.info("not adopting the HAProxy worker as is (%s); will reload", exc)
            return False
        worker = WorkerBook(book.worker, book.slots)
        if (
            book.worker != self._master.worker
            or not worker.refresh(answer, {}, NO_VERSION)
            or not saved.matches(book.slots, worker.rows)
        ):
            log.info("the HAProxy worker does not match the saved book; will reload")
            return False
        live = saved.serving(book.slots)
        for entry in book.routes:
            route = self._route(entry.service, entry.env)
            route.listen, route.preview_listen = entry.listen, entry.preview
            route.servers = live.get(route.names.backend, ())
            route.preview_servers = live.get(route.names.preview_backend, ())
            route.header_servers = live.get(route.names.header_backend, ())
            route.header, route.header_names = entry.header, entry.headers
            self._rules[route.label] = entry.headers
            if entry.headers:
                self._maps[route.label] = entry.header
            self._served[route.label] = (entry.listen, entry.preview)
        worker.refresh(answer, self._backends, NO_VERSION)
        self._current = worker
        self._bank = merge([self._bank, negated(worker.view)])  # count from the adoption on
        log.info("adopted HAProxy worker %d with %d routes as is", worker.pid, len(book.routes))
        return True

    def _push(self, route: _Route) -> None:
        """Bring the current worker to the route's desired state through the runtime API.

        A header route is taken away before its servers drain, and set only once they
        are ready, so a header-routed request never finds the header backend empty.
        """
        current = self._current
        assert current is not None
        rules = self._rules.get(route.label, ())
        stale_map = bool(rules) and (
            route.label not in self._maps or self._maps[route.label] != route.header
        )
        if stale_map and route.header is None and not self._push_map(route):
            return
        for backend, desired in route.backends():
            change = transition(backend, current.slots.get(backend, {}), desired)
            for command in change.commands:
                if self._send(command) is None:
                    return
            current.slots[backend] = change.slots
        if stale_map and route.header is not None and not self._push_map(route):
            return
        if route.header is not None and route.header.name not in rules:
            log.info("%s routes by a new header, %s: reloading", route.label, route.header.name)
            self._heal()

    def _push_map(self, route: _Route) -> bool:
        """Replace the route's header map atomically with what the route wants."""
        path = self._paths.header_map(route.names.frontend)
        answer = self._send(prepare(path))
        version = None if answer is None else prepared_version(answer)
        if version is None:
            if answer is not None:
                self._heal()
            return False
        for command in fill(path, version, route.header):
            if self._send(command) is None:
                return False
        self._maps[route.label] = route.header
        return True

    def _send(self, command: Command) -> str | None:
        """One command's answer; ``None`` (and a reload on its way) if it did not work."""
        try:
            answer = self._master.stats(command.text)
        except SocketError as exc:
            log.warning("HAProxy did not take %r (%s); reloading", command.text, exc)
            self._heal()
            return None
        if not succeeded(command, answer):
            log.warning("HAProxy refused %r: %s; reloading", command.text, answer.strip())
            self._heal()
            return None
        return answer

    def _adopted_tables(self) -> None:
        """Once every adopted route has its table, reload with all of them at once."""
        if all(r.applied for r in self._routes.values() if r.label in self._awaiting):
            self._heal()

    def _heal(self) -> None:
        """Have the sweeper reload from the desired state as soon as it can."""
        self._resync = True
        if self._wake is not None:
            self._wake.set()

    async def _sweep(self) -> None:
        """Park drained slots, follow old workers, and heal: a few times a second.

        A failing round (HAProxy cannot start: its port was taken meanwhile) is retried
        with exponential backoff, up to a few seconds, so it neither spins nor gives up.
        """
        assert self._wake is not None
        failures = 0
        while True:
            delay = min(_MAX_BACKOFF, self._sweep_interval * 2**failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
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
            if self._served or self._awaiting:
                log.warning("HAProxy exited unexpectedly; starting it again")
                self._forget_workers()
                await self._master.stop(0.0)
                await self._start()
            return
        if self._adopted_at is not None:
            waited = asyncio.get_running_loop().time() - self._adopted_at
            if waited > self._adoption_grace:
                self._resync = True  # some adopted route never got a table: stop waiting
        if self._resync:
            await self._reload()
            if self._resync:  # refused again by a worker fresh from our own configuration
                raise RuntimeError("HAProxy refuses the router's runtime commands")
            return
        # Poll every worker: a crash, or a replaced worker's exit, loses only what happened
        # since the last poll. Slots are parked only from rows read in this very round.
        current = self._current
        if current is not None and current.refresh(
            self._master.stats(_STAT), self._backends, NO_VERSION
        ):
            parked = False
            for backend, name, row in list(current.idle_draining()):
                if succeeded(command := park(backend, name), self._master.stats(command.text)):
                    current.parked(backend, name, row)
                    parked = True
            if parked:
                self._save_book()
        self._refreshed(current=False)
        if self._retired:
            alive = set(self._master.procs().old_workers)
            for worker in [w for w in self._retired if w.pid not in alive]:
                self._retired.remove(worker)
                self._retire(worker)

    # -- counters ------------------------------------------------------------------------

    def _workers(self, exited: bool = False) -> list[WorkerBook]:
        live = [w for w in (self._current, *self._retired) if w is not None]
        return live + list(self._exited) if exited else live

    def _refreshed(self, current: bool = True) -> list[WorkerBook]:
        """Every live worker with fresh rows (old workers through the master socket)."""
        if not self._master.running():
            return self._workers()
        if current and self._current is not None:
            with contextlib.suppress(SocketError):
                self._current.refresh(self._master.stats(_STAT), self._backends, NO_VERSION)
        for worker in self._retired:
            with contextlib.suppress(SocketError):
                answer = self._master.on_worker(worker.pid, _STAT)
                worker.refresh(answer, self._backends, NO_VERSION)
        return self._workers()

    def _retire(self, worker: WorkerBook) -> None:
        """A worker has exited: its last view becomes history."""
        self._bank = merge([self._bank, worker.view])
        self._exited.append(worker)

    def _forget_workers(self) -> None:
        for worker in self._workers():
            self._retire(worker)
        self._current, self._retired = None, []

    def _tallies(self) -> dict[str, dict[str, Tally]]:
        return merge([self._bank, *(w.view for w in self._refreshed())])

    def _counters(self, label: str, version: str, tally: Tally) -> VersionCounters:
        stats = self._book.get(label, version)
        if stats is None:
            return tally.counters()
        snapshot = stats.snapshot()
        return tally.counters(snapshot.latency_sum, snapshot.latency_buckets)


def _write(path: Path, text: str) -> None:
    """Replace a file atomically: a worker starting meanwhile reads the old or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)


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
