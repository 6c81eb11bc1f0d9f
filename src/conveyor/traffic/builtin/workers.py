"""``WorkerPool``: the router process's worker processes, all serving the same ports.

One Python process proxies on one core (the GIL). With ``--workers N`` the router process
(``daemon``) serves as worker 0 and runs N-1 more processes (``worker``), each listening on
every route's ports with ``SO_REUSEPORT``: the kernel spreads new connections over the
processes by a hash of their addresses, and no connection is handed from one to another.

How the pool is shaped, and why:

* **Spawn.** ``python -m conveyor.traffic.builtin.worker --fd K``: a fixed argv, no shell,
  the worker's end of a socketpair inherited as descriptor K (``pass_fds``; every other
  descriptor of the router process, its lock included, stays behind). That socket is the
  worker's whole contract: line-JSON commands (``control.encode``/``decode``) each answered
  once, tagged with an id so that an answer arriving after its timeout is not taken for the
  next one's. No handshake: nobody but the two ends can write on a socketpair. Its EOF tells
  the worker that the router process is gone, so a SIGKILLed router process leaves no
  worker serving stale routes.
* **One table everywhere.** The router process holds the truth (``routes.json``) and pushes
  it to every worker. A change is made in the router process's own router first (fencing
  is decided there: a table it refuses is broadcast to nobody), then broadcast, all under
  one lock (``changing``), so every worker sees the changes in the same order. A worker
  (re)started is replayed the current routes under that lock before it counts as live: the
  table first, then the listener, so it never accepts a connection it has no table for.
* **A worker that cannot follow is replaced.** One that refuses a table the router process
  accepted is killed and started again with the replay. One that is merely slow keeps its
  place (the command is in its socket and will be applied); one that cannot open a
  listener keeps serving the others (the kernel gives that port's connections to the
  processes that listen on it).
* **Reads add up** (``merge``). Each worker's series (counters and in-flight of every
  route) are read when asked and every ``poll_every`` seconds; a worker that does not
  answer in time counts with what it said last. A worker that died leaves its last-read
  counters in a retired base, so merged counters never go backwards; what it counted since
  its last read is lost.
* **Supervised.** A worker that exits is started again, after 0.1 s, doubling up to 5 s
  while it keeps dying young, and replayed.
* **Stopped** with the router process: each worker is told to stop (its listeners close at
  once, its in-flight requests get the router's close grace) and killed after ``grace``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from conveyor.traffic.builtin import control
from conveyor.traffic.builtin.merge import merge_series, retire
from conveyor.traffic.builtin.metrics import SeriesSnapshot

log = logging.getLogger("conveyor.router.workers")

MAX_WORKERS = 64


class WorkerGone(Exception):
    """The worker's socket closed: it exited, or is exiting."""


class WorkerRefused(Exception):
    """The worker answered a command with an error."""


