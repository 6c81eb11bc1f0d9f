"""The ``command`` provider: run a user's check and judge what it reports.

The result is the **last line of stdout, if it is a number**; otherwise **1 when the command
exited 0 and 0 when it did not**. A script can therefore report a measurement (``echo 0.012``)
or just pass or fail like any shell check. With no condition, the exit status decides: 0 is
a success, anything else a failure; with conditions, they judge the result as usual (the exit
code is kept in the evidence).

An argv list is executed directly; a string is given to ``sh -c``, because a user who wrote a
string expects shell syntax. The command runs in its own process group, and on timeout the
whole group is killed — a check script's children must not outlive the check. Template
arguments are also passed as environment variables ``CONVEYOR_ARG_<NAME>``.

The command runs inside the server, whose environment holds what instances' secrets are
read from and the database URL; it sees only the allow-list of ``core.inherit`` (what tools
need to run) and its arguments, never the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from typing import Any

from conveyor.analysis.base import AnalysisContext, failed_to_measure, judged
from conveyor.core.analysis import Measurement, MeasurementPhase, MetricSpec
from conveyor.core.inherit import job_environment

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_TAIL = 2048  # characters of stdout and stderr kept as evidence
_REAP = 5.0  # seconds to collect a killed group's pipes


def result_of(stdout: str, exit_code: int) -> float:
    """The documented rule: the last stdout line if it is a number, else 1 for exit 0, else 0."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if lines and _NUMBER.fullmatch(lines[-1]):
        return float(lines[-1])
    return 1.0 if exit_code == 0 else 0.0


class CommandProvider:
    kind = "command"

    async def measure(self, spec: MetricSpec, context: AnalysisContext) -> Measurement:
        started = context.clock()
        run = spec.config.get("run")
        argv = ["/bin/sh", "-c", run] if isinstance(run, str) else [str(a) for a in run or ()]
        evidence: dict[str, Any] = {"command": run}
        if not argv:
            return failed_to_measure(context, started, "no command to run", evidence)
        env = job_environment(os.environ)
        for name, text in context.args.items():
            env["CONVEYOR_ARG_" + re.sub(r"\W", "_", name).upper()] = text
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=context.workdir,
                env=env,
                start_new_session=True,  # its own process group, killable as a whole
            )
        except OSError as error:
            message = f"cannot run {argv[0]}: {error.strerror or error}"
            return failed_to_measure(context, started, message, evidence)
        try:
            out, err = await asyncio.wait_for(process.communicate(), spec.timeout)
        except TimeoutError:
            _kill_group(process.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.communicate(), _REAP)
            evidence["killed"] = True
            message = f"{argv[0]} ran longer than {spec.timeout:g}s; its process group was killed"
            return failed_to_measure(context, started, message, evidence)
        finally:
            if process.returncode is None:  # cancelled: do not leave the check running
                _kill_group(process.pid)
        code = process.returncode if process.returncode is not None else -1
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        evidence |= {"exit_code": code, "stdout": stdout[-_TAIL:], "stderr": stderr[-_TAIL:]}
        value = result_of(stdout, code)
        if spec.success_condition is None and spec.failure_condition is None:
            phase: MeasurementPhase = "successful" if code == 0 else "failed"
            message = f"exit code {code}, result {value:g}"
            return Measurement(phase, value, started, context.clock(), message, evidence)
        return judged(spec, value, context, started, evidence=evidence)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
