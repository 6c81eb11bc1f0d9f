"""One driver per (service, environment): observe, decide, act, record — forever.

The driver is the imperative shell around ``core.rollout.decide``. Each tick it reads the
latest release from the store, builds observations from the runtime and the router, asks the
core for the next action, performs it, and only then commits the status and its ledger events
in one transaction. Because decisions are level-based, a driver that dies anywhere in this
sequence (SIGKILL included) is replaced by one that observes the world as it is and carries on.

Between rollouts the driver keeps the router's table in step with readiness, so an instance
that stops answering its probe stops receiving users even when nothing is being deployed.

An instance the runtime cannot start at all (``LaunchFailed``: a secret that cannot be read,
a program that is not there) is an observation, not a crash of the loop: the reason goes on
the ledger with the ``instances.started`` event of that attempt, the next tick's decision
sees it (``Observations.launch_failure``) and rolls the release back. A launch of the stable
version that fails during a rollback is retried every ``LAUNCH_RETRY`` seconds, each attempt
on the ledger, until the rollback's deadline ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from conveyor.analysis.base import MetricProvider
from conveyor.artifacts import ArtifactStoreProtocol
from conveyor.controller.analyses import ReleaseAnalyses
from conveyor.controller.approvals import approval_state
from conveyor.controller.instances import instance_spec
from conveyor.controller.migrations import contracted_event, run_migration, started_details
from conveyor.core import canary, rollout
from conveyor.core.approval import ApprovalState
from conveyor.core.leases import Fence
from conveyor.core.model import HeaderRoute, InstanceObservation, RouteTable, VersionCounters
from conveyor.core.retry import RetryPolicy
from conveyor.core.state import (
    Action,
    CheckPreview,
    Decision,
    MigrationRun,
    Observations,
    Phase,
    PreviewCheck,
    RolloutSpec,
    RolloutStatus,
    RunAnalysis,
    RunMigration,
    SetWeights,
    StartInstances,
    StopInstances,
    Wait,
)
from conveyor.core.traffic import route_table, window
from conveyor.errors import Conflict, Fenced, LaunchFailed
from conveyor.runtime.base import Target
from conveyor.store.records import AddressRecord, NewEvent, ReleaseRecord
from conveyor.store.repository import Store
from conveyor.traffic.base import TrafficRouter

log = logging.getLogger("conveyor.controller")

ACTOR = "conveyor"
IDLE_TICK = 30.0
"""Seconds an idle driver (its release done, every instance there) sleeps between looks:
anything that matters wakes it sooner (a deploy, a control, an instance that changed), so
idle environments cost next to nothing however many there are."""
LAUNCH_RETRY = 5.0
"""Seconds before a version whose launch failed is launched again (rollbacks only)."""


class Driver:
    def __init__(
        self,
        *,
        project_name: str,
        service: str,
        env: str,
        address: AddressRecord,
        store: Store,
        artifacts: ArtifactStoreProtocol,
        target: Target,
        router: TrafficRouter,
        providers: Callable[[], Mapping[str, MetricProvider]],
        clock: Callable[[], float],
        tick: float = 0.1,
        idle_tick: float = IDLE_TICK,
        on_superseded: Callable[[ReleaseRecord], None] | None = None,
        workdir: Path | None = None,
        on_events: Callable[[ReleaseRecord, list[NewEvent]], None] | None = None,
        fence: Fence | None = None,
        serve: Callable[[], Awaitable[None]] | None = None,
        on_fenced: Callable[[str, Fenced], None] | None = None,
    ) -> None:
        self.project_name = project_name
        self.service = service
        self.env = env
        self.address = address
        self.store = store
        self.artifacts = artifacts
        self.target = target
        self.router = router
        self.clock = clock
        self.tick = tick
        # Spread: drivers started together must not all look again in the same instant (1,500
        # steps at once would keep the event loop, and the lease renewals, waiting).
        self.idle_tick = idle_tick * random.uniform(0.8, 1.2)
        self.on_superseded = on_superseded
        self.on_events = on_events
        self.fence = fence
        """The lease this driver acts under; every write and command carries its epoch."""
        self._serve = serve
        """Set while the router could not listen yet (a paused former leader holds the port)."""
        self.on_fenced = on_fenced
        self.analyses = ReleaseAnalyses(
            service=service,
            env=env,
            router=router,
            providers=providers(),
            clock=clock,
            workdir=workdir,
        )
        self._superseded_checked: int | None = None
        self.draining: set[str] = set()
        self._samples: deque[tuple[float, VersionCounters]] = deque()
        self._sampled_version: str | None = None
        self._preview: PreviewCheck | None = None
        self._table: RouteTable | None = None
        self._weights: dict[str, int] | None = None
        self._preview_version: str | None = None
        self._header_route: HeaderRoute | None = None
        self._retry_to: tuple[str | None, RetryPolicy] = (None, RetryPolicy())
        """The stable version and the retry policy of the release being rolled out."""
        self._restored_at: float | None = None
        self._idle = False
        self._cached: ReleaseRecord | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._launch_failures: dict[tuple[int, str], tuple[float, str]] = {}
        """(release id, version) -> (when, why) of the last launch the runtime refused."""
        self._migrations: dict[int, MigrationRun] = {}
        """Release id -> how its migration went, until the decision that records it commits."""

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Fenced as error:
                # Another server holds the lease now: everything this one would do is
                # refused. Stop, and let the controller hand the environment over.
                log.error(
                    "driver %s/%s: %s (%s)", self.service, self.env, error.message, error.hint
                )
                if self.on_fenced is not None:
                    self.on_fenced(self.env, error)
                return
            except Exception:
                log.exception("driver %s/%s: tick failed; retrying", self.service, self.env)
                await asyncio.sleep(1.0)
            await self._pause()

    async def _pause(self) -> None:
        """Sleep one tick or until woken. (Not `wait_for`: on 3.11 it can swallow a cancel.)"""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            # A port not yet listened on (a paused former leader holds it) is retried each tick.
            idle = self._idle and self._serve is None
            await asyncio.wait({waiter}, timeout=self.idle_tick if idle else self.tick)
        finally:
            waiter.cancel()
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def has_seen(self, release: ReleaseRecord) -> bool:
        """Whether this driver's last look at the store saw ``release`` as it is now."""
        cached = self._cached
        return cached is not None and (cached.id, cached.status_version) == (
            release.id,
            release.status_version,
        )

    def reroute(self) -> None:
        """An instance changed: fix the route table now (no store access), then tick."""
        if self._weights is not None:
            instances = self.target.observe(self.service, self.env)
            try:
                self._apply_table(self._weights, instances, self._preview_version)
            except Fenced as error:  # the next tick stops this driver
                log.warning("%s/%s: %s", self.service, self.env, error.message)
        self._wake.set()

    @property
    def epoch(self) -> int:
        return 0 if self.fence is None else self.fence.epoch

    async def step(self) -> None:
        async with self._lock:
            self._idle = False
            if self._serve is not None:
                with contextlib.suppress(Conflict):
                    await self._serve()
                    self._serve = None
            release = self._latest()
            if release is None:
                self._idle = True
                return
            if self.on_superseded is not None and self._superseded_checked != release.id:
                self.on_superseded(release)
                self._superseded_checked = release.id
            instances = self.target.observe(self.service, self.env)
            self._sync_routes(release, instances)
            if release.done:
                settled = await self._restore(release, instances)
                self._idle = settled and not self.draining
                return
            spec = release.rollout_spec()
            status = release.status
            self.analyses.load(release, spec)
            measured = await self.analyses.step()
            obs = self._observe(spec, status, instances)
            if status.phase == Phase.PENDING_APPROVAL:
                obs = dataclasses.replace(obs, approval=self._approval(release))
            decision = rollout.decide(spec, status, obs, self.clock())
            await self._carry_out(release, spec, decision, measured=measured)

    async def abort(
        self, actor: str, *, reason: str = "manual", message: str | None = None
    ) -> ReleaseRecord:
        """Manual rollback of the release in progress (same path as an automatic one)."""
        async with self._lock:
            release = self._latest()
            if release is None or release.done or not release.phase.in_progress:
                raise Conflict(
                    f"no rollout of {self.service} in {self.env} is in progress",
                    hint="to return to an earlier release, use `--to REVISION`",
                )
            if release.phase == Phase.ROLLING_BACK:
                return release
            spec = release.rollout_spec()
            status = release.status
            self.analyses.load(release, spec)
            instances = self.target.observe(self.service, self.env)
            obs = self._observe(spec, status, instances)
            decision = rollout.manual_abort(
                spec, status, obs, actor, self.clock(), reason=reason, message=message
            )
            updated = await self._carry_out(release, spec, decision, actor=actor)
        self.wake()
        return updated

    async def control(self, action: str, actor: str) -> ReleaseRecord:
        """A human's hand on a rollout in progress: promote [full], pause, resume."""
        async with self._lock:
            release = self._latest()
            if release is None or not release.phase.in_progress:
                raise Conflict(
                    f"no rollout of {self.service} in {self.env} is in progress",
                    hint=f"see `conveyor status --env {self.env}`",
                )
            updated = apply_control(self.store, release, action, actor, fence=self.fence)
        self.wake()
        return updated

    # --- observing --------------------------------------------------------------------

    def _approval(self, release: ReleaseRecord) -> ApprovalState | None:
        """Where a release waiting for people stands, from the votes on the ledger."""
        return approval_state(self.store, release, self.clock())

    def _latest(self) -> ReleaseRecord | None:
        """The newest release; re-read (and re-parsed) only when its row changed."""
        head = self.store.release_head(self.service, self.env)
        if head is None:
            self._cached = None
            return None
        cached = self._cached
        if cached is None or (cached.id, cached.status_version) != head:
            releases = self.store.releases(self.service, self.env, limit=1)
            self._cached = cached = releases[0] if releases else None
        return cached

    def _observe(
        self, spec: RolloutSpec, status: RolloutStatus, instances: list[InstanceObservation]
    ) -> Observations:
        live = [i for i in instances if i.instance_id not in self.draining]
        new = tuple(i for i in live if i.version == spec.version)
        old = tuple(
            i for i in live if spec.stable_version is not None and i.version == spec.stable_version
        )
        others = tuple(i for i in live if i.version not in (spec.version, spec.stable_version))
        preview, self._preview = self._preview, None
        return Observations(
            new=new,
            old=old,
            others=others,
            traffic=self._traffic(spec),
            preview=preview,
            analysis=self.analyses.states(),
            launch_failure=self._launch_failure(spec.release_id, spec.version),
            migration=self._migrations.get(spec.release_id),
        )

    def _launch_failure(self, release_id: int, version: str) -> str | None:
        failure = self._launch_failures.get((release_id, version))
        return None if failure is None else failure[1]

    def _traffic(self, spec: RolloutSpec) -> Any:
        """The new version's requests and errors over the trigger window, from router counters."""
        if self._sampled_version != spec.version:
            self._samples.clear()
            self._sampled_version = spec.version
        now = self.clock()
        counters = self.router.counters(self.service, self.env).get(spec.version, VersionCounters())
        self._samples.append((now, counters))
        horizon = now - spec.triggers.window - 2 * self.tick
        while len(self._samples) > 2 and self._samples[1][0] <= horizon:
            self._samples.popleft()
        return window(list(self._samples), now, spec.triggers.window)

    # --- acting -----------------------------------------------------------------------

    def _sync_routes(self, release: ReleaseRecord, instances: list[InstanceObservation]) -> None:
        status = release.status
        spec = release.rollout_spec()
        preview = rollout.preview_version(spec, status)
        self._header_route = (
            HeaderRoute(status.header_route[0], status.header_route[1], spec.version)
            if status.header_route and release.phase.in_progress
            else None
        )
        # Only while two versions are being compared is one of them "the known good one".
        stable = spec.stable_version if release.phase.in_progress else None
        self._retry_to = (stable, release.plan.retry)
        self._apply_table(status.weights, instances, preview)

    def _apply_table(
        self,
        weights: Mapping[str, int],
        instances: list[InstanceObservation],
        preview_version: str | None,
    ) -> None:
        self._weights = dict(weights)
        self._preview_version = preview_version
        table = route_table(
            weights,
            instances,
            draining=frozenset(self.draining),
            preview_version=preview_version,
            header_route=self._header_route,
            stable_version=self._retry_to[0],
            retry=self._retry_to[1],
        )
        table = dataclasses.replace(table, epoch=self.epoch)
        if table != self._table:
            self.router.apply(self.service, self.env, table)
            self._table = table

    async def _carry_out(
        self,
        release: ReleaseRecord,
        spec: RolloutSpec,
        decision: Decision,
        *,
        actor: str = ACTOR,
        measured: list[NewEvent] | None = None,
    ) -> ReleaseRecord:
        action = decision.action
        if isinstance(action, StartInstances) and self._launch_deferred(release, action):
            return release  # it failed a moment ago: try again later, not every tick
        extra = await self._act(release, spec, action, decision.status)
        extra.update(self._migration_details(release, decision))
        events = [
            *(measured or []),
            *(
                NewEvent(e.kind, _named({**e.details, **extra.get(e.kind, {})}, spec))
                for e in decision.events
            ),
        ]
        if any(e.kind == "migration.succeeded" for e in decision.events):
            contracted = contracted_event(self.store, release)
            events.extend([contracted] if contracted is not None else [])
        if decision.status.phase.terminal:
            self.analyses.terminate()
        analysis = self.analyses.to_json() if self.analyses.active else None
        unchanged = analysis is None or analysis == dict(release.analysis)
        if decision.status == release.status and unchanged and not events:
            return release
        updated = self.store.update_release(
            release.id,
            status=decision.status,
            expected_version=release.status_version,
            actor=actor,
            events=events,
            analysis=analysis,
            fence=self.fence,
        )
        if updated.status.migration in ("succeeded", "failed"):
            self._migrations.pop(release.id, None)
        if self.on_events is not None and events:
            self.on_events(updated, events)
        # Apply the committed weights right away rather than on the next tick.
        self._sync_routes(updated, self.target.observe(self.service, self.env))
        return updated

    async def _act(
        self, release: ReleaseRecord, spec: RolloutSpec, action: Action, status: RolloutStatus
    ) -> dict[str, dict[str, Any]]:
        """Perform one action; returns details to merge into the matching ledger events."""
        if isinstance(action, Wait):
            return {}
        if isinstance(action, SetWeights):
            # The table is rebuilt from the committed status right after the commit; pushing
            # it first as well means users move before the ledger write, not after.
            instances = self.target.observe(self.service, self.env)
            self._apply_table(action.weights, instances, self._preview_version)
            return {}
        if isinstance(action, StartInstances):
            source = release if action.version == release.template else self._stable(release)
            started, failure = await self._start(source, action.count)
            details: dict[str, Any] = {"instances": started, "revision": source.revision}
            if failure is not None:
                self._launch_failures[(release.id, action.version)] = (self.clock(), failure)
                details["launch_failed"] = failure
            return {"instances.started": details}
        if isinstance(action, StopInstances):
            await self._stop(list(action.instance_ids), release.plan.instance.drain_timeout)
            return {}
        if isinstance(action, RunAnalysis):
            self.analyses.start(release, spec, action.key, action.template)
            return {}
        if isinstance(action, CheckPreview):
            self._preview = await self._check_preview(release)
            return {}
        if isinstance(action, RunMigration):
            artifact_dir = await asyncio.to_thread(self.artifacts.unpack, release.artifact_digest)
            self._migrations[release.id] = await run_migration(release, artifact_dir)
            return {}
        raise AssertionError(f"unknown action {action!r}")

    @staticmethod
    def _migration_details(release: ReleaseRecord, decision: Decision) -> dict[str, Any]:
        """The plan's side of the migration events: the command and its bounds when it
        starts, the migrations it applied when it succeeds (``schema_history`` reads it)."""
        kinds = {e.kind for e in decision.events}
        spec = release.plan.migrate
        if spec is None or not kinds & {"migration.started", "migration.succeeded"}:
            return {}
        return {
            "migration.started": started_details(release),
            "migration.succeeded": {"migrations": sorted(spec.names)},
        }

    def _stable(self, release: ReleaseRecord) -> ReleaseRecord:
        if release.stable_release_id is None:
            raise AssertionError("asked to start the stable version of a first release")
        return self.store.get_release(release.stable_release_id)

    async def _restore(self, latest: ReleaseRecord, instances: list[InstanceObservation]) -> bool:
        """Bring the last succeeded release back to its size when nothing is rolling out;
        True when it has its size (nothing to watch until something changes)."""
        target = (
            latest
            if latest.phase == Phase.SUCCEEDED
            else self.store.current_release(self.service, self.env)
        )
        if target is None:
            return True
        now = self.clock()
        action = rollout.restore(
            target.template, target.instances, instances, last_restore=self._restored_at, now=now
        )
        if action is None:
            # Settled: exactly its instances, nothing missing (not merely backing off),
            # nothing of another version still around to be drained or stopped.
            missing = rollout.restore(
                target.template, target.instances, instances, last_restore=None, now=now
            )
            return missing is None and all(i.version == target.template for i in instances)
        self._restored_at = now
        present = target.instances - action.count
        started, failure = await self._start(target, action.count)
        self.store.append_events(
            [
                NewEvent(
                    "instances.restored",
                    {
                        "revision": target.revision,
                        "instances": started,
                        "present": present,
                        "desired": target.instances,
                        **({"launch_failed": failure} if failure else {}),
                    },
                    service=self.service,
                    env=self.env,
                    release_id=target.id,
                )
            ],
            actor=ACTOR,
            fence=self.fence,
        )
        log.info(
            "%s/%s: restored %d instance(s) of r%d (%d of %d were running)",
            self.service,
            self.env,
            len(started),
            target.revision,
            present,
            target.instances,
        )
        return False

    def _launch_deferred(self, release: ReleaseRecord, action: StartInstances) -> bool:
        failure = self._launch_failures.get((release.id, action.version))
        return failure is not None and self.clock() - failure[0] < LAUNCH_RETRY

    async def _start(self, source: ReleaseRecord, count: int) -> tuple[list[str], str | None]:
        """Launch ``count`` instances of ``source``; the ones started, and why one could not be."""
        artifact = self.store.get_artifact(source.artifact_digest)
        artifact_dir = await asyncio.to_thread(self.artifacts.unpack, source.artifact_digest)
        started: list[str] = []
        for _ in range(count):
            spec = instance_spec(self.project_name, source, artifact_dir, artifact.commit)
            spec = dataclasses.replace(spec, epoch=self.epoch)
            try:
                await self.target.launch(spec)
            except LaunchFailed as exc:
                log.warning("%s: %s (%s)", source.name, exc.message, exc.hint)
                return started, exc.message
            started.append(spec.instance_id)
        return started, None

    async def _stop(self, instance_ids: list[str], drain_timeout: float) -> None:
        """Drain (no new requests, wait for in-flight ones), then stop, all in parallel."""
        self.draining.update(instance_ids)
        # Re-apply the table the router already has, minus the draining instances (the
        # weights and preview were remembered by the last sync: no need to read the store).
        instances = self.target.observe(self.service, self.env)
        self._apply_table(self._weights or {}, instances, self._preview_version)
        try:
            await asyncio.gather(*(self._drain_and_stop(i, drain_timeout) for i in instance_ids))
        finally:
            self.draining.difference_update(instance_ids)

    async def _drain_and_stop(self, instance_id: str, drain_timeout: float) -> None:
        deadline = self.clock() + drain_timeout
        while self.router.in_flight(self.service, self.env, instance_id) > 0:
            if self.clock() >= deadline:
                log.warning(
                    "instance %s still busy after %.0fs; stopping", instance_id, drain_timeout
                )
                break
            await asyncio.sleep(0.05)
        await self.target.stop(instance_id)

    async def _check_preview(self, release: ReleaseRecord) -> PreviewCheck:
        readiness = release.plan.instance.readiness
        path = readiness.path if readiness else "/"
        timeout = readiness.timeout if readiness else 2.0
        url = f"http://{self.address.host}:{self.address.preview_port}{path}"
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            return PreviewCheck(ok=False, detail=f"GET {path} via preview: {type(exc).__name__}")
        detail = f"GET {path} via preview: {response.status_code} {response.reason_phrase}"
        return PreviewCheck(ok=200 <= response.status_code < 400, detail=detail)


