"""The build queue: at most N builds at once per project and host, across processes.

Fifty ``conveyor deploy --build`` started together (or a pipeline fanning out) would
otherwise start fifty compilers on two cores and make every one of them slow. The width is
a host-wide promise, so it cannot live in one process's memory: it is N slot files under
``.conveyor/builds/slots/``, and a build runs while it holds an exclusive ``flock`` on one.

``flock`` is the right primitive because the kernel keeps the books: a lock belongs to an
open file description (so two threads of one process contend like two processes do), and
it is released when its holder exits, however it exits -- a killed build never leaves a
slot taken. Slot files are never deleted, so there is no window in which two builds lock
two different files of the same name.

A build that finds every slot taken says so once (``on_wait``), then queues: waiters block
in the kernel on one more lock file, the turnstile, and only the waiter holding it polls the
slots (every few milliseconds, so a freed slot is taken almost at once and fifty waiters
cost one poller). Polling rather than blocking on one slot means it takes whichever slot
frees first. The order among waiters is the kernel's, not strictly first come, first served.
Processes that disagree on the width share the lower slots, so the host runs at most the
largest width any of them asked for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from conveyor.errors import UsageError

TURNSTILE = "queue"
_FIRST_PAUSE = 0.002
_LONGEST_PAUSE = 0.02


def default_width() -> int:
    """The core count: builds are mostly CPU and disk, and more than that only queues in the OS."""
    return os.cpu_count() or 1


@contextlib.contextmanager
def build_slot(
    directory: Path,
    width: int | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[int]:
    """Hold one of ``width`` build slots (default: the core count) for the block's duration.

    Yields the slot's number. ``on_wait`` is told once, in words, when the build has to wait.
    """
    width = default_width() if width is None else width
    if width < 1:
        raise UsageError(
            f"the build queue needs a width of at least 1, got {width}",
            hint="set builds.max_parallel in conveyor.yaml to 1 or more (or leave it out "
            "for the core count)",
        )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    taken = _take(directory, width)
    if taken is None:
        if on_wait is not None:
            with contextlib.suppress(Exception):  # a broken display must not fail a build
                on_wait(f"waiting for a build slot ({width} running)")
        taken = _queue(directory, width)
    slot, fd = taken
    try:
        yield slot
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _queue(directory: Path, width: int) -> tuple[int, int]:
    """Wait in line at the turnstile, then poll the slots until one is free."""
    turnstile = _open(directory / TURNSTILE)
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)  # the other waiters sleep here
        pause = _FIRST_PAUSE
        while (taken := _take(directory, width)) is None:
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
        return taken
    finally:
        os.close(turnstile)  # the next waiter starts polling


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _take(directory: Path, width: int) -> tuple[int, int] | None:
    """Lock the first free slot without blocking: (its number, the open descriptor)."""
    for slot in range(width):
        fd = _open(directory / f"slot-{slot}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        return slot, fd
    return None
