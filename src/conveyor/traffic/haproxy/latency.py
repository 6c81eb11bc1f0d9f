"""Per-request latencies from HAProxy's log, because ``show stat`` only has averages.

HAProxy's stats keep ``rtime``/``ttime`` as averages over the last 1024 requests of a
server: enough for a dashboard, useless for a canary analysis that compares latency
percentiles of two versions. So the worker logs one short line per request (``%pid %b %s
%ST %Ta``: worker, backend, server, status, active time in ms, see ``config``) to a Unix
datagram socket that the router reads on its event loop, and this module turns the lines
into the same latency histogram, sum and recent-sample reservoir as the built-in router's
(``builtin.metrics.VersionStats``, whose latency part is reused as is).

Limits, accepted on purpose:

* resolution is HAProxy's: 1 ms;
* logging is lossy under pressure (HAProxy drops a line rather than block when the socket
  buffer is full), so the histogram may count slightly fewer requests than ``show stat``;
  request and error *counts* therefore always come from ``show stat``, never from here;
* every worker, old ones finishing their requests after a reload included, logs to the
  same socket, so reloads lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from conveyor.traffic.builtin.metrics import DEFAULT_SAMPLES, VersionStats

log = logging.getLogger(__name__)

NO_SERVER = "<NOSRV>"
_RECEIVE_BUFFER = 4 * 1024 * 1024
_BATCH = 512  # datagrams per wake-up, so a flood cannot starve the rest of the loop

Resolver = Callable[[int, str, str], tuple[str, str] | None]
"""(worker pid, backend, server) -> (route label, version), or None for a line not ours.

The worker matters: a slot stands for different instances over time and in different
workers (see ``plan``), so only the worker that served a request knows whose it was.
"""


class LatencyBook:
    """Latency statistics per (route label, version), fed one log line at a time."""

    def __init__(self, resolve: Resolver, sample_size: int = DEFAULT_SAMPLES) -> None:
        self._resolve = resolve
        self._sample_size = sample_size
        self._stats: dict[tuple[str, str], VersionStats] = {}

    def feed(self, line: bytes) -> None:
        """Account one ``pid backend server status active_ms`` line; ignore anything else."""
        parts = line.decode(errors="replace").split()
        if len(parts) < 5:
            return
        pid_text, backend, server, status_text, active_text = parts[:5]
        try:
            pid, status, active = int(pid_text), int(status_text), int(active_text)
        except ValueError:
            return
        if status <= 0 or active < 0:  # abandoned by the client: no outcome to time
            return
        target = self._resolve(pid, backend, "" if server == NO_SERVER else server)
        if target is None:
            return
        stats = self._stats.get(target)
        if stats is None:
            stats = self._stats[target] = VersionStats(target[1], self._sample_size)
        stats.observe(status, active / 1000.0)

    def get(self, route: str, version: str) -> VersionStats | None:
        return self._stats.get((route, version))


class LogReceiver:
    """The Unix datagram socket HAProxy logs to, read with ``add_reader`` (any event loop)."""

    def __init__(self, path: Path, book: LatencyBook) -> None:
        self.path = path
        self.book = book
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        if self._sock is not None:
            return
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            sock.bind(str(self.path))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop = sock, loop

    def close(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = self._loop = None
        self.path.unlink(missing_ok=True)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        feed = self.book.feed
        for _ in range(_BATCH):
            try:
                data = sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # pragma: no cover - the socket was closed under us
                log.warning("HAProxy log socket failed: %s", exc)
                with contextlib.suppress(Exception):
                    self.close()
                return
            feed(data)
