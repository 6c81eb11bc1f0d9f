"""``LocalTarget``: instances as supervised processes on this machine.

The target is the shell around three parts: records on disk (what is desired), supervisors
in memory (what is happening), and /proc (what actually runs). Its one hard promise is crash
safety: the server that owns it may be SIGKILLed at any instant and started again, and the
instances must survive that, be adopted by the new server, and never run twice or be left
behind. ``start()`` restores that promise from the records and /proc (see
``policy.plan_adoption``); ``close(stop_instances=False)`` is what a planned server restart
uses; ``close(stop_instances=True)`` tears everything down.

Instances with ``run_as`` run as that user (see ``environment`` and ``process``); records
carry the user, so an adopted instance that has to be respawned comes back as the same
user. When the target runs as root and an instance has no ``run_as``, it says so once per
service and environment, as a warning in the server's log: that instance runs as root.

State dir layout::

    instances/<instance_id>.json            one record per instance not yet stopped
    logs/<service>/<env>/<instance_id>.log  what each instance printed, plus runtime markers
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from conveyor.core.model import InstanceObservation, InstanceSpec
from conveyor.errors import Conflict, ConveyorError, Fenced, LaunchFailed
from conveyor.layout import private_directory
from conveyor.net import free_port
from conveyor.run_as import User, current, root_warning
from conveyor.runtime.local import logs, process, procfs
from conveyor.runtime.local.epochs import EpochRegister
from conveyor.runtime.local.policy import RecordView, plan_adoption
from conveyor.runtime.local.process import ProcessRef, terminate_processes
from conveyor.runtime.local.records import InstanceRecord, RecordStore, check_name
from conveyor.runtime.local.supervisor import HOST, InstanceSupervisor

log = logging.getLogger(__name__)

ORPHAN_GRACE = 5.0
"""SIGTERM grace for processes that have no record: their own stop_grace is unknown."""


class LocalTarget:
    kind = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        server: User | None = None,
    ) -> None:
        private_directory(state_dir)
        self.state_dir = state_dir.resolve()
        self._clock = clock
        self._server = server or current()
        self._warned: set[tuple[str, str]] = set()
        self._store = RecordStore(self.state_dir / "instances")
        self._logs = self.state_dir / "logs"
        self._supervisors: dict[str, InstanceSupervisor] = {}
        self._epochs = EpochRegister(self.state_dir)
        self._adopted: dict[str, int] = {}
        """Environments adopted one by one (``adopt``), with the lease epoch of each."""
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

    async def adopt(self, env: str, epoch: int) -> None:
        """Take over one environment's instances at lease ``epoch`` (a server that just
        acquired its lease). From now on a server with an older epoch can no longer start
        or restart an instance of ``env`` (``EpochRegister``)."""
        check_name("environment", env)
        async with self._start_lock:
            self._epochs.admit(env, epoch, "adopt instances")
            self._adopted[env] = epoch
            for supervisor in self._supervisors.values():
                if supervisor.spec.env == env:
                    supervisor.epoch = epoch
            if not self._started:
                await self._adopt(env=env, epoch=epoch)

    async def release(self, env: str) -> None:
        """Stop supervising ``env``'s instances and leave them running (its lease was lost:
        the server that holds it now supervises them)."""
        self._adopted.pop(env, None)
        leaving = [s for s in self._supervisors.values() if s.spec.env == env]
        await asyncio.gather(*(s.detach() for s in leaving))
        for supervisor in leaving:
            if self._supervisors.get(supervisor.id) is supervisor:
                del self._supervisors[supervisor.id]

    async def launch(self, spec: InstanceSpec) -> InstanceObservation:
        """Start one instance; LaunchFailed (and no record left) when it cannot start at all,
        Fenced when ``spec.epoch`` is older than the environment's newest."""
        if spec.env not in self._adopted:
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
        self._warn_if_root(spec)
        record = InstanceRecord(spec, self._free_port(), started_at=self._clock())
        supervisor = self._supervisor(record)
        try:
            supervisor.launch()
        except LaunchFailed as exc:
            # Not an instance at all: nothing runs, so nothing may be left to adopt.
            self._store.delete(spec.instance_id)
            supervisor.note(f"failed to start: {exc.message}")
            raise
        self._supervisors[spec.instance_id] = supervisor
        return supervisor.observation()

    async def stop(self, instance_id: str) -> None:
        """Stop one instance; stopping an unknown or already stopped one does nothing."""
        supervisor = self._supervisors.get(instance_id)
        if supervisor is None:
            return
        if supervisor.fenced:  # another server owns it now: forget it, never kill it
            del self._supervisors[instance_id]
            return
        try:  # a stop is fenced too: a server that lost the environment stops nothing
            self._epochs.admit(
                supervisor.spec.env, supervisor.epoch, f"stop instance {instance_id}"
            )
        except Fenced:
            supervisor.fenced = True
            del self._supervisors[instance_id]
            await supervisor.detach()
            raise
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
        self._adopted.clear()
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
            server=self._server,
            on_change=self._notify,
            epochs=self._epochs,
        )

    def _warn_if_root(self, spec: InstanceSpec) -> None:
        key = (spec.service, spec.env)
        warning = root_warning(self._server, {spec.service: spec.run_as})
        if warning and key not in self._warned:
            self._warned.add(key)
            log.warning("%s (environment %s)", warning, spec.env)

    async def _adopt(self, *, env: str | None = None, epoch: int = 0) -> None:
        """Adopt every instance, or only ``env``'s (under lease ``epoch``). Orphans (tagged
        processes no record claims, whatever their environment) are killed either way."""
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
            if env is not None:
                if record.spec.env != env or decision.instance_id in self._supervisors:
                    continue
                record = replace(record, spec=replace(record.spec, epoch=epoch))
            ref = None if decision.process is None else ProcessRef(*decision.process)
            try:
                supervisor = self._supervisor(record)
                if decision.finish_stop:
                    finishing.append(supervisor.finish_stop(ref))
                    continue
                self._warn_if_root(record.spec)
                supervisor.adopt(ref, respawn_is_restart=record.pid is not None)
            except (ConveyorError, OSError, ValueError) as exc:
                # One instance that cannot be taken over must not keep the server (and every
                # other instance) from starting: set it aside, say so, carry on.
                self._store.set_aside(decision.instance_id, f"cannot be adopted ({exc})")
                # Its process is stopped too: with the record gone nothing would ever stop it,
                # and it would hold its port and serve beside the instance that replaces it.
                orphans = [p for p in tagged if p.instance_id == decision.instance_id]
                if orphans:
                    finishing.append(terminate_processes(orphans, ORPHAN_GRACE))
                continue
            self._supervisors[decision.instance_id] = supervisor
        await asyncio.gather(*finishing)

    def _free_port(self) -> int:
        """A port the kernel just reported free, and that no instance of ours holds.

        An instance keeps its port across restarts, so a port of an instance waiting out
        its backoff is free to the kernel but not to us.
        """
        taken = {s.port for s in self._supervisors.values()}
        for _ in range(100):
            port = free_port(HOST)
            if port not in taken:
                return port
        raise ConveyorError(  # pragma: no cover - needs 100 collisions in a row
            "no free TCP port on 127.0.0.1", hint="stop some instances or processes"
        )
