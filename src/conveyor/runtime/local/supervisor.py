"""One instance kept alive: spawn, probe, restart with backoff, stop.

A supervisor is an asyncio task per instance. It owns the instance's record (rewritten
around every spawn, see ``records``) and its in-memory view, which ``observe()`` returns
without any I/O. The states it reports:

- ``starting``: the process is up but has not been ready since it (re)started;
- ``running``: it has been ready since it (re)started (``ready`` says whether it still is);
- ``backoff``: it exited, or liveness killed it, and the restart waits out its delay;
- ``failed``: a restart could not even be spawned (a vanished artifact dir, a secret that
  can no longer be read); retried with backoff. A first launch that cannot be spawned is
  not an instance at all: ``launch`` raises ``LaunchFailed`` and the target forgets it;
- ``stopping`` / ``stopped``: ``stop()`` was asked for.

Any exit the runtime did not ask for is a crash, whatever its code: a service is meant to
run until it is stopped. Deciding that a version crash-loops is not this module's business;
it counts restarts and the core judges them.

Every spawn starts from ``environment.prepare``: the environment is built and the secrets
read at that moment (a rotated secret is picked up by the next restart), and an instance
with secrets runs behind the masking relay (``runtime.relay``) so its log never holds them.
An instance with ``run_as`` is spawned as that user (the relay, when there is one, stays the
server's user and switches for the service it starts).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from conveyor.core.model import (
    InstanceObservation,
    InstanceSpec,
    InstanceState,
    ProbeResult,
    ProbeSpec,
)
from conveyor.errors import Fenced, LaunchFailed
from conveyor.run_as import User
from conveyor.runtime import relay
from conveyor.runtime.local import logs, process, procfs
from conveyor.runtime.local.environment import prepare
from conveyor.runtime.local.epochs import EpochRegister
from conveyor.runtime.local.policy import (
    TCP_FIRST_PERIOD,
    TCP_READINESS,
    ProbeCounter,
    backoff_delay,
    next_streak,
)
from conveyor.runtime.local.probes import http_probe, tcp_probe
from conveyor.runtime.local.process import ProcessRef
from conveyor.runtime.local.records import InstanceRecord, RecordStore

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
RECENT_PROBES = 10

Outcome = Literal["exited", "unhealthy"]


class InstanceSupervisor:
    def __init__(
        self,
        record: InstanceRecord,
        *,
        store: RecordStore,
        logs_root: Path,
        state_dir: Path,
        clock: Callable[[], float],
        base_env: Mapping[str, str],
        server: User,
        on_change: Callable[[InstanceSpec], None] | None = None,
        epochs: EpochRegister | None = None,
    ) -> None:
        self.spec: InstanceSpec = record.spec
        self.epoch = record.spec.epoch
        """The lease epoch this supervisor acts under; every (re)spawn is fenced by it."""
        self._epochs = epochs
        self.fenced = False
        self._on_change = on_change
        self._record = record
        self._store = store
        self._state_dir = state_dir
        self._clock = clock
        self._base_env = base_env
        self._server = server
        self.log_path = logs.log_path(logs_root, self.spec.service, self.spec.env, self.id)
        logs.private_directory(self.log_path.parent)
        self.state: InstanceState = "starting"
        self.process: ProcessRef | None = None
        self.ready = False
        self.ever_ready = False
        self.ready_since: float | None = None
        self.last_exit_code: int | None = None
        self._readiness = ProbeCounter(passing=False)
        self._last_probe: ProbeResult | None = None
        self._recent: deque[ProbeResult] = deque(maxlen=RECENT_PROBES)
        self._task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._liveness_failure = ""

    @property
    def id(self) -> str:
        return self.spec.instance_id

    @property
    def port(self) -> int:
        return self._record.port

    @property
    def stopped(self) -> bool:
        return self.state == "stopped"

    def observation(self) -> InstanceObservation:
        return InstanceObservation(
            instance_id=self.id,
            service=self.spec.service,
            env=self.spec.env,
            version=self.spec.version,
            revision=self.spec.revision,
            host=HOST,
            port=self.port,
            pid=None if self.process is None else self.process.pid,
            state=self.state,
            ready=self.ready,
            restarts=self._record.restarts,
            started_at=self._record.started_at,
            last_exit_code=self.last_exit_code,
            last_probe=self._last_probe,
            consecutive_probe_failures=self._readiness.failures,
            ever_ready=self.ever_ready,
            ready_since=self.ready_since if self.ready else None,
            log_path=self.log_path,
            recent_probes=tuple(self._recent),
        )

    # --- lifecycle -----------------------------------------------------------------------

    def launch(self) -> None:
        """Spawn now, so an instance that cannot start at all fails the launch (LaunchFailed)."""
        self._spawn(count_restart=False)
        self._task = _task(self._supervise(self.process, count_restart=True), self.id)

    def adopt(self, ref: ProcessRef | None, *, respawn_is_restart: bool) -> None:
        """Supervise a process that survived the previous server, or respawn the instance.

        The respawn happens now, like a launch, so the caller sees the new pid at once; if
        it fails, the supervision loop retries it with backoff.
        """
        count_restart = respawn_is_restart
        if ref is not None:
            self._take(ref, adopted=True)
        else:
            try:
                ref = self._spawn(count_restart=count_restart)
                count_restart = True
            except Fenced as exc:
                self._fence(exc)
                return
            except LaunchFailed as exc:
                self.state = "failed"
                self._mark(f"failed to start: {exc.message}")
        self._task = _task(self._supervise(ref, count_restart=count_restart), self.id)

    async def finish_stop(self, ref: ProcessRef | None) -> None:
        """The previous server died while stopping this instance: complete the stop."""
        self.process = ref
        await self.stop()

    async def stop(self) -> None:
        """Stop gracefully and forget the instance; concurrent callers share one stop."""
        if self._stop_task is None:
            self._stop_task = _task(self._stop(), self.id)
        await asyncio.shield(self._stop_task)

    async def detach(self) -> None:
        """Stop supervising but leave the process running, for the next server to adopt."""
        await self._cancel_supervision()

    # --- supervision ---------------------------------------------------------------------

    async def _supervise(self, ref: ProcessRef | None, *, count_restart: bool) -> None:
        streak = 0
        while True:
            if ref is None:
                try:
                    ref = self._spawn(count_restart=count_restart)
                except Fenced as exc:
                    self._fence(exc)
                    return
                except LaunchFailed as exc:
                    streak += 1
                    self.state = "failed"
                    delay = backoff_delay(streak)
                    self._mark(f"failed to start: {exc.message}; retrying in {delay:g}s")
                    await asyncio.sleep(delay)
                    count_restart = True
                    continue
            outcome = await self._until_down(ref)
            self.ready = False
            self._changed()  # the router must stop sending it users now, not next tick
            code = await self._settle(ref, outcome)
            self.process = None
            self.last_exit_code = code
            ran_for = max(0.0, self._clock() - self._record.started_at)
            streak = next_streak(streak, ran_for)
            delay = backoff_delay(streak)
            self.state = "backoff"
            self._mark(f"{_exit_text(code)} after {ran_for:.1f}s; restarting in {delay:g}s")
            await asyncio.sleep(delay)
            ref = None
            count_restart = True

    def _spawn(self, *, count_restart: bool) -> ProcessRef:
        """Start the process, or raise LaunchFailed saying why it cannot be started (Fenced
        when this server's lease epoch is older than the newest seen for the environment)."""
        if self._epochs is not None:
            self._epochs.admit(self.spec.env, self.epoch, f"start instance {self.id}")
        launch = prepare(self.spec, self.port, self._state_dir, self._base_env, self._server)
        restarts = self._record.restarts + (1 if count_restart else 0)
        desired = replace(self._record, pid=None, start_ticks=None, restarts=restarts)
        self._store.write(desired)  # before the spawn: a crash right after it leaves a trace
        self._record = desired
        argv, env, user = list(launch.argv), dict(launch.env), launch.user
        if launch.secret_names:
            ids = None if user is None else (user.uid, user.gid)
            argv = relay.command(self.log_path, argv, ids)
            env[relay.MASK_VAR] = ",".join(launch.secret_names)
            user = None  # the relay stays the server's user; it starts the service as ``ids``
        try:
            ref = process.spawn(
                argv, cwd=self.spec.artifact_dir, env=env, log_path=self.log_path, user=user
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            # prepare() checked what can be checked; this is a race (the directory or the
            # program vanished in between) or something the kernel refused
            raise LaunchFailed(
                f"cannot start {self.spec.service} instance {self.id}: {exc}",
                hint=f"check the `run:` command of service {self.spec.service!r} in "
                "conveyor.yaml and its artifact directory",
            ) from None
        self._record = desired.spawned(ref.pid, ref.start_ticks, self._clock())
        self._store.write(self._record)
        self._take(ref, adopted=False)
        return ref

    def _take(self, ref: ProcessRef, *, adopted: bool) -> None:
        self.process = ref
        self.state = "starting"
        self.ready = False
        self._readiness = ProbeCounter(passing=False)
        if adopted and self._record.pid != ref.pid:
            # found by its environment: the record never saw this pid, /proc knows its age
            started = procfs.started_at(ref.start_ticks) or self._clock()
            self._record = self._record.spawned(ref.pid, ref.start_ticks, started)
            self._store.write(self._record)
        if adopted:
            self._mark(
                f"adopted pid {ref.pid} port {self.port} at {logs.iso(self._clock())} "
                f"(restart {self._record.restarts})"
            )
        else:
            logs.append_marker(
                self.log_path,
                logs.started_marker(ref.pid, self.port, self._clock(), self._record.restarts),
            )

    async def _until_down(self, ref: ProcessRef) -> Outcome:
        exited = _task(process.wait_exit(ref), self.id)
        helpers = [_task(self._readiness_loop(), self.id)]
        waiting = {exited}
        if self.spec.liveness is not None:
            liveness = _task(self._liveness_loop(self.spec.liveness), self.id)
            helpers.append(liveness)
            waiting.add(liveness)
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            return "exited" if exited in done else "unhealthy"
        finally:
            for task in (exited, *helpers):
                task.cancel()
            await asyncio.gather(exited, *helpers, return_exceptions=True)

    async def _settle(self, ref: ProcessRef, outcome: Outcome) -> int | None:
        """Make sure nothing of the old process is left, and collect its exit code."""
        if outcome == "unhealthy":
            self.ready = False
            self._mark(
                f"liveness probe failed {self._liveness_failure}; "
                f"terminating process group {ref.pgid}"
            )
            await process.terminate_group(ref, self.spec.stop_grace)
        else:
            await process.kill_leftovers(ref, str(self._state_dir), self.id)
        return process.collect(ref)

    # --- probes --------------------------------------------------------------------------

    async def _readiness_loop(self) -> None:
        spec = self.spec.readiness
        loop = asyncio.get_running_loop()
        if spec is not None:
            await asyncio.sleep(spec.initial_delay)
        while True:
            began = loop.time()
            if spec is None:
                result = await tcp_probe(self.port, TCP_READINESS.timeout, self._clock)
                self._on_readiness(result, TCP_READINESS)
                period = TCP_READINESS.period if self.ready else TCP_FIRST_PERIOD
            else:
                result = await http_probe(self.port, spec.path, spec.timeout, self._clock)
                self._on_readiness(result, spec)
                period = spec.period
            await asyncio.sleep(max(0.0, period - (loop.time() - began)))

    def _on_readiness(self, result: ProbeResult, spec: ProbeSpec) -> None:
        self._last_probe = result
        self._recent.append(result)
        self._readiness = self._readiness.observe(result.ok, spec)
        was_ready = self.ready
        self.ready = self._readiness.passing and self._stop_task is None
        if self.ready != was_ready:
            self.ready_since = self._clock() if self.ready else None
            self._changed()
        if self.ready:
            self.ever_ready = True
            if self.state == "starting":
                self.state = "running"

    async def _liveness_loop(self, spec: ProbeSpec) -> None:
        """Return when ``failure_threshold`` liveness probes in a row have failed."""
        loop = asyncio.get_running_loop()
        counter = ProbeCounter(passing=True)
        await asyncio.sleep(spec.initial_delay)
        while True:
            began = loop.time()
            result = await http_probe(self.port, spec.path, spec.timeout, self._clock)
            counter = counter.observe(result.ok, spec)
            if not result.ok:
                self._recent.append(replace(result, detail=f"liveness: {result.detail}"))
            if not counter.passing:
                self._liveness_failure = f"{counter.failures} in a row, last: {result.detail}"
                return
            await asyncio.sleep(max(0.0, spec.period - (loop.time() - began)))

    # --- stopping ------------------------------------------------------------------------

    async def _stop(self) -> None:
        self.state = "stopping"
        self.ready = False
        self._record = replace(self._record, stopping=True)
        self._store.write(self._record)
        await self._cancel_supervision()
        ref = self.process
        if ref is not None:
            if ref.running():
                self._mark(
                    f"stopping: SIGTERM to process group {ref.pgid}, "
                    f"SIGKILL after {self.spec.stop_grace:g}s"
                )
                killed = await process.terminate_group(ref, self.spec.stop_grace)
            else:
                await process.kill_leftovers(ref, str(self._state_dir), self.id)
                killed = False
            code = process.collect(ref)
            self.last_exit_code = code if code is not None else self.last_exit_code
            self._mark(f"stopped: {_exit_text(code)}" + (" (SIGKILL needed)" if killed else ""))
        self.process = None
        self.state = "stopped"
        self._store.delete(self.id)

    async def _cancel_supervision(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _fence(self, exc: Fenced) -> None:
        """Another server leads the environment now: leave the instance (and its record)
        to it, and supervise no more."""
        self.fenced = True
        self.state = "stopped"
        log.warning("%s (%s)", exc.message, exc.hint)
        self._mark(f"not restarted by this server: {exc.message}")

    def _changed(self) -> None:
        """Tell whoever routes traffic that readiness or liveness of this instance changed."""
        if self._on_change is not None:
            self._on_change(self.spec)

    def _mark(self, text: str) -> None:
        logs.append_marker(self.log_path, f"--- {text} ---")

    def note(self, text: str) -> None:
        """Add a runtime marker to the instance's log (it explains a failed launch later)."""
        self._mark(text)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exited (code unknown: adopted process)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _task(coro: Coroutine[Any, Any, Any], instance_id: str) -> asyncio.Task[Any]:
    """A task whose unexpected failure is logged instead of vanishing with the task."""
    task = asyncio.get_running_loop().create_task(coro, name=f"conveyor-instance-{instance_id}")
    task.add_done_callback(_report_failure)
    return task


def _report_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())