class _Worker:
    """One worker process and the conversation with it."""

    def __init__(
        self,
        index: int,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.index = index
        self.proc = proc
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()
        self.seq = 0
        self.last: list[SeriesSnapshot] = []  # its series when last read
        self.started = time.monotonic()

    async def call(self, message: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """One command and its answer; WorkerGone, WorkerRefused or TimeoutError."""
        return await asyncio.wait_for(self._call(message), timeout)

    async def _call(self, message: Mapping[str, Any]) -> dict[str, Any]:
        async with self.lock:
            self.seq += 1
            seq = self.seq
            self.writer.write(control.encode({**message, "id": seq}))
            await self.writer.drain()
            while True:
                try:
                    line = await self.reader.readline()
                except (OSError, ValueError) as exc:  # reset, or a line past the limit
                    raise WorkerGone(str(exc)) from exc
                if not line:
                    raise WorkerGone("the worker closed its socket")
                answer = control.decode(line)
                if answer.get("id") != seq:
                    continue  # the late answer to a command that timed out
                if not answer.get("ok"):
                    raise WorkerRefused(str(answer.get("error")))
                return answer

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


_FAILURES = (WorkerGone, WorkerRefused, TimeoutError, OSError, control.ProtocolError)


class WorkerPool:
    """``size`` worker processes beside the router process (0: the router process alone).

    ``routes`` gives the routes to replay to a new worker: the router process's saved
    entries (``service``, ``env``, ``host``, ``port``, ``preview_port``, ``table``).
    """

    def __init__(
        self,
        size: int,
        routes: Callable[[], Iterable[Mapping[str, Any]]],
        *,
        python: str = sys.executable,
        call_timeout: float = 1.0,
        boot_timeout: float = 20.0,
        poll_every: float = 1.0,
        grace: float = 7.0,
    ) -> None:
        if not 0 <= size < MAX_WORKERS:
            raise ValueError(f"a router runs 1 to {MAX_WORKERS} processes, not {size + 1}")
        self.size = size
        self.changing = asyncio.Lock()  # held while a change reaches every process
        self._routes = routes
        self._python = python
        self._call_timeout = call_timeout
        self._boot_timeout = boot_timeout
        self._poll_every = poll_every
        self._grace = grace
        self._live: dict[int, _Worker] = {}  # replayed, so told every change since
        self._starting: dict[int, _Worker] = {}
        self._restarts = [0] * size
        self._ready = [asyncio.Event() for _ in range(size)]
        self._retired: list[SeriesSnapshot] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- life ------------------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Start the workers and wait (up to ``timeout``) until each serves every route."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep(index)) for index in range(self.size)]
        if self.size:
            self._tasks.append(loop.create_task(self._poll()))
            waits = [event.wait() for event in self._ready]
            try:
                await asyncio.wait_for(asyncio.gather(*waits), timeout)
            except TimeoutError:
                late = [i + 1 for i, event in enumerate(self._ready) if not event.is_set()]
                log.warning("worker(s) %s not serving after %gs; still trying", late, timeout)

    async def stop(self) -> None:
        """Tell every worker to stop; kill those still running after the grace."""
        self._stopping = True
        workers = [*self._live.values(), *self._starting.values()]
        await asyncio.gather(
            *(self._quiet(w, {"op": "stop"}) for w in workers), return_exceptions=True
        )
        waits = [asyncio.ensure_future(w.proc.wait()) for w in workers]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self._grace)
            for worker in workers:
                if worker.proc.returncode is None:
                    log.warning("worker pid %d did not stop in time; killing it", worker.proc.pid)
                    worker.kill()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def pids(self) -> list[int | None]:
        """Each worker's pid, by index (None while it is being started again)."""
        return [
            worker.proc.pid if worker is not None else None
            for worker in (self._live.get(i) for i in range(self.size))
        ]

    # -- changes: hold ``changing`` around the local change and the broadcast ---------------

    async def serve(
        self, service: str, env: str, host: str, port: int, preview_port: int | None
    ) -> None:
        message = {
            "op": "serve",
            "service": service,
            "env": env,
            "host": host,
            "port": port,
            "preview_port": preview_port,
        }
        for worker, result in await self._broadcast(message):
            if isinstance(result, BaseException):
                log.warning(
                    "worker %d (pid %d) cannot serve %s/%s on %s:%s: %s; the other processes "
                    "serve it",
                    worker.index + 1,
                    worker.proc.pid,
                    service,
                    env,
                    host,
                    port,
                    result,
                )

    async def apply(self, service: str, env: str, table: dict[str, Any]) -> None:
        message = {"op": "apply", "service": service, "env": env, "table": table}
        for worker, result in await self._broadcast(message):
            if isinstance(result, TimeoutError):
                log.warning("worker %d is slow to apply a table (it is queued)", worker.index + 1)
            elif isinstance(result, BaseException):
                log.error(
                    "worker %d (pid %d) did not apply the table of %s/%s (%s); replacing it",
                    worker.index + 1,
                    worker.proc.pid,
                    service,
                    env,
                    result,
                )
                worker.kill()

    async def _broadcast(
        self, message: Mapping[str, Any]
    ) -> list[tuple[_Worker, dict[str, Any] | BaseException]]:
        workers = list(self._live.values())
        results = await asyncio.gather(
            *(w.call(message, self._call_timeout) for w in workers), return_exceptions=True
        )
        return list(zip(workers, results, strict=True))

    # -- reads -----------------------------------------------------------------------------

    async def series(self) -> list[SeriesSnapshot]:
        """Every worker's series added up, dead workers' included (see ``merge``)."""
        await self._refresh()
        # No await from here: a worker retired meanwhile is counted once, either way.
        return merge_series([self._retired, *(w.last for w in self._live.values())])

    async def processes(self) -> list[dict[str, Any]]:
        """Per worker: index (1..), pid, restarts and requests served (since it started)."""
        await self._refresh()
        return [
            {
                "index": index + 1,
                "pid": worker.proc.pid if worker is not None else None,
                "restarts": self._restarts[index],
                "requests": sum(s.counters.requests for s in worker.last) if worker else 0,
            }
            for index, worker in ((i, self._live.get(i)) for i in range(self.size))
        ]

    async def in_flight(self, service: str, env: str, instance: str) -> int:
        """Requests to ``instance`` in flight in the workers; a silent worker counts one, so
        that a drain waits for it (bounded by the drain's own timeout)."""
        message = {"op": "in_flight", "service": service, "env": env, "instance": instance}
        total = 0
        for _, result in await self._broadcast(message):
            if isinstance(result, WorkerGone):
                continue  # nothing is in flight through a dead process
            total += 1 if isinstance(result, BaseException) else int(result.get("count", 1))
        return total

    async def samples(self, service: str, env: str, version: str) -> list[list[float]]:
        """Each worker's recent latencies of a version, oldest first."""
        message = {"op": "samples", "service": service, "env": env, "version": version}
        return [
            [float(s) for s in result.get("samples", ())]
            for _, result in await self._broadcast(message)
            if not isinstance(result, BaseException)
        ]

    async def _refresh(self) -> None:
        workers = list(self._live.values())
        await asyncio.gather(*(self._read(w) for w in workers))

    async def _read(self, worker: _Worker) -> None:
        try:
            answer = await worker.call({"op": "series"}, self._call_timeout)
            fresh = [control.series_from_wire(raw) for raw in answer["series"]]
        except (*_FAILURES, KeyError, TypeError):
            return  # it counts with what it said last
        worker.last = fresh

    async def _poll(self) -> None:
        """Read every worker now and then, so a death loses at most that much counting."""
        while True:
            await asyncio.sleep(self._poll_every)
            try:
                await self._refresh()
            except Exception:
                log.exception("reading the workers failed; will read again")

    # -- supervision -----------------------------------------------------------------------

    async def _keep(self, index: int) -> None:
        """Run worker ``index`` for as long as the pool runs: start, replay, wait, again."""
        delay = 0.05
        while not self._stopping:
            began = time.monotonic()
            worker = None
            try:
                worker = await self._spawn(index)
                self._starting[index] = worker
                async with self.changing:
                    if self._stopping:
                        worker.kill()  # started as the pool stops: nothing to serve
                    else:
                        await self._replay(worker)
                        self._live[index] = worker
                        self._ready[index].set()
            except Exception as exc:  # a supervisor must outlive whatever went wrong
                log.error("worker %d could not start: %r", index + 1, exc)
                if worker is not None:
                    worker.kill()
            finally:
                self._starting.pop(index, None)
            if worker is not None:
                status = await worker.proc.wait()
                self._live.pop(index, None)
                self._retired = retire(self._retired, worker.last)
                worker.writer.close()
                if self._stopping:
                    return
                self._restarts[index] += 1
                log.warning(
                    "worker %d (pid %d) exited with status %s; starting it again",
                    index + 1,
                    worker.proc.pid,
                    status,
                )
            delay = 0.1 if time.monotonic() - began > 10 else min(delay * 2, 5.0)
            await asyncio.sleep(delay)

    async def _spawn(self, index: int) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                "conveyor.traffic.builtin.worker",
                "--fd",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=control.MAX_LINE)
        worker = _Worker(index, proc, reader, writer)
        try:
            line = await asyncio.wait_for(reader.readline(), self._boot_timeout)
            if not line:
                raise WorkerGone(f"exited at start (status {await proc.wait()})")
            greeting = control.decode(line)
            problem = control.compatible(greeting.get("version"))
            if problem is not None:
                raise control.ProtocolError(problem)
        except BaseException:
            worker.kill()
            raise
        log.info("worker %d started (pid %d)", index + 1, proc.pid)
        return worker

    async def _replay(self, worker: _Worker) -> None:
        """Every current route, table first: a worker only listens with its table."""
        for entry in list(self._routes()):
            service, env = entry["service"], entry["env"]
            if entry.get("table") is not None:
                message = {"op": "apply", "service": service, "env": env, "table": entry["table"]}
                await worker.call(message, self._call_timeout)
            serve = {
                "op": "serve",
                "service": service,
                "env": env,
                "host": entry["host"],
                "port": entry["port"],
                "preview_port": entry.get("preview_port"),
            }
            try:
                await worker.call(serve, self._call_timeout)
            except WorkerRefused as exc:
                log.warning("worker %d cannot serve %s/%s: %s", worker.index + 1, service, env, exc)

    async def _quiet(self, worker: _Worker, message: Mapping[str, Any]) -> None:
        with contextlib.suppress(*_FAILURES):
            await worker.call(message, self._call_timeout)


async def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be had by this router alone, or None if it can.

    ``SO_REUSEPORT`` lets any process of the same user join a listening port, so before the
    router process opens a port with it, the port is bound once without it, as a router
    without workers would: a port another project holds (with or without the option) is
    then a ``Conflict`` as before, not traffic silently shared.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return str(exc)
    for family, kind, proto, _, address in infos:
        probe = socket.socket(family, kind, proto)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as create_server
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
        finally:
            probe.close()
    return None
