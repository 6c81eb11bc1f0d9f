"""Run a plan: real processes, bounded parallelism, fail-fast, timeouts, retries, evidence.

Every job runs in its own session (``start_new_session``), so it leads a process group that
holds everything it spawns. Stopping a job — on timeout, on fail-fast, or to sweep up
background children after it exits — signals that whole group: SIGTERM, then SIGKILL after
``kill_grace`` seconds. Nothing a job starts outlives it.

Retries are for infrastructure failures only, so that a flaky machine does not fail a
release while a failing test is never papered over. A failure counts as infrastructure when
the process exits with ``INFRA_EXIT_CODES`` (75, EX_TEMPFAIL from sysexits.h: "try again
later") or is killed by a signal Conveyor did not send (the OOM killer, a lost node).
Timeouts and ordinary non-zero exits are not retried. Every attempt is recorded with why it
was retried.

Results: ``success``, ``failure``, ``skipped`` (with the reason) and ``cancelled`` (stopped
by fail-fast). Everything a job emits is masked for its secrets before it is kept: the
output stream as a stream (a form cut between two reads is still masked), then outputs,
reports and reasons.

A job's environment is built, not inherited: the allow-list of ``core.inherit`` (what tools
need, and the CI host's descriptive variables), then ``CONVEYOR_JOB`` and the matrix, then
its ``env:``, then its ``secrets:``. So a secret reaches only the job that declared it, and
the credentials of whoever runs ``conveyor run`` reach none.

With ``run_as`` (a ``run_as.Switch``) every ``run:`` job starts as that user, with no
supplementary groups and its HOME, USER and LOGNAME; the caller gives it a ``workdir`` that
user owns (a copy of the project, ``artifacts.workspace.job_workspace``), so a job cannot
read ``.conveyor/`` (the state, the admin token, keys) nor change the project. What the
runner reads back as root from such a workspace is read so that a job cannot point it
elsewhere: ``CONVEYOR_OUTPUT`` through the descriptor the runner created (a job may replace
the path, not the file the runner reads), restored cache paths are handed to the user, and
a cache path reached through a symbolic link is not saved. Gates are Conveyor's own code:
they read ``gate_dir`` (the project itself), so their evidence does not depend on who the
jobs run as.

A ``gate:`` job runs no command: Conveyor computes its verdict (gates.py), in a thread so the
other jobs keep running, and keeps its ``GateEvidence`` on the result.

``build:`` and ``deploy:`` jobs need the project (its services, artifact store, server), which
this package does not know: the caller supplies ``JobActions`` and the runner calls them in a
thread with the results finished so far, so that what a build signs and a deploy attests is
exactly what the run had checked by then. Without actions such jobs fail saying so.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import signal
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from conveyor.config.pipeline import PipelineSpec
from conveyor.core.inherit import job_environment
from conveyor.errors import ExpressionError, PipelineError, SecretUnavailable
from conveyor.pipeline.cache import CacheOutcome, CacheStore, hash_files
from conveyor.pipeline.conditions import render
from conveyor.pipeline.gates import GateEvidence, GateUnavailable, run_gate
from conveyor.pipeline.plan import (
    NeedState,
    Plan,
    PlannedJob,
    RunContext,
    Skip,
    build_plan,
    condition_names,
    decide,
)
from conveyor.pipeline.reports import (
    CoverageEvidence,
    JUnitEvidence,
    collect_coverage,
    collect_junit,
)
from conveyor.pipeline.secrets import Masker, resolve_secrets
from conveyor.run_as import CREATE_HINT, CannotSwitch, Switch, User, current, hand_over, require

INFRA_EXIT_CODES = frozenset({75})
MAX_LOG_LINES = 10_000
"""Lines kept per job: the tail, where a failure explains itself; the rest is counted."""
_CHUNK = 65536
IDLE_FLUSH = 0.2
"""Seconds of silence after which text held back by the masker is let through."""

LogSink = Callable[[str, str], None]
"""Called with (job name, masked line) as lines arrive: the hook for a live view."""


@dataclass(frozen=True)
class Attempt:
    number: int
    exit_code: int | None
    signal: int | None
    duration: float
    outcome: str  # success | failure | timeout | cancelled | infrastructure
    reason: str | None = None


@dataclass(frozen=True)
class JobResult:
    name: str
    result: str
    reason: str | None = None
    duration: float = 0.0
    exit_code: int | None = None
    attempts: tuple[Attempt, ...] = ()
    outputs: Mapping[str, str] = field(default_factory=dict)
    log: str = ""
    reports: tuple[JUnitEvidence, ...] = ()
    coverage: tuple[CoverageEvidence, ...] = ()
    cache: CacheOutcome | None = None
    gate: GateEvidence | None = None


@dataclass(frozen=True)
class RunResult:
    result: str  # success | failure
    duration: float
    jobs: tuple[JobResult, ...]

    def job(self, name: str) -> JobResult:
        return next(job for job in self.jobs if job.name == name)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ActionOutcome:
    """How a build or deploy job ended: ``success`` or ``failure``, why, and its outputs."""

    result: str
    reason: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)


class JobActions(Protocol):
    """What ``build:`` and ``deploy:`` jobs do; ``finished`` is the run so far, plan order.

    Both are called in a worker thread and report progress through ``log``. A deploy polls
    ``cancelled`` and stops following (the rollout itself is the server's) once it is set.
    """

    def build(
        self, job: PlannedJob, finished: Sequence[JobResult], log: Callable[[str], None]
    ) -> ActionOutcome: ...

    def deploy(
        self,
        job: PlannedJob,
        artifact: str,
        finished: Sequence[JobResult],
        log: Callable[[str], None],
        cancelled: threading.Event,
    ) -> ActionOutcome: ...


def parse_outputs(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines, and ``KEY<<EOF`` ... ``EOF`` blocks for multi-line values."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            body: list[str] = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            outputs[key.strip()] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            outputs[key.strip()] = value
    return outputs


class _JobLog:
    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=MAX_LOG_LINES)
        self.total = 0

    def append(self, line: str) -> None:
        self.lines.append(line)
        self.total += 1

    def text(self) -> str:
        dropped = self.total - len(self.lines)
        head = [f"conveyor: {dropped} earlier lines dropped"] if dropped else []
        return "\n".join([*head, *self.lines])


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class _Stopped(Exception):
    """Internal: the attempt was stopped by us (timeout); carries nothing."""


class PipelineRunner:
    def __init__(
        self,
        plan: Plan,
        workdir: Path,
        *,
        context: RunContext | None = None,
        cache_dir: Path | None = None,
        max_parallel: int | None = None,
        environ: Mapping[str, str] | None = None,
        on_log: LogSink | None = None,
        kill_grace: float = 2.0,
        actions: JobActions | None = None,
        run_as: Switch | None = None,
        gate_dir: Path | None = None,
    ) -> None:
        self.plan = plan
        self.workdir = workdir
        self.context = context or RunContext()
        self.cache = CacheStore(cache_dir) if cache_dir is not None else None
        self.limit = max_parallel or plan.max_parallel or os.cpu_count() or 1
        self.environ = dict(os.environ if environ is None else environ)
        self.on_log = on_log
        self.kill_grace = kill_grace
        self.actions = actions
        self.run_as = run_as
        self.gate_dir = gate_dir or workdir
        self.results: dict[str, JobResult] = {}

    async def run(self) -> RunResult:
        started = time.monotonic()
        states: dict[str, NeedState] = {}
        results = self.results
        pending = list(self.plan.jobs)
        running: dict[asyncio.Task[JobResult], PlannedJob] = {}
        stopped_by: str | None = None

        def record(result: JobResult) -> None:
            nonlocal stopped_by
            results[result.name] = result
            states[result.name] = NeedState(result.result, result.outputs)
            if result.result == "failure" and self.plan.fail_fast and stopped_by is None:
                stopped_by = result.name
                for task in running:
                    task.cancel()

        while pending or running:
            progressed = True
            while progressed and len(running) < self.limit:
                progressed = False
                for job in list(pending):
                    if len(running) >= self.limit:
                        break
                    if not all(need in states for need in job.needs):
                        continue
                    pending.remove(job)
                    progressed = True
                    try:
                        decision = decide(job, self.plan, self.context, states, stopped_by)
                    except PipelineError as error:
                        record(JobResult(job.name, "failure", reason=error.message))
                        continue
                    if isinstance(decision, Skip):
                        record(JobResult(job.name, "skipped", reason=decision.reason))
                        continue
                    running[asyncio.create_task(self._job(job, states))] = job
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: self.plan.jobs.index(running[t])):
                del running[task]
                record(task.result())
        ordered = tuple(results[job.name] for job in self.plan.jobs)
        failed = any(job.result in ("failure", "cancelled") for job in ordered)
        return RunResult("failure" if failed else "success", time.monotonic() - started, ordered)

    async def _job(self, job: PlannedJob, states: Mapping[str, NeedState]) -> JobResult:
        started = time.monotonic()
        log = _JobLog()
        attempts: list[Attempt] = []
        mask = Masker(())
        cache: CacheOutcome | None = None
        if job.spec.gate is not None:
            return await self._gate(job, started, log)
        if job.spec.build is not None or job.spec.deploy is not None:
            return await self._action(job, states, started, log)
        try:
            secrets = resolve_secrets(job.name, job.spec.secrets, self.environ)
            mask = Masker(secrets.values())
            names = condition_names(job, self.plan, self.context, states)
            env = self._environment(job, names, secrets)
            if self.cache is not None and job.spec.cache is not None:
                cache = await self._restore(job, names, log)
            for number in range(1, job.spec.retries + 2):
                attempt, outputs = await self._attempt(job, number, env, log, mask)
                attempts.append(attempt)
                if attempt.outcome != "infrastructure" or number > job.spec.retries:
                    break
                self._log(job.name, log, f"conveyor: retrying after {attempt.reason}")
        except asyncio.CancelledError:
            return self._finish(job, started, "cancelled", "stopped by fail-fast", attempts, log)
        except (SecretUnavailable, ExpressionError) as error:
            return self._finish(job, started, "failure", mask(error.message), attempts, log)
        last = attempts[-1]
        success = last.outcome == "success"
        reports = collect_junit(self.workdir, job.spec.reports.junit, mask)
        if success and cache is not None and job.spec.cache is not None and not cache.hit:
            cache = await self._save(cache, job.spec.cache.paths, job.name, log)
        return self._finish(
            job,
            started,
            "success" if success else "failure",
            last.reason,
            attempts,
            log,
            outputs={k: mask(v) for k, v in outputs.items()},
            reports=tuple(reports),
            coverage=tuple(collect_coverage(self.workdir, job.spec.reports.coverage)),
            cache=cache,
        )

    async def _gate(self, job: PlannedJob, started: float, log: _JobLog) -> JobResult:
        gate = job.spec.gate
        assert gate is not None
        try:
            evidence = await asyncio.to_thread(
                run_gate,
                gate,
                self.gate_dir,
                paths=job.spec.paths,
                allow=job.spec.allow,
                environ=self.environ,
            )
        except asyncio.CancelledError:
            return self._finish(job, started, "cancelled", "stopped by fail-fast", [], log)
        except GateUnavailable as error:
            self._log(job.name, log, f"conveyor: {error.message} ({error.hint})")
            return self._finish(job, started, "failure", f"{error.message}; {error.hint}", [], log)
        self._log(job.name, log, f"conveyor: gate {gate}: {evidence.summary}")
        for finding in evidence.findings:
            self._log(job.name, log, f"  {finding.file}:{finding.line}: {finding.detector}")
        reason = None if evidence.result == "success" else evidence.summary
        return self._finish(job, started, evidence.result, reason, [], log, gate=evidence)

    async def _action(
        self, job: PlannedJob, states: Mapping[str, NeedState], started: float, log: _JobLog
    ) -> JobResult:
        if self.actions is None:
            reason = f"a {job.spec.kind} job needs a Conveyor project: run it with `conveyor run`"
            return self._finish(job, started, "failure", reason, [], log)
        loop = asyncio.get_running_loop()

        def say(line: str) -> None:
            loop.call_soon_threadsafe(self._log, job.name, log, line)

        finished = [self.results[j.name] for j in self.plan.jobs if j.name in self.results]
        cancelled = threading.Event()
        try:
            if job.spec.build is not None:
                outcome = await asyncio.to_thread(self.actions.build, job, finished, say)
            else:
                artifact = self._artifact(job, states)
                outcome = await asyncio.to_thread(
                    self.actions.deploy, job, artifact, finished, say, cancelled
                )
        except asyncio.CancelledError:
            cancelled.set()
            return self._finish(job, started, "cancelled", "stopped by fail-fast", [], log)
        except (ExpressionError, PipelineError) as error:
            return self._finish(job, started, "failure", error.message, [], log)
        await asyncio.sleep(0)  # let the lines the thread scheduled reach the log first
        return self._finish(
            job, started, outcome.result, outcome.reason, [], log, outputs=dict(outcome.outputs)
        )

    def _artifact(self, job: PlannedJob, states: Mapping[str, NeedState]) -> str:
        """The digest a deploy job releases: its ``artifact:`` template, or its build's."""
        deploy = job.spec.deploy
        assert deploy is not None
        if deploy.artifact is not None:
            names = condition_names(job, self.plan, self.context, states)
            artifact = render(deploy.artifact, names).strip()
            if not artifact:
                raise PipelineError(f"job '{job.name}': artifact: rendered empty")
            return artifact
        assert job.build_job is not None
        digest = states[job.build_job].outputs.get("digest", "")
        if not digest:
            raise PipelineError(f"job '{job.name}': build job '{job.build_job}' gave no digest")
        return digest

    def _finish(
        self,
        job: PlannedJob,
        started: float,
        result: str,
        reason: str | None,
        attempts: list[Attempt],
        log: _JobLog,
        **extra: object,
    ) -> JobResult:
        exit_code = attempts[-1].exit_code if attempts else None
        return JobResult(
            job.name,
            result,
            reason=reason,
            duration=time.monotonic() - started,
            exit_code=exit_code,
            attempts=tuple(attempts),
            log=log.text(),
            **extra,  # type: ignore[arg-type]
        )

    def _environment(
        self, job: PlannedJob, names: Mapping[str, object], secrets: Mapping[str, str]
    ) -> dict[str, str]:
        env = job_environment(self.environ)
        if self.run_as is not None:
            env.update(self.run_as.environment())
        env["CONVEYOR_JOB"] = job.name
        for key, value in job.matrix.items():
            env[f"CONVEYOR_MATRIX_{key.upper()}"] = render("{{ m }}", {"m": value})
        for key, template in job.spec.env.items():
            env[key] = render(template, names)
            if "\x00" in env[key]:
                raise ExpressionError(
                    f"job '{job.name}': env {key} rendered a NUL character, which no process "
                    "environment can hold",
                    0,
                )
        env.update(secrets)
        return env

    async def _restore(
        self, job: PlannedJob, names: Mapping[str, object], log: _JobLog
    ) -> CacheOutcome:
        """A broken key fails the job (the config is wrong); a broken store is only a miss."""
        spec = job.spec.cache
        assert spec is not None and self.cache is not None

        def hashed(patterns: Sequence[str]) -> str:
            try:
                return hash_files(self.workdir, patterns)
            except (ValueError, NotImplementedError) as error:
                raise ExpressionError(f"hashFiles(): {error}", 0) from None

        key = render(spec.key, names, hashed)
        restore_keys = [render(k, names, hashed) for k in spec.restore_keys]
        try:
            outcome = await asyncio.to_thread(self.cache.restore, key, restore_keys, self.workdir)
            if self.run_as is not None and outcome.restored_key is not None:
                await asyncio.to_thread(self._hand_over, spec.paths)
            return outcome
        except (OSError, tarfile.TarError) as error:
            self._log(job.name, log, f"conveyor: cache restore failed, continuing cold: {error}")
            return CacheOutcome(key, hit=False, restored_key=None)

    async def _save(
        self, cache: CacheOutcome, paths: Sequence[str], job: str, log: _JobLog
    ) -> CacheOutcome:
        assert self.cache is not None
        if self.run_as is not None:
            paths = [p for p in paths if not self._through_link(p)]
        try:
            saved = await asyncio.to_thread(self.cache.save, cache.key, paths, self.workdir)
        except (OSError, tarfile.TarError) as error:
            self._log(job, log, f"conveyor: cache save failed: {error}")
            saved = False
        return dataclasses.replace(cache, saved=saved)

    def _hand_over(self, paths: Sequence[str]) -> None:
        """Restored cache paths (and the directories the restore made for them) to the user
        jobs run as: extracted by root, they must be theirs to change."""
        assert self.run_as is not None
        user = self.run_as.user
        for relative in paths:
            path = self.workdir / relative
            for parent in reversed(path.relative_to(self.workdir).parents[:-1]):
                directory = self.workdir / parent
                if directory.is_dir() and not directory.is_symlink():
                    os.chown(directory, user.uid, user.gid, follow_symlinks=False)
            if os.path.lexists(path):
                hand_over(path, user)

    def _through_link(self, relative: str) -> bool:
        """Whether a path a job wrote is reached through a symbolic link: saving it as root
        would archive whatever the link points at, a file only root may read included."""
        path = self.workdir
        for part in Path(relative).parts[:-1]:
            path = path / part
            if path.is_symlink():
                return True
        return False

    def _log(self, job: str, log: _JobLog, line: str) -> None:
        log.append(line)
        if self.on_log is not None:
            self.on_log(job, line)

    async def _pump(
        self, stream: asyncio.StreamReader, job: str, log: _JobLog, mask: Masker
    ) -> None:
        """Mask the byte stream, then split it into lines ourselves (readline() fails on a
        line longer than its limit). Masking before splitting is what catches a secret
        printed across two lines or two writes; after a short silence what the masker holds
        back is let through, so a live view never waits on a quiet job."""
        masking = mask.stream()
        pending = b""
        while True:
            try:
                chunk: bytes | None = await asyncio.wait_for(stream.read(_CHUNK), IDLE_FLUSH)
            except TimeoutError:
                chunk = None
            if chunk == b"":
                break
            pending += masking.feed(chunk) if chunk is not None else masking.flush()
            *lines, pending = pending.split(b"\n")
            if len(pending) > _CHUNK:
                lines.append(pending)
                pending = b""
            for line in lines:
                self._log(job, log, line.decode(errors="replace"))
        pending += masking.flush()
        if pending:
            for line in pending.split(b"\n"):
                self._log(job, log, line.decode(errors="replace"))

    async def _attempt(
        self, job: PlannedJob, number: int, env: dict[str, str], log: _JobLog, mask: Masker
    ) -> tuple[Attempt, dict[str, str]]:
        run = job.spec.run
        assert run is not None
        argv = ["sh", "-c", run] if isinstance(run, str) else list(run)
        # Read back through this descriptor, never the path: a job may replace the path (a
        # symbolic link to a file only root can read), not the file opened here.
        handle, output_path = tempfile.mkstemp(prefix="conveyor-output-")
        switch = {} if self.run_as is None else self.run_as.popen()
        env = {**env, "CONVEYOR_OUTPUT": output_path}
        started = time.monotonic()
        transport: asyncio.BaseTransport | None = None
        try:
            if self.run_as is not None:
                os.fchown(handle, self.run_as.user.uid, self.run_as.user.gid)
            # Our own pipe, not asyncio's PIPE: asyncio's wait() also waits for its pipes to
            # close, which a background child holding stdout would delay until it exits.
            read_fd, write_fd = os.pipe()
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=self.workdir,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=write_fd,
                    start_new_session=True,
                    **switch,
                )
            except OSError as error:
                os.close(read_fd)
                failed = mask(f"cannot start {argv[0]!r}: {error.strerror}")
                self._log(job.name, log, f"conveyor: {failed}")
                return Attempt(number, None, None, 0.0, "failure", failed), {}
            except BaseException:
                os.close(read_fd)
                raise
            finally:
                os.close(write_fd)
            stream = asyncio.StreamReader(limit=_CHUNK)
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_fd, "rb", 0)
            )
            pump = asyncio.create_task(self._pump(stream, job.name, log, mask))
            timed_out = False
            try:
                await asyncio.wait_for(process.wait(), job.spec.timeout)
            except TimeoutError:
                timed_out = True
                await self._stop(process)
            except asyncio.CancelledError:
                await self._stop(process)
                pump.cancel()
                raise
            finally:
                _kill_group(process.pid, signal.SIGKILL)  # background children left behind
            try:
                # A grandchild that left the group (setsid) may hold the pipe open forever.
                await asyncio.wait_for(pump, self.kill_grace)
            except TimeoutError:
                self._log(job.name, log, "conveyor: output still open after exit; stopped reading")
            outputs = parse_outputs(_read(handle).decode(errors="replace"))
        finally:
            if transport is not None:
                transport.close()
            os.close(handle)
            Path(output_path).unlink(missing_ok=True)
        code = process.returncode
        duration = time.monotonic() - started
        killed = -code if code is not None and code < 0 else None
        reason: str | None
        if timed_out:
            reason = f"timed out after {job.spec.timeout:g}s; its process group was killed"
            outcome = "timeout"
        elif code == 0:
            outcome, reason = "success", None
        elif killed is not None:
            outcome = "infrastructure"
            reason = f"killed by signal {signal.Signals(killed).name}"
        elif code in INFRA_EXIT_CODES:
            outcome, reason = "infrastructure", f"exit {code} (EX_TEMPFAIL)"
        else:
            outcome, reason = "failure", f"exit {code}"
        if reason is not None:
            self._log(job.name, log, f"conveyor: attempt {number}: {reason}")
        exit_code = code if killed is None else None
        return Attempt(number, exit_code, killed, duration, outcome, reason), outputs

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        _kill_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self.kill_grace)
        except TimeoutError:
            _kill_group(process.pid, signal.SIGKILL)
            await process.wait()


def job_user(run_as: str | None) -> User | None:
    """The user ``run:`` jobs start as (None: as this process); PipelineError before any job
    runs when ``pipeline.run_as`` names one this host lacks or we may not become."""
    if run_as is None:
        return None
    try:
        return require(run_as, current())
    except CannotSwitch as exc:
        raise PipelineError(
            f"pipeline jobs run as {run_as!r} (pipeline.run_as or the project's run_as), "
            f"but {exc.message}",
            hint=f"run `conveyor run` as root, as CI does (create the user there: {CREATE_HINT}), "
            "or set pipeline.run_as to a user of this host (null: jobs run as you)",
        ) from None


def _read(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def run_pipeline(
    pipeline: PipelineSpec | Plan,
    workdir: Path,
    **options: object,
) -> RunResult:
    """Plan (if given a spec) and run to completion; options are ``PipelineRunner``'s."""
    plan = build_plan(pipeline) if isinstance(pipeline, PipelineSpec) else pipeline
    runner = PipelineRunner(plan, workdir, **options)  # type: ignore[arg-type]
    return asyncio.run(runner.run())
