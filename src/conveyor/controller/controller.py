"""The controller: one driver per (service, environment), kept running against the store.

It owns nothing durable. Everything it needs to resume after a crash is in the store (releases
with their frozen plans, statuses, stable addresses) or with the runtime (instance records it
adopts on start), which is why ``start()`` is the same code path for a fresh server and for one
restarted after SIGKILL.

It does not create releases: the application layer does (``application/releases.py``), then
``wake``s the driver, which finds the new release in the store on its next tick. Everything
a driver does is read from the release's plan, never from conveyor.yaml, so a broken or
edited file cannot change a rollout in progress.

With a ``Leadership`` (always, when built by ``server/stack.py``), it drives only the
environments whose lease this server holds: gaining a lease adopts that environment's
instances and starts its drivers, each carrying the lease's ``Fence`` into every status
commit, ledger append, route push and instance start; losing it (or a fenced write) stops
them and leaves the instances running for the new holder. Without one (tests building a
controller by hand) it drives everything, unfenced, as a single server always did.

Its plug-ins come from the composition root (``server/stack.py``) through their protocols:
a ``Target``, routers by kind, metric providers, notifiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from conveyor.analysis.base import MetricProvider
from conveyor.artifacts import ArtifactStoreProtocol
from conveyor.controller.driver import Driver
from conveyor.controller.leadership import Leadership
from conveyor.controller.notifications import Notifications
from conveyor.core.model import InstanceObservation, VersionCounters, sum_counters
from conveyor.errors import Conflict, ConveyorError, Fenced, NotFound
from conveyor.net import LOOPBACK, free_port
from conveyor.runtime.base import Target
from conveyor.store.records import AddressRecord, NewEvent, ReleaseRecord
from conveyor.store.repository import Store
from conveyor.traffic.base import TrafficRouter

log = logging.getLogger("conveyor.controller")

FIRST_PROBES_AT_START = 3.0
"""Seconds a starting server waits for adopted instances' first probes before routing."""
FIRST_PROBES_AT_TAKEOVER = 0.5
"""The same wait when taking an environment over later (shorter: other leases renew)."""

RouterFactory = Callable[[], TrafficRouter]


