"""The log relay: an instance's output on its way to its log, with its secrets masked.

An instance normally writes straight into its log file, with nothing in between: the log
keeps flowing while the server restarts, and the server is not in the path of every byte.
An instance that was given secrets cannot: whatever it prints (a connection string in a
traceback, a debug dump) would land on disk. For those instances the runtime starts this
relay as the instance's process-group leader instead; the relay starts the service in the
same group, reads its stdout and stderr through a pipe, masks every form of every secret
(``core.masking``) and appends the result to the log. Like the service, it outlives the
server; it carries the instance's tags, so a restarted server adopts it like any leader.

It is a leader that behaves like the service it fronts:

- it ignores SIGTERM, SIGINT and SIGHUP (the group signal reaches the service too), keeps
  relaying what the service prints while it shuts down, and exits when the service does;
- its exit status is the service's: the same code, or death by the same signal;
- it learns which variables are secret from ``CONVEYOR_MASK_VARS`` (names, never values;
  the values are in its environment, as they are in the service's), and removes that one
  variable before starting the service;
- for an instance with ``run_as`` it stays the server's user (it appends to a log in a
  directory only that user may enter) and starts the service as the instance's user and
  group, with no supplementary groups: its second argument is ``uid:gid``, or ``-``.
  An argument rather than a variable, so nothing in the instance's config can name it.

It is started as ``python -I -S -c ...`` with the directory of this ``conveyor`` package
first on ``sys.path``: the instance's ``PYTHON*`` variables (set by conveyor.yaml) cannot
change how the relay runs, and it imports only the standard library and ``core.masking``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conveyor.core.masking import Masker, StreamMasker

MASK_VAR = "CONVEYOR_MASK_VARS"
IDLE = 0.2
"""Seconds of silence after which text the masker holds back is written."""
DRAIN = 0.5
"""Seconds spent reading what is left in the pipe once the service has exited."""
_CHUNK = 65536
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from conveyor.runtime.relay import main; raise SystemExit(main(sys.argv[1:]))"
)


def command(log_path: Path, argv: Sequence[str], ids: tuple[int, int] | None = None) -> list[str]:
    """The argv that runs ``argv`` behind a relay writing to ``log_path``, as ``ids``
    (uid, gid) when given."""
    package_root = Path(__file__).resolve().parents[2]
    who = "-" if ids is None else f"{ids[0]}:{ids[1]}"
    return [sys.executable, "-I", "-S", "-c", _BOOT, str(package_root), str(log_path), who, *argv]


def main(args: Sequence[str]) -> int:
    log_path, who, argv = args[0], args[1], list(args[2:])
    switch: dict[str, Any] = {}
    if who != "-":
        uid, gid = (int(part) for part in who.split(":"))
        switch = {"user": uid, "group": gid, "extra_groups": []}
    names = os.environ.pop(MASK_VAR, "")
    values = [os.environ[n] for n in names.split(",") if n and n in os.environ]
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            close_fds=True,
            **switch,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        os.write(log, f"--- failed to start: {exc} ---\n".encode())
        return 127
    finally:
        os.close(write_end)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _relay(read_end, log, child, Masker(values).stream())
    return _exit_like(child.wait())


def _relay(source: int, log: int, child: subprocess.Popen[bytes], masking: StreamMasker) -> None:
    exited = _pidfd(child.pid)
    watched = [source] if exited is None else [source, exited]
    try:
        while True:
            ready, _, _ = select.select(watched, [], [], IDLE)
            if source in ready:
                data = os.read(source, _CHUNK)
                if not data:
                    break
                _write(log, masking.feed(data))
            elif not ready:
                _write(log, masking.flush())
            if (exited is not None and exited in ready) or (
                exited is None and child.poll() is not None
            ):
                _drain(source, log, masking)  # a grandchild may keep the pipe open forever
                break
    finally:
        _write(log, masking.flush())
        if exited is not None:
            os.close(exited)


def _drain(source: int, log: int, masking: StreamMasker) -> None:
    os.set_blocking(source, False)
    deadline = DRAIN
    while deadline > 0:
        ready, _, _ = select.select([source], [], [], 0.05)
        deadline -= 0.05
        if not ready:
            return
        try:
            data = os.read(source, _CHUNK)
        except BlockingIOError:
            return
        if not data:
            return
        _write(log, masking.feed(data))


def _write(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exit_like(code: int) -> int:
    """Exit with the service's code, or die of the signal that killed it."""
    if code >= 0:
        return code
    sig = -code
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the service dumped core, not us
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
    return 128 + sig
