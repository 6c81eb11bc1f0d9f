"""One HAProxy master process: started or adopted, reloaded, stopped; and its two sockets.

HAProxy runs in master-worker mode (``-W -S master.sock``). The master never serves
traffic; it holds the listening sockets across reloads and runs the workers. That is what
makes the two kinds of change cheap and safe:

* a weight or server change goes to the current worker's stats socket (runtime API) and
  takes effect for the next request, with no new process;
* a listener change (a new route) needs a new configuration: the ``reload`` command on the
  master socket starts a new worker that inherits the listening sockets (``expose-fd
  listeners``), while the old worker finishes its in-flight requests and exits.

The master is started in its own session so a terminal's Ctrl-C reaches Conveyor, which
then stops HAProxy gracefully, rather than killing the proxy under users' feet. The same
reason makes *adoption* possible: a Conveyor process that died leaves HAProxy serving, and
the next one takes the master over from the pidfile instead of starting a second proxy.

Every socket command is one short connection (HAProxy answers in tens of microseconds on
loopback), so replies are never ambiguous and a failed command is always detected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import Conflict, ConveyorError, HAProxyUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install haproxy (or pass the binary's path as haproxy=...)"
_SOCKET_PATH_MAX = 90  # sun_path is 108 bytes on Linux, HAProxy accepts at most 97
# Masters this process started and let go of (``Master.release``): kept referenced, so the
# interpreter does not warn that a subprocess it started is still running — on purpose.
_RELEASED: list[subprocess.Popen[bytes]] = []


def resolve_binary(name: str) -> str:
    """The HAProxy executable to run: ``name`` on PATH, or in the sbin directories."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        raise HAProxyUnavailable(
            f"HAProxy was not found: {name!r} is not an executable on PATH or in /usr/sbin",
            hint=INSTALL_HINT,
        )
    return found


@dataclass(frozen=True)
class Paths:
    """Where one router keeps HAProxy's files; sockets move to /tmp if the path is too long."""

    directory: Path
    sockets: Path

    @property
    def config(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def output(self) -> Path:
        return self.directory / "haproxy.log"

    @property
    def book(self) -> Path:
        return self.directory / "book.json"

    def header_map(self, frontend: str) -> Path:
        """The map a route's header rules read (see ``headers``)."""
        return self.directory / "maps" / f"{frontend}.map"

    @property
    def pidfile(self) -> Path:
        return self.directory / "haproxy.pid"

    @property
    def master_socket(self) -> Path:
        return self.sockets / "master.sock"

    @property
    def stats_socket(self) -> Path:
        return self.sockets / "stats.sock"

    @property
    def log_socket(self) -> Path:
        return self.sockets / "log.sock"


def private_dir(path: Path) -> None:
    """Create ``path`` for this user only; refuse one that somebody else owns (in /tmp)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise HAProxyUnavailable(
            f"{path} belongs to another user; the HAProxy router will not put sockets there",
            hint="remove that directory, or give the router a state dir with a shorter path",
        )


def paths_for(state_dir: Path) -> Paths:
    """The files of the router whose state lives in ``state_dir`` (deterministic, for adoption)."""
    directory = state_dir.resolve() / "haproxy"
    sockets = directory
    if len(str(directory / "master.sock")) > _SOCKET_PATH_MAX:
        digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
        sockets = Path(tempfile.gettempdir()) / f"conveyor-haproxy-{digest}"
    return Paths(directory, sockets)


class SocketError(OSError):
    """A runtime API socket did not answer (HAProxy stopped, or is being replaced)."""


def cli(path: Path, command: str, timeout: float = 2.0) -> str:
    """Send one command to an HAProxy CLI socket and return its whole answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(command.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)  # the master CLI waits for more input otherwise
            chunks: list[bytes] = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise SocketError(f"{path}: {command!r}: {exc}") from exc
    return b"".join(chunks).decode("utf-8", "replace")


@dataclass(frozen=True)
class ProcTable:
    """The master's ``show proc``: its reload counters and its current and old workers."""

    master: int
    reloads: int
    failed: int
    workers: tuple[int, ...]
    old_workers: tuple[int, ...]


_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]")


def parse_proc(text: str) -> ProcTable:
    master = reloads = failed = 0
    section = ""
    workers: list[int] = []
    old: list[int] = []
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").strip()
            continue
        match = _MASTER_LINE.match(line)
        if match:
            master, reloads, failed = (int(g) for g in match.groups())
            continue
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and parts[1] == "worker":
            (old if section == "old workers" else workers).append(int(parts[0]))
    return ProcTable(master, reloads, failed, tuple(workers), tuple(old))


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it only waits for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