class Controller:
    def __init__(
        self,
        *,
        project_name: str,
        store: Store,
        artifacts: ArtifactStoreProtocol,
        target: Target,
        routers: Mapping[str, RouterFactory],
        providers: Callable[[], Mapping[str, MetricProvider]],
        notifications: Notifications,
        environment_router: Callable[[str], str | None] = lambda env: None,
        workdir: Path | None = None,
        clock: Callable[[], float] = time.time,
        host: str = LOOPBACK,
        tick: float = 0.1,
        leadership: Leadership | None = None,
    ) -> None:
        self.project_name = project_name
        self.store = store
        self.artifacts = artifacts
        self.target = target
        self._router_factories = dict(routers)
        self._routers: dict[str, TrafficRouter] = {}
        self.providers = providers
        self.notifications = notifications
        self.environment_router = environment_router
        self.workdir = workdir
        self.clock = clock
        self.host = host
        self.tick = tick
        self._drivers: dict[tuple[str, str], Driver] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.leadership = leadership
        self._leading: asyncio.Task[None] | None = None
        self._first_probe_wait = FIRST_PROBES_AT_START
        if leadership is not None:
            leadership.bind(self._acquired, self._lost)

    async def start(self) -> None:
        self.target.subscribe(self._instance_changed)
        if self.leadership is not None:
            # One round now: a single server (or the first of several) drives at once; the
            # loop then renews, and takes over what other servers stop renewing. It starts
            # before the takeovers are waited for: adopting many environments takes longer
            # than a lease lives unrenewed.
            envs = self._environments()
            await self.leadership.claim(envs, wait=False)
            self._leading = asyncio.create_task(self._lead(), name="leases")
            for env in sorted(envs):
                await self.leadership.ready(env)
            self._first_probe_wait = FIRST_PROBES_AT_TAKEOVER
            return
        await self.target.start()
        await self._await_first_probes(timeout=FIRST_PROBES_AT_START)
        for release in self.store.latest_per_service_env():
            await self.wake(release.service, release.env)

    async def close(self, *, stop_instances: bool) -> None:
        if self._leading is not None:
            self._leading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leading
            self._leading = None
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._drivers.clear()
        await self.notifications.close()
        # The data plane outlives the server unless everything is being stopped: routers
        # keep serving their last tables and a successor adopts them, like the instances.
        for router in self._routers.values():
            await (router.close() if stop_instances else router.detach())
        self._routers.clear()
        await self.target.close(stop_instances=stop_instances)
        if self.leadership is not None:
            await self.leadership.resign()

    # --- what the application layer asks ----------------------------------------------

    async def wake(self, service: str, env: str) -> Driver | None:
        """Make sure (service, env) has a driver and let it look at the store now.

        With leases: when another server holds ``env``'s lease, None — that server's
        controller finds the change in the store on its next tick or lease round."""
        if self.leadership is not None:
            if not self.leadership.holds(env):
                await self.leadership.claim([env])  # free or expired: take it now
                if not self.leadership.holds(env):
                    return None
            await self.leadership.ready(env)  # adopted before a driver acts on it
        driver = await self._driver(service, env)
        driver.wake()
        return driver

    def driver(self, service: str, env: str) -> Driver:
        try:
            return self._drivers[(service, env)]
        except KeyError:
            raise NotFound(f"nothing has been deployed for {service} in {env}") from None

    def observe(self, service: str, env: str) -> list[InstanceObservation]:
        return self.target.observe(service, env)

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

    def route_counters(self, service: str, env: str) -> VersionCounters | None:
        """The router's counters of (service, env), every version summed; None when no
        driver serves it in this server (nothing deployed, or another leader's)."""
        driver = self._drivers.get((service, env))
        if driver is None:
            return None
        counters = list(driver.router.counters(service, env).values())
        return sum_counters(counters) if counters else None

    def traffic(self) -> dict[tuple[str, str], dict[str, VersionCounters]]:
        """Cumulative router counters per version of every pair a driver serves (the
        dashboard samples these to chart a rollout)."""
        return {key: driver.router.counters(*key) for key, driver in list(self._drivers.items())}

    def prometheus_text(self) -> str:
        return "".join(router.prometheus_text() for router in self._routers.values())

    # --- internals --------------------------------------------------------------------

    async def _driver(self, service: str, env: str) -> Driver:
        key = (service, env)
        if key in self._drivers:
            return self._drivers[key]
        latest = self.store.releases(service, env, limit=1)
        plan = latest[0].plan if latest else None
        kind = (plan.router if plan else None) or self.environment_router(env) or "builtin"
        router = self.router_for(kind)
        address = self._address(service, env, plan.pinned_port if plan else None)

        async def serve() -> None:
            await router.serve(service, env, address.host, address.port, address.preview_port)

        serving = await _try_serve(serve, service, env)
        fence = self.leadership.fence(env) if self.leadership is not None else None
        driver = Driver(
            project_name=self.project_name,
            service=service,
            env=env,
            address=address,
            store=self.store,
            artifacts=self.artifacts,
            target=self.target,
            router=router,
            providers=self.providers,
            clock=self.clock,
            tick=self.tick,
            on_superseded=self._supersede,
            on_events=self._notify,
            workdir=self.workdir,
            fence=fence,
            serve=None if serving else serve,
            on_fenced=self._fenced,
        )
        self._drivers[key] = driver
        self._tasks[key] = asyncio.create_task(driver.run(), name=f"driver:{service}/{env}")
        return driver

    # --- leases -------------------------------------------------------------------------

    def _environments(self) -> set[str]:
        """Environments to claim: every one with a release."""
        return {release.env for release in self.store.latest_per_service_env()}

    async def _lead(self) -> None:
        assert self.leadership is not None
        while True:
            await asyncio.sleep(self.leadership.renew_every)
            try:
                envs = await asyncio.to_thread(self._environments)
                await self.leadership.claim(envs, wait=False)  # takeovers run beside rounds
                await self._drive_new(envs)
            except asyncio.CancelledError:
                raise
            except ConveyorError as error:
                log.warning("lease round: %s", error.message)
            except Exception:
                log.exception("lease round failed; retrying")

    async def _drive_new(self, envs: set[str]) -> None:
        """Releases another server created (or controlled) in an environment this one
        drives: a driver for a new service, or a nudge for an idle driver that has not seen
        its release's latest row (it would otherwise look only at its next idle tick)."""
        assert self.leadership is not None
        if not envs & set(self.leadership.held):
            return
        for release in await asyncio.to_thread(self.store.latest_per_service_env):
            key = (release.service, release.env)
            env = release.env
            if not self.leadership.holds(env) or self.leadership.taking_over(env):
                continue  # not ours, or the takeover starts its drivers itself
            driver = self._drivers.get(key)
            if driver is None:
                await self.wake(*key)
            elif not driver.has_seen(release):
                driver.wake()

    async def _acquired(self, env: str, epoch: int) -> None:
        """This server now drives ``env``: adopt its instances, start its drivers."""
        await self.target.adopt(env, epoch)
        await self._await_first_probes(timeout=self._first_probe_wait, env=env)
        for release in self.store.latest_per_service_env():
            if release.env == env:
                await self.wake(release.service, release.env)
                # Let the new driver's first step, and the lease renewals, run now: a queue
                # of hundreds of first steps would delay the renewals past the lease's life.
                await asyncio.sleep(0)

    async def _lost(self, env: str, why: str) -> None:
        """Another server drives ``env`` now: stop its drivers, free its ports, leave its
        instances running (they are the new holder's to supervise)."""
        for key in [k for k in self._drivers if k[1] == env]:
            task = self._tasks.pop(key, None)
            driver = self._drivers.pop(key)
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            unserve = getattr(driver.router, "unserve", None)
            if unserve is not None:
                unserve(*key)
        await self.target.release(env)

    def _fenced(self, env: str, error: Fenced) -> None:
        """A driver's write was refused: this server lost ``env``."""
        if self.leadership is not None:
            asyncio.get_running_loop().create_task(self.leadership.lose(env, error.message))

    def _notify(self, release: ReleaseRecord, events: list[NewEvent]) -> None:
        self.notifications.send(release, events)

    def _instance_changed(self, service: str, env: str) -> None:
        driver = self._drivers.get((service, env))
        if driver is not None:
            driver.reroute()

    def _address(self, service: str, env: str, pinned: int | None) -> AddressRecord:
        return self.store.address(
            service, env, pinned_port=pinned, allocate=lambda: free_port(self.host)
        )

    def _supersede(self, latest: ReleaseRecord) -> None:
        """Older releases still marked active (a blue-green cleanup) hand over to the latest."""
        for stale in self.store.active_releases():
            if (stale.service, stale.env) != (latest.service, latest.env) or stale.id == latest.id:
                continue
            self.store.update_release(
                stale.id,
                status=stale.status.evolve(cleanup_at=None),
                expected_version=stale.status_version,
                actor="conveyor",
                events=[NewEvent("release.superseded", {"by_revision": latest.revision})],
                fence=self.leadership.fence(latest.env) if self.leadership is not None else None,
            )

    async def _await_first_probes(self, timeout: float, env: str | None = None) -> None:
        """Adopted instances start unready; give them a probe before routes are served.

        The router outlives the server and still serves the previous server's table: the
        first table this server pushes must not be one where adopted instances, merely not
        probed yet, look unready (users would get 503s until the first probe)."""
        deadline = time.monotonic() + timeout
        latest = [r for r in self.store.latest_per_service_env() if env in (None, r.env)]
        while time.monotonic() < deadline:
            pending = [
                i
                for release in latest
                for i in self.target.observe(release.service, release.env)
                if i.last_probe is None and i.state in ("running", "starting")
            ]
            if not pending:
                return
            await asyncio.sleep(0.05)


async def _try_serve(serve: Callable[[], Awaitable[None]], service: str, env: str) -> bool:
    """Listen now if the port is free. It may not be: a paused former leader still holds
    it until it wakes and lets go; the driver retries each tick, and drives meanwhile."""
    try:
        await serve()
    except Conflict as error:
        log.warning("%s/%s: %s; retrying every tick", service, env, error.message)
        return False
    return True
