"""``LocalTarget``: instances as supervised processes on this machine.

The target is the shell around three parts: records on disk (what is desired), supervisors
in memory (what is happening), and /proc (what actually runs). Its one hard promise is crash
safety: the server that owns it may be SIGKILLed at any instant and started again, and the
instances must survive that, be adopted by the new server, and never run twice or be left
behind. ``start()`` restores that promise from the records and /proc (see
``policy.plan_adoption``); ``close(stop_instances=False)`` is what a planned server restart
uses; ``close(stop_instances=True)`` tears everything down.

State dir layout::

    instances/<instance_id>.json            one record per instance not yet stopped
    logs/<service>/<env>/<instance_id>.log  what each instance printed, plus runtime markers
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from conveyor.core.model import InstanceObservation, InstanceSpec
from conveyor.errors import Conflict, ConveyorError
from conveyor.runtime.local import logs, process, procfs
from conveyor.runtime.local.policy import RecordView, plan_adoption
from conveyor.runtime.local.process import ProcessRef, terminate_processes
from conveyor.runtime.local.records import InstanceRecord, RecordStore, check_name
from conveyor.runtime.local.supervisor import HOST, InstanceSupervisor

log = logging.getLogger(__name__)

ORPHAN_GRACE = 5.0
"""SIGTERM grace for processes that have no record: their own stop_grace is unknown."""


class LaunchFailed(ConveyorError):
    """An instance could not be started at all (missing artifact dir or executable)."""

    http_status = 422


class LocalTarget:
    kind = "local"

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir.resolve()
        self._clock = clock
        self._store = RecordStore(self.state_dir / "instances")
        self._logs = self.state_dir / "logs"
        self._supervisors: dict[str, InstanceSupervisor] = {}
        self._started = False
        self._start_lock = asyncio.Lock()
        self._listeners: list[Callable[[str, str], None]] = []

    # --- the Target protocol -------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what survived the previous server; idempotent."""
        async with self._start_lock:
            if self._started:
                return
            await self._adopt()
            self._started = True

    async def launch(self, spec: InstanceSpec) -> InstanceObservation:
        await self.start()
        for kind, name in (
            ("instance id", spec.instance_id),
            ("service", spec.service),
            ("environment", spec.env),
        ):
            check_name(kind, name)
        if spec.instance_id in self._supervisors:
            raise Conflict(
                f"instance {spec.instance_id!r} of {spec.service} is already running",
                hint="stop it first, or launch the new instance under a new id",
            )
        if not spec.artifact_dir.is_dir():
            raise LaunchFailed(
                f"cannot start {spec.service} instance {spec.instance_id}: artifact directory "
                f"{spec.artifact_dir} does not exist",
                hint="unpack the artifact before launching (or rebuild it if it was deleted)",
            )
        record = InstanceRecord(spec, self._free_port(), started_at=self._clock())
        supervisor = self._supervisor(record)
        try:
            supervisor.launch()
        except OSError as exc:
            self._store.delete(spec.instance_id)
            raise LaunchFailed(
                f"cannot start {spec.service} instance {spec.instance_id}: {exc}",
                hint=f"check the `run:` command of service {spec.service!r} in conveyor.yaml",
            ) from None
        self._supervisors[spec.instance_id] = supervisor
        return supervisor.observation()

    async def stop(self, instance_id: str) -> None:
        """Stop one instance; stopping an unknown or already stopped one does nothing."""
        supervisor = self._supervisors.get(instance_id)
        if supervisor is None:
            return
        await supervisor.stop()
        if self._supervisors.get(instance_id) is supervisor:
            del self._supervisors[instance_id]

    def observe(self, service: str, env: str) -> list[InstanceObservation]:
        return [
            s.observation()
            for s in list(self._supervisors.values())
            if s.spec.service == service and s.spec.env == env and not s.stopped
        ]

    async def close(self, *, stop_instances: bool) -> None:
        if stop_instances:
            await self.stop_all()
        else:
            await asyncio.gather(*(s.detach() for s in self._supervisors.values()))
        self._supervisors.clear()
        self._started = False

    # --- beyond the protocol -------------------------------------------------------------

    def all_instances(self) -> list[InstanceObservation]:
        return [s.observation() for s in list(self._supervisors.values()) if not s.stopped]

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(i) for i in list(self._supervisors)))

    def subscribe(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(service, env)`` whenever an instance turns ready, unready or dies."""
        self._listeners.append(listener)

    def _notify(self, spec: InstanceSpec) -> None:
        for listener in self._listeners:
            listener(spec.service, spec.env)

    def log_files(self, service: str, env: str) -> list[Path]:
        """Log files of a service in an environment, current and past instances, oldest first."""
        return logs.log_files(self._logs, service, env)

    # --- internals -----------------------------------------------------------------------

    def _supervisor(self, record: InstanceRecord) -> InstanceSupervisor:
        return InstanceSupervisor(
            record,
            store=self._store,
            logs_root=self._logs,
            state_dir=self.state_dir,
            clock=self._clock,
            base_env=os.environ,
            on_change=self._notify,
        )

    async def _adopt(self) -> None:
        records = {r.spec.instance_id: r for r in self._store.load_all()}
        alive = {
            i: r.pid is not None
            and r.start_ticks is not None
            and procfs.is_running(r.pid, r.start_ticks)
            for i, r in records.items()
        }
        for i, r in records.items():
            if r.pid is not None and not alive[i] and process.is_child(r.pid):
                process.collect(ProcessRef(r.pid, r.start_ticks or 0))  # our zombie: reap it
        tagged = procfs.scan_tagged(str(self.state_dir))
        views = [RecordView(i, r.pid, r.start_ticks, r.stopping) for i, r in records.items()]
        plan = plan_adoption(views, alive, tagged)
        if plan.kill:
            log.warning(
                "killing %d process(es) of %s that no instance record claims: %s",
                len(plan.kill),
                self.state_dir,
                ", ".join(str(p.pid) for p in plan.kill),
            )
            await terminate_processes(plan.kill, ORPHAN_GRACE)
        finishing = []
        for decision in plan.decisions:
            record = records[decision.instance_id]
            supervisor = self._supervisor(record)
            ref = None if decision.process is None else ProcessRef(*decision.process)
            if decision.finish_stop:
                finishing.append(supervisor.finish_stop(ref))
                continue
            supervisor.adopt(ref, respawn_is_restart=record.pid is not None)
            self._supervisors[decision.instance_id] = supervisor
        await asyncio.gather(*finishing)

    def _free_port(self) -> int:
        """A port the kernel just reported free, and that no instance of ours holds.

        An instance keeps its port across restarts, so a port of an instance waiting out
        its backoff is free to the kernel but not to us.
        """
        taken = {s.port for s in self._supervisors.values()}
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((HOST, 0))
                port = int(probe.getsockname()[1])
            if port not in taken:
                return port
        raise ConveyorError(  # pragma: no cover - needs 100 collisions in a row
            "no free TCP port on 127.0.0.1", hint="stop some instances or processes"
        )