class Master:
    """The HAProxy master process of one router."""

    def __init__(self, binary: str, paths: Paths, start_timeout: float = 10.0) -> None:
        self.binary = binary
        self.paths = paths
        self.start_timeout = start_timeout
        self.pid: int | None = None
        self.worker: int | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._output_mark = 0  # HAProxy's output before the current operation is old news

    # -- state ---------------------------------------------------------------------------

    def running(self) -> bool:
        if self.pid is None:
            return False
        if self._child is not None:
            return self._child.poll() is None
        return _alive(self.pid)

    def stats(self, command: str) -> str:
        """A runtime API command on the current worker."""
        return cli(self.paths.stats_socket, command)

    def on_worker(self, pid: int, command: str) -> str:
        """A command on a given worker (an old one too) through the master socket."""
        return cli(self.paths.master_socket, f"@!{pid} {command}")

    def procs(self) -> ProcTable:
        return parse_proc(cli(self.paths.master_socket, "show proc"))

    def output_tail(self, lines: int = 15) -> str:
        """HAProxy's own output since the current start or reload began."""
        try:
            with self.paths.output.open("rb") as output:
                output.seek(self._output_mark)
                text = output.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _mark_output(self) -> None:
        try:
            self._output_mark = self.paths.output.stat().st_size
        except OSError:
            self._output_mark = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def check(self, config: str) -> None:
        """Refuse a configuration HAProxy would refuse, before it replaces the running one."""
        private_dir(self.paths.directory)
        candidate = self.paths.directory / "haproxy.cfg.new"
        candidate.write_text(config)
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            "-q",
            "-f",
            str(candidate),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise HAProxyUnavailable(
                f"HAProxy rejected the generated configuration {candidate}: "
                f"{out.decode(errors='replace').strip()}",
                hint="this is a Conveyor bug; please report it with that file",
            )
        candidate.replace(self.paths.config)

    def release(self) -> None:
        """Let go of the master, leaving it running for a successor to ``adopt``."""
        if self._child is not None:
            _RELEASED.append(self._child)
        self.pid, self._child, self.worker = None, None, None

    def adopt(self) -> bool:
        """Take over a master left running by a previous router with the same state dir."""
        try:
            pid = int(self.paths.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        if not _alive(pid):
            return False
        try:
            table = self.procs()
        except SocketError:
            return False
        if table.master != pid or not table.workers:
            return False
        self.pid, self._child, self.worker = pid, None, table.workers[0]
        log.info("adopted the running HAProxy master %d (worker %d)", pid, self.worker)
        return True

    async def start(self, config: str) -> None:
        """Start the master with ``config`` and wait until its worker answers."""
        await self.check(config)
        self._mark_output()
        private_dir(self.paths.sockets)
        for stale in (self.paths.master_socket, self.paths.stats_socket):
            stale.unlink(missing_ok=True)
        with self.paths.output.open("ab") as output:
            self._child = subprocess.Popen(
                [
                    self.binary,
                    "-W",
                    "-S",
                    f"{self.paths.master_socket},mode,600",
                    "-f",
                    str(self.paths.config),
                    "-p",
                    str(self.paths.pidfile),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        self.pid = self._child.pid
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.running():
                self._child.wait()
                self.pid, self._child = None, None
                raise self._failure("did not start")
            with contextlib.suppress(SocketError):
                worker = self._worker_pid()
                if worker is not None and worker in self.procs().workers:
                    self.worker = worker
                    return
            if time.monotonic() > deadline:
                await self.stop(0.0)
                raise self._failure(f"did not answer within {self.start_timeout:g}s")
            await asyncio.sleep(0.02)

    async def reload(self, config: str) -> int | None:
        """Replace the worker with one running ``config``; returns the old worker's pid."""
        await self.check(config)
        self._mark_output()
        before = self.procs()
        old = self.worker
        with contextlib.suppress(SocketError):  # the master re-executes and drops us
            cli(self.paths.master_socket, "reload")
        deadline = time.monotonic() + self.start_timeout
        while True:
            with contextlib.suppress(SocketError):
                table = self.procs()
                if table.failed > before.failed:
                    raise self._failure("refused the new configuration")
                worker = self._worker_pid() if table.reloads > before.reloads else None
                if worker is not None and worker in table.workers:
                    self.worker = worker
                    return old
            if not self.running():
                raise self._failure("exited while reloading")
            if time.monotonic() > deadline:
                raise self._failure(f"did not reload within {self.start_timeout:g}s")
            await asyncio.sleep(0.02)

    async def stop(self, grace: float) -> None:
        """Soft-stop (in-flight requests finish) for up to ``grace`` seconds, then hard-stop."""
        if self.pid is None:
            return
        pid = self.pid
        workers: tuple[int, ...] = ()
        with contextlib.suppress(SocketError):
            table = self.procs()
            workers = table.workers + table.old_workers
        for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if sig == signal.SIGKILL:
                log.warning("HAProxy master %d ignored SIGTERM; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if await self._exited(pid, wait):
                break
        for worker in workers:  # a worker outliving its master would hold the ports
            if _alive(worker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)
        if self._child is not None:
            self._child.wait()
        self.pid, self._child, self.worker = None, None, None
        for path in (self.paths.master_socket, self.paths.stats_socket, self.paths.pidfile):
            path.unlink(missing_ok=True)

    # -- internals -----------------------------------------------------------------------

    async def _exited(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            gone = self._child.poll() is not None if self._child is not None else not _alive(pid)
            if gone or time.monotonic() >= deadline:
                return gone
            await asyncio.sleep(0.02)

    def _worker_pid(self) -> int | None:
        """The pid of the worker answering the stats socket right now."""
        try:
            info = self.stats("show info")
        except SocketError:
            return None
        match = re.search(r"^Pid: (\d+)$", info, re.MULTILINE)
        return int(match.group(1)) if match else None

    def _failure(self, what: str) -> ConveyorError:
        tail = self.output_tail()
        if "cannot bind" in tail or "Address already in use" in tail:
            return Conflict(
                f"HAProxy {what}: a listener's address is in use\n{tail}",
                hint="choose a free port for this environment, or stop the process using it",
            )
        return HAProxyUnavailable(
            f"HAProxy {what} (see {self.paths.output})\n{tail}",
            hint="check the HAProxy output above; `haproxy -vv` shows the installed build",
        )
