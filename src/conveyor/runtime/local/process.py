"""Child processes of the runtime: spawning, noticing exits, stopping whole groups.

Every instance is spawned as the leader of a new session, so its process group holds the
instance and everything it forks; stopping signals the group, not just the leader, which is
how the child of a ``sh -c`` wrapper dies with it. Output goes straight from the child to its
log file (no pipe through the server), so logs keep flowing while the server restarts.

An instance with ``run_as`` is spawned as that user and group with no supplementary groups
(``Popen(user=, group=, extra_groups=[])``: the kernel switches ids in the child between
fork and exec, no ``preexec_fn``). The log file is opened here, by the server, before the
switch, so the instance writes its log through the descriptor it inherits and never needs
to reach the 0700 directory the log lives in.

Exits are noticed through a pidfd, which works for processes that are not our children —
adopted ones — as well as for our own, without a thread per child or a SIGCHLD handler.
Where pidfds are unavailable, /proc is polled instead.

The table of spawned children is process-wide rather than per target on purpose: a target
closed with ``stop_instances=False`` leaves its instances running, and a later target in the
same process (a restarted server's tests, an in-process restart) adopts them; whoever
notices the exit must still be able to collect the status, or zombies pile up. A leader is
collected only after its whole group is gone: while the zombie exists its pid cannot be
reused, so signalling its group cannot hit a stranger.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from conveyor.run_as import User, popen_arguments
from conveyor.runtime.local import logs, procfs
from conveyor.runtime.local.policy import TaggedProcess

POLL_INTERVAL = 0.5
GROUP_POLL = 0.05
KILL_WAIT = 5.0

_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRef:
    """One process, named so that a reused pid can never be mistaken for it."""

    pid: int
    start_ticks: int

    @property
    def pgid(self) -> int:
        return self.pid

    def running(self) -> bool:
        return procfs.is_running(self.pid, self.start_ticks)


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    user: User | None = None,
) -> ProcessRef:
    """Start ``argv`` as a new session leader writing stdout and stderr to ``log_path``,
    as ``user`` when given (the caller checked that this process may switch to it).

    Raises OSError when it cannot be started at all (missing directory or executable),
    ValueError for an environment the kernel cannot hold.
    """
    log = logs.open_log(log_path)
    try:
        child = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            **popen_arguments(user),
        )
    finally:
        os.close(log)
    _children[child.pid] = child
    ticks = procfs.start_ticks(child.pid)  # the unreaped child is at least a zombie: readable
    return ProcessRef(child.pid, ticks if ticks is not None else 0)


def is_child(pid: int) -> bool:
    return pid in _children


def collect(ref: ProcessRef) -> int | None:
    """Reap an exited child and return its exit code (negative: killed by that signal).

    None for a process that is not our child: its status goes to its own parent.
    """
    child = _children.get(ref.pid)
    if child is None:
        return None
    try:
        code = child.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        return None
    del _children[ref.pid]
    return code


async def wait_exit(ref: ProcessRef, *, use_pidfd: bool = True) -> None:
    """Return once the process has exited (it may remain an uncollected zombie)."""
    if not ref.running():
        return
    fd = _pidfd(ref) if use_pidfd else None
    if fd is None:
        while ref.running():
            await asyncio.sleep(POLL_INTERVAL)
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        if ref.running():  # it may have exited between the check above and the pidfd
            await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _pidfd(ref: ProcessRef) -> int | None:
    try:
        return os.pidfd_open(ref.pid)
    except (AttributeError, OSError):  # gone already, or no pidfds on this system: poll
        return None


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a group; False when it has no member left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


async def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Whether every live member of the group is gone within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while procfs.group_members(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(GROUP_POLL)
    return True


async def terminate_group(ref: ProcessRef, grace: float) -> bool:
    """SIGTERM the process group, SIGKILL whatever is left after ``grace`` seconds.

    Returns whether SIGKILL was needed. The caller must have checked that ``ref`` was ours
    (it is running, or it is our unreaped child) so the group id cannot be a stranger's.
    """
    if not signal_group(ref.pgid, signal.SIGTERM):
        return False
    if await wait_group_gone(ref.pgid, grace):
        return False
    signal_group(ref.pgid, signal.SIGKILL)
    await wait_group_gone(ref.pgid, KILL_WAIT)
    return True


async def kill_leftovers(ref: ProcessRef, state_dir: str, instance_id: str) -> None:
    """After a leader exited, SIGKILL what remains of its group.

    A zombie child of ours still holds the group id, so the whole group can be signalled.
    For an adopted leader whose zombie someone else may already have collected, only
    processes that carry this instance's tag are killed, one by one.
    """
    if is_child(ref.pid):
        signal_group(ref.pgid, signal.SIGKILL)
    else:
        for pid in procfs.group_members(ref.pgid):
            if procfs.carries_tag(pid, state_dir, instance_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    await wait_group_gone(ref.pgid, KILL_WAIT)


async def terminate_processes(processes: Sequence[TaggedProcess], grace: float) -> None:
    """SIGTERM these processes (each one's group when it leads one), SIGKILL after ``grace``."""
    refs = [ProcessRef(p.pid, p.start_ticks) for p in processes]
    for ref, p in zip(refs, processes, strict=True):
        _send(ref, p, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while any(r.running() for r in refs) and loop.time() < deadline:
        await asyncio.sleep(GROUP_POLL)
    for ref, p in zip(refs, processes, strict=True):
        _send(ref, p, signal.SIGKILL)
    deadline = loop.time() + KILL_WAIT
    while any(r.running() for r in refs) and loop.time() < deadline:
        await asyncio.sleep(GROUP_POLL)
    for ref in refs:
        collect(ref)


def _send(ref: ProcessRef, process: TaggedProcess, sig: int) -> None:
    if not ref.running():
        return
    with contextlib.suppress(ProcessLookupError):
        if process.is_leader:
            os.killpg(process.pgid, sig)
        else:
            os.kill(process.pid, sig)
