"""Running a build command: its own process group, a log file, a tail for the error.

The command runs in its own process group, so a timeout kills everything it started, not
just the shell; its output goes to a log file under ``.conveyor/builds`` (and, optionally, to
a live callback) because a failing build is only useful with its log. A failure is a
``BuildFailed`` whose message ends with the last lines of output and whose hint names the
config field to fix and the full log.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from conveyor.errors import BuildFailed
from conveyor.run_as import User, popen_arguments

TAIL_LINES = 30
_KILL_GRACE = 2.0
_STRAGGLER_GRACE = 0.5


def command_argv(run: str | Sequence[str], service_name: str) -> tuple[list[str], str]:
    """The argv to execute and the command as the provenance states it."""
    if isinstance(run, str):
        if not run.strip():
            raise BuildFailed(
                f"service '{service_name}' has an empty build command",
                hint=f"set services.{service_name}.build.run in conveyor.yaml",
            )
        return ["sh", "-c", run], run
    argv = list(run)
    if not argv:
        raise BuildFailed(
            f"service '{service_name}' has an empty build command",
            hint=f"set services.{service_name}.build.run in conveyor.yaml",
        )
    return argv, shlex.join(argv)


def new_log_path(directory: Path, service_name: str) -> Path:
    """A new, empty log file named after the service and the time (never an old one reused)."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in service_name)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for attempt in range(100):
        suffix = "" if attempt == 0 else f"-{attempt}"
        path = directory / f"{safe}-{stamp}{suffix}.log"
        try:
            # 0600: a build log is whatever the build printed (see layout.py)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        return path
    raise BuildFailed(f"cannot create a build log in {directory}", hint="clean up .conveyor/builds")


def run_command(
    argv: list[str],
    workdir: Path,
    env: Mapping[str, str],
    timeout: float,
    log_path: Path,
    service_name: str,
    log: Callable[[str], None] | None,
    *,
    user: User | None = None,
) -> None:
    """Run the build to completion; BuildFailed if it cannot start, fails or times out.

    ``user``: start it as that user (its log is still written here, by this process).
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with log_path.open("ab") as log_file:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen_arguments(user),
            )
        except OSError as exc:
            raise BuildFailed(
                f"the build command of '{service_name}' cannot start: {exc.strerror or exc}",
                hint=f"check services.{service_name}.build.run in conveyor.yaml "
                "(is the program installed and on PATH?)",
            ) from exc
        assert proc.stdout is not None
        reader = threading.Thread(
            target=_pump, args=(proc.stdout, log_file, tail, log), daemon=True
        )
        reader.start()
        try:
            code = _wait(proc, reader, timeout)
        finally:
            if not reader.is_alive():
                proc.stdout.close()
    if code is None:
        raise BuildFailed(
            f"the build of '{service_name}' timed out after {timeout:g}s" + _render_tail(tail),
            hint=f"make the build faster or raise services.{service_name}.build.timeout "
            f"in conveyor.yaml; full log: {log_path}",
        )
    if code != 0:
        how = f"exit code {code}" if code > 0 else f"signal {signal.Signals(-code).name}"
        raise BuildFailed(
            f"the build of '{service_name}' failed ({how})" + _render_tail(tail),
            hint=f"fix the build (services.{service_name}.build.run in conveyor.yaml); "
            f"full log: {log_path}",
        )


def _wait(proc: subprocess.Popen[bytes], reader: threading.Thread, timeout: float) -> int | None:
    """The build's exit code once its output is drained, or None if it ran out of time."""
    if not _exits_within(proc, timeout):
        _kill_group(proc)
        reader.join(timeout=_KILL_GRACE)
        return None
    code = proc.wait()
    reader.join(timeout=_STRAGGLER_GRACE)
    if reader.is_alive():
        # Something the build started still holds its output open: the group still exists
        # (so its id cannot have been reused), and the build itself is over.
        _signal_group(proc.pid, signal.SIGKILL)
        reader.join(timeout=_KILL_GRACE)
    return code


def _exits_within(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether the build exits within ``timeout``, noticed the moment it does.

    ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms, which fifty short builds in a
    queue pay fifty times; a pidfd (Linux 5.3+) becomes readable exactly when the process
    exits. The process is not reaped yet, so its pid cannot have been reused.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or an old kernel
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(pidfd)


def _pump(
    stream: IO[bytes],
    log_file: IO[bytes],
    tail: deque[str],
    log: Callable[[str], None] | None,
) -> None:
    try:
        for raw in iter(stream.readline, b""):
            log_file.write(raw)
            log_file.flush()
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            tail.append(line)
            if log is not None:
                with contextlib.suppress(Exception):  # a broken display must not fail a build
                    log(line)
    except (OSError, ValueError):
        # The build was abandoned (timeout, or a detached straggler) and its files closed.
        return


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the build's whole process group, then reap the leader.

    Signalled before reaping: the unreaped leader keeps its pid (the group id) from being
    reused, so the signal cannot reach an unrelated process. A build is disposable; there is
    nothing for a gentler signal to save.
    """
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _render_tail(tail: deque[str]) -> str:
    if not tail:
        return " with no output"
    lines = "\n".join(f"  | {line}" for line in tail)
    return f"; last {len(tail)} lines of output:\n{lines}"