def apply_control(
    store: Store, release: ReleaseRecord, action: str, actor: str, *, fence: Fence | None = None
) -> ReleaseRecord:
    """Promote [full], pause or resume ``release``: a status change with its ledger event.

    The driving server calls it under its driver's lock (fenced); a server standing by for
    the environment calls it directly (optimistic on ``status_version``, like a deploy), and
    the driving server's next tick acts on it."""
    status = release.status
    if action in ("promote", "promote_full"):
        changed = canary.promote(status, full=action == "promote_full")
    elif action == "pause":
        changed = canary.pause(status, actor)
    elif action == "resume":
        changed = canary.resume(status, actor)
    else:
        raise Conflict(f"unknown rollout control {action!r}")
    return store.update_release(
        release.id,
        status=changed,
        expected_version=release.status_version,
        actor=actor,
        events=[
            NewEvent(f"rollout.{action.replace('_full', '')}", {"full": action == "promote_full"})
        ],
        fence=fence,
    )


def _named(details: dict[str, Any], spec: RolloutSpec) -> dict[str, Any]:
    """Weights on the ledger name revisions beside the template keys they are keyed by, so
    ``{'t3fa2c1e9b0': 20}`` reads as r4 at 20%."""
    weights = details.get("weights")
    if not isinstance(weights, dict):
        return details
    names = {spec.version: spec.revision}
    if spec.stable_version is not None and spec.stable_revision is not None:
        names[spec.stable_version] = spec.stable_revision
    return {**details, "revisions": {key: names[key] for key in weights if key in names}}
