"""The controller: one driver per (service, environment), and the operations the API calls.

It owns nothing durable. Everything it needs to resume after a crash is in the store (releases,
statuses, stable addresses) or with the runtime (instance records it adopts on start), which
is why ``start()`` is the same code path for a fresh server and for one restarted after SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import LoadedProject
from conveyor.controller.driver import Driver
from conveyor.controller.releases import Releases
from conveyor.core.state import Phase, RolloutSpec, RolloutStatus, describe_step
from conveyor.errors import Conflict, ConveyorError, NotFound
from conveyor.notify import Notification, WebhookNotifier
from conveyor.runtime.base import Target
from conveyor.store.records import AddressRecord, NewEvent, ReleaseRecord
from conveyor.store.repository import Store
from conveyor.traffic.base import TrafficRouter

log = logging.getLogger("conveyor.controller")


def _canary_view(
    release: ReleaseRecord, status: RolloutStatus
) -> tuple[str | None, int | None, dict[str, Any] | None]:
    """Where a canary stands, for `status`: its step, its share of users, its verdicts."""
    spec = RolloutSpec.from_json(release.spec["rollout"])
    if spec.strategy.kind != "canary" or not Phase(release.phase).in_progress:
        return None, None, None
    steps = spec.strategy.steps
    index = status.step_index
    step = (
        f"{index + 1}/{len(steps)} {describe_step(steps[index])}"
        if index < len(steps)
        else "promoting"
    )
    total = sum(status.weights.values()) or 1
    percent = round(100 * status.weights.get(spec.version, 0) / total)
    runs = release.status.get("analysis") or {}
    verdicts = {key: run.get("summary", run.get("phase")) for key, run in runs.items()}
    return step, percent, verdicts or None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServiceStatus:
    """One row of `conveyor status`: what runs where, and what is changing."""

    service: str
    env: str
    revision: int | None
    version: str | None
    artifact: str | None
    config_version: str | None
    ready: int
    desired: int
    phase: str
    rollout_revision: int | None
    message: str
    address: str
    preview_address: str | None
    weights: Mapping[str, int]
    instances: list[dict[str, Any]]
    step: str | None = None  # canary: "2/5 set weight 20%"
    canary_percent: int | None = None
    analysis: Mapping[str, Any] | None = None  # latest verdict per analysis run

    def to_json(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.__dict__.items()}


class Controller:
    def __init__(
        self,
        *,
        load_project: Callable[[], LoadedProject],
        store: Store,
        artifacts: ArtifactStore,
        target: Target,
        router: TrafficRouter,
        routers: Mapping[str, Callable[[], TrafficRouter]] | None = None,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        tick: float = 0.1,
    ) -> None:
        self.load_project = load_project
        self.store = store
        self.artifacts = artifacts
        self.target = target
        self.router = router  # the builtin one; others are created when an environment asks
        self._router_factories = dict(routers or {})
        self._routers: dict[str, TrafficRouter] = {"builtin": router}
        self.clock = clock
        self.host = host
        self.tick = tick
        self.releases = Releases(load_project, store, artifacts)
        self._drivers: dict[tuple[str, str], Driver] = {}
        self._deliveries: set[asyncio.Task[None]] = set()
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def start(self) -> None:
        self.target.subscribe(self._instance_changed)
        await self.target.start()
        await self._await_first_probes(timeout=3.0)
        for release in self.store.latest_per_service_env():
            await self._driver(release.service, release.env)

    async def close(self, *, stop_instances: bool) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._drivers.clear()
        for router in self._routers.values():
            await router.close()
        await self.target.close(stop_instances=stop_instances)

    # --- operations -------------------------------------------------------------------

    async def deploy(
        self,
        service: str,
        env: str,
        artifact: str,
        *,
        overrides: Mapping[str, str] | None,
        actor: str,
    ) -> ReleaseRecord:
        release = self.releases.deploy(service, env, artifact, overrides=overrides, actor=actor)
        (await self._driver(service, env)).wake()
        return release

    async def rollback(
        self, service: str, env: str, to: int | None, *, actor: str
    ) -> ReleaseRecord:
        self.check_names(service, env)
        active = self.store.active_release(service, env)
        if to is None and active is not None and Phase(active.phase).in_progress:
            return await (await self._driver(service, env)).abort(actor)
        release = self.releases.rollback(service, env, to, actor=actor)
        (await self._driver(service, env)).wake()
        return release

    async def control(self, service: str, env: str, action: str, *, actor: str) -> ReleaseRecord:
        self.check_names(service, env)
        return await self.driver(service, env).control(action, actor)

    async def abort(self, service: str, env: str, *, actor: str) -> ReleaseRecord:
        self.check_names(service, env)
        return await self.driver(service, env).abort(actor)

    async def retry(self, service: str, env: str, *, actor: str) -> ReleaseRecord:
        """Run the last aborted release again: same artifact, same config, from the start."""
        latest = self.store.releases(service, env, limit=1)
        if not latest or latest[0].phase not in ("rolled_back", "failed"):
            raise Conflict(
                f"the latest release of {service} in {env} was not aborted; nothing to retry",
                hint=f"see `conveyor history {service} --env {env}`",
            )
        failed = latest[0]
        release = self.releases.deploy(
            service,
            env,
            failed.artifact_digest,
            actor=actor,
            reason=f"retry of r{failed.revision}",
            base_config=failed.config,
            instance_template=failed.spec["instance"],
        )
        (await self._driver(service, env)).wake()
        return release

    def status(self, env: str | None = None) -> list[ServiceStatus]:
        rows = []
        addresses = {(a.service, a.env): a for a in self.store.addresses()}
        for latest in self.store.latest_per_service_env():
            if env is not None and latest.env != env:
                continue
            current = self.store.current_release(latest.service, latest.env)
            serving = current or latest
            artifact = self.store.get_artifact(serving.artifact_digest)
            instances = self.target.observe(latest.service, latest.env)
            status = RolloutStatus.from_json(latest.status)
            address = addresses.get((latest.service, latest.env))
            step, percent, verdicts = _canary_view(latest, status)
            rows.append(
                ServiceStatus(
                    service=latest.service,
                    env=latest.env,
                    revision=current.revision if current else None,
                    version=(artifact.commit or "")[:12] or None,
                    artifact=serving.artifact_digest,
                    config_version=serving.config_version,
                    ready=sum(1 for i in instances if i.ready and i.version == serving.template),
                    desired=serving.instances,
                    phase=latest.phase,
                    rollout_revision=latest.revision,
                    message=status.message,
                    address=f"http://{address.host}:{address.port}" if address else "",
                    preview_address=(
                        f"http://{address.host}:{address.preview_port}" if address else None
                    ),
                    weights=dict(status.weights),
                    instances=[
                        {
                            "id": i.instance_id,
                            "revision": i.revision,
                            "version": i.version,
                            "state": i.state,
                            "ready": i.ready,
                            "restarts": i.restarts,
                            "pid": i.pid,
                            "port": i.port,
                            "last_probe": i.last_probe.detail if i.last_probe else None,
                        }
                        for i in instances
                    ],
                    step=step,
                    canary_percent=percent,
                    analysis=verdicts,
                )
            )
        return rows

    def router_for(self, kind: str) -> TrafficRouter:
        if kind not in self._routers:
            factory = self._router_factories.get(kind)
            if factory is None:
                raise NotFound(
                    f"no {kind} router is available in this server",
                    hint="use router: builtin, or run `conveyor server` where it is installed",
                )
            self._routers[kind] = factory()
        return self._routers[kind]

    def prometheus_text(self) -> str:
        return "".join(router.prometheus_text() for router in self._routers.values())

    def check_names(self, service: str | None, env: str | None) -> None:
        """Unknown names are errors with suggestions, not empty answers."""
        config = self.load_project().config
        if service is not None:
            config.service(service)
        if env is not None:
            config.environment(env)

    def driver(self, service: str, env: str) -> Driver:
        try:
            return self._drivers[(service, env)]
        except KeyError:
            raise NotFound(f"nothing has been deployed for {service} in {env}") from None

    # --- internals --------------------------------------------------------------------

    async def _driver(self, service: str, env: str) -> Driver:
        key = (service, env)
        if key in self._drivers:
            return self._drivers[key]
        address = self._address(service, env)
        project = self.load_project()
        router = self.router_for(project.config.environment(env).router)
        await router.serve(service, env, address.host, address.port, address.preview_port)
        driver = Driver(
            project_name=project.config.project,
            service=service,
            env=env,
            address=address,
            store=self.store,
            artifacts=self.artifacts,
            target=self.target,
            router=router,
            clock=self.clock,
            tick=self.tick,
            on_superseded=self._supersede,
            templates=lambda: self.load_project().config.analysis,
            workdir=project.root,
            on_events=self._notify,
        )
        self._drivers[key] = driver
        self._tasks[key] = asyncio.create_task(driver.run(), name=f"driver:{service}/{env}")
        return driver

    def _notify(self, release: ReleaseRecord, events: list[NewEvent]) -> None:
        """Hand events humans act on to the configured notifiers, without waiting for them."""
        try:
            configured = self.load_project().config.notify
        except ConveyorError:
            return
        notifiers = [
            WebhookNotifier(
                n.webhook,
                events=n.events,
                secret=os.environ.get(n.secret_env) if n.secret_env else None,
            )
            for n in configured
        ]
        for event in events:
            for notifier in notifiers:
                if notifier.wants(event.kind):
                    notification = Notification(
                        kind=event.kind,
                        service=release.service,
                        env=release.env,
                        revision=release.revision,
                        at=self.clock(),
                        details=event.details,
                    )
                    task = asyncio.create_task(self._deliver(notifier, notification))
                    self._deliveries.add(task)
                    task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, notifier: WebhookNotifier, notification: Notification) -> None:
        try:
            await notifier.notify(notification)
        except Exception as exc:  # best effort: the ledger is the record
            log.warning("notification %s to %s failed: %s", notification.kind, notifier.url, exc)

    def _instance_changed(self, service: str, env: str) -> None:
        driver = self._drivers.get((service, env))
        if driver is not None:
            driver.reroute()

    def _address(self, service: str, env: str) -> AddressRecord:
        pinned = None
        with contextlib.suppress(Exception):
            pinned = self.load_project().config.pinned_port(service, env)
        return self.store.address(
            service, env, pinned_port=pinned, allocate=lambda: free_port(self.host)
        )

    def _supersede(self, latest: ReleaseRecord) -> None:
        """Older releases still marked active (a blue-green cleanup) hand over to the latest."""
        for stale in self.store.active_releases():
            if (stale.service, stale.env) != (latest.service, latest.env) or stale.id == latest.id:
                continue
            status = RolloutStatus.from_json(stale.status).evolve(cleanup_at=None)
            self.store.update_release(
                stale.id,
                status=status.to_json(),
                phase=stale.phase,
                done=True,
                expected_version=stale.status_version,
                actor="conveyor",
                events=[NewEvent("release.superseded", {"by_revision": latest.revision})],
            )

    async def _await_first_probes(self, timeout: float) -> None:
        """Adopted instances start unready; give them a probe before routes are served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = [
                i
                for latest in self.store.latest_per_service_env()
                for i in self.target.observe(latest.service, latest.env)
                if i.last_probe is None and i.state == "running"
            ]
            if not pending:
                return
            await asyncio.sleep(0.05)
