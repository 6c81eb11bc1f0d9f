"""One command run to completion beside the instances: a release's migration, an undo.

An instance is supervised for as long as it lives; a task runs once and its exit is the
answer. It is started as instances are (a new session, so a timeout kills everything it
forked; as the release's ``run_as`` user; with an environment built, not inherited) but its
output comes back through a pipe rather than a log file, because it is evidence: the caller
puts it on the ledger. Only the tail is kept (``MAX_OUTPUT``), masked by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from conveyor.run_as import User, popen_arguments

MAX_OUTPUT = 16_000
"""Characters of output kept (the end: where a failing tool says why)."""
KILL_GRACE = 5.0


@dataclass(frozen=True)
class TaskResult:
    exit_code: int | None  # None: it could not start, or was killed at its timeout
    seconds: float
    output: str
    timed_out: bool = False
    problem: str | None = None  # why it could not start


async def run_task(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    user: User | None = None,
) -> TaskResult:
    """Run ``argv`` in ``cwd`` until it exits or ``timeout`` passes (then its whole group is
    stopped: SIGTERM, then SIGKILL)."""
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            **popen_arguments(user),
        )
    except (OSError, ValueError) as exc:
        return TaskResult(None, time.monotonic() - started, "", problem=str(exc))
    assert process.stdout is not None
    tail = bytearray()

    async def read() -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            tail.extend(chunk)
            del tail[: max(0, len(tail) - 4 * MAX_OUTPUT)]

    reader = asyncio.ensure_future(read())
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), timeout)
    except TimeoutError:
        timed_out = True
        await _stop(process)
    finally:
        if process.returncode is None:  # cancelled: do not leave the group running
            await _stop(process)
    done, _ = await asyncio.wait({reader}, timeout=KILL_GRACE)
    if not done:  # something it started keeps the pipe open: keep what was read
        reader.cancel()
    text = tail.decode("utf-8", errors="replace")[-MAX_OUTPUT:]
    code = None if timed_out else process.returncode
    return TaskResult(code, time.monotonic() - started, text, timed_out=timed_out)


async def _stop(process: asyncio.subprocess.Process) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, KILL_GRACE)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), wait)
            return
        except TimeoutError:
            continue
