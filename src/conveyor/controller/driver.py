"""One driver per (service, environment): observe, decide, act, record — forever.

The driver is the imperative shell around ``core.rollout.decide``. Each tick it reads the
latest release from the store, builds observations from the runtime and the router, asks the
core for the next action, performs it, and only then commits the status and its ledger events
in one transaction. Because decisions are level-based, a driver that dies anywhere in this
sequence (SIGKILL included) is replaced by one that observes the world as it is and carries on.

Between rollouts the driver keeps the router's table in step with readiness, so an instance
that stops answering its probe stops receiving users even when nothing is being deployed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from conveyor.artifacts.store import ArtifactStore
from conveyor.config.analysis import AnalysisTemplateConfig
from conveyor.controller import specs
from conveyor.controller.analyses import ReleaseAnalyses
from conveyor.core import canary, rollout
from conveyor.core.model import HeaderRoute, InstanceObservation, RouteTable, VersionCounters
from conveyor.core.state import (
    Action,
    CheckPreview,
    Decision,
    Observations,
    Phase,
    PreviewCheck,
    RolloutSpec,
    RolloutStatus,
    RunAnalysis,
    SetWeights,
    StartInstances,
    StopInstances,
    Wait,
)
from conveyor.core.traffic import route_table, window
from conveyor.errors import Conflict
from conveyor.runtime.base import Target
from conveyor.store.records import AddressRecord, NewEvent, ReleaseRecord
from conveyor.store.repository import Store
from conveyor.traffic.base import TrafficRouter

log = logging.getLogger("conveyor.controller")

ACTOR = "conveyor"


class Driver:
    def __init__(
        self,
        *,
        project_name: str,
        service: str,
        env: str,
        address: AddressRecord,
        store: Store,
        artifacts: ArtifactStore,
        target: Target,
        router: TrafficRouter,
        clock: Callable[[], float],
        tick: float = 0.1,
        on_superseded: Callable[[ReleaseRecord], None] | None = None,
        templates: Callable[[], Mapping[str, AnalysisTemplateConfig]] = dict,
        workdir: Path | None = None,
        on_events: Callable[[ReleaseRecord, list[NewEvent]], None] | None = None,
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
        self.on_superseded = on_superseded
        self.on_events = on_events
        self.analyses = ReleaseAnalyses(
            service=service,
            env=env,
            router=router,
            templates=templates,
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
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("driver %s/%s: tick failed; retrying", self.service, self.env)
                await asyncio.sleep(1.0)
            await self._pause()

    async def _pause(self) -> None:
        """Sleep one tick or until woken. (Not `wait_for`: on 3.11 it can swallow a cancel.)"""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=self.tick)
        finally:
            waiter.cancel()
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def reroute(self) -> None:
        """An instance changed: fix the route table now (no store access), then tick."""
        if self._weights is not None:
            instances = self.target.observe(self.service, self.env)
            self._apply_table(self._weights, instances, self._preview_version)
        self._wake.set()

    async def step(self) -> None:
        async with self._lock:
            release = self._latest()
            if release is None:
                return
            if self.on_superseded is not None and self._superseded_checked != release.id:
                self.on_superseded(release)
                self._superseded_checked = release.id
            instances = self.target.observe(self.service, self.env)
            self._sync_routes(release, instances)
            if release.done:
                return
            spec = self._spec(release)
            status = RolloutStatus.from_json(release.status)
            self.analyses.load(release, spec)
            measured = await self.analyses.step()
            obs = self._observe(spec, status, instances)
            decision = rollout.decide(spec, status, obs, self.clock())
            await self._carry_out(release, spec, decision, measured=measured)

    async def abort(self, actor: str) -> ReleaseRecord:
        """Manual rollback of the release in progress (same path as an automatic one)."""
        async with self._lock:
            release = self._latest()
            if release is None or release.done or not Phase(release.phase).in_progress:
                raise Conflict(
                    f"no rollout of {self.service} in {self.env} is in progress",
                    hint="to return to an earlier release, use `--to REVISION`",
                )
            if release.phase == Phase.ROLLING_BACK:
                return release
            spec = self._spec(release)
            status = RolloutStatus.from_json(release.status)
            self.analyses.load(release, spec)
            instances = self.target.observe(self.service, self.env)
            obs = self._observe(spec, status, instances)
            decision = rollout.manual_abort(spec, status, obs, actor, self.clock())
            updated = await self._carry_out(release, spec, decision, actor=actor)
        self.wake()
        return updated

    async def control(self, action: str, actor: str) -> ReleaseRecord:
        """A human's hand on a rollout in progress: promote [full], pause, resume."""
        async with self._lock:
            release = self._latest()
            if release is None or not Phase(release.phase).in_progress:
                raise Conflict(
                    f"no rollout of {self.service} in {self.env} is in progress",
                    hint=f"see `conveyor status --env {self.env}`",
                )
            status = RolloutStatus.from_json(release.status)
            if action in ("promote", "promote_full"):
                changed = canary.promote(status, full=action == "promote_full")
            elif action == "pause":
                changed = canary.pause(status, actor)
            elif action == "resume":
                changed = canary.resume(status)
            else:
                raise Conflict(f"unknown rollout control {action!r}")
            updated = self.store.update_release(
                release.id,
                status={**release.status, **changed.to_json()},
                phase=release.phase,
                done=release.done,
                expected_version=release.status_version,
                actor=actor,
                events=[
                    NewEvent(
                        f"rollout.{action.replace('_full', '')}", {"full": action == "promote_full"}
                    )
                ],
            )
        self.wake()
        return updated

    # --- observing --------------------------------------------------------------------

    def _latest(self) -> ReleaseRecord | None:
        releases = self.store.releases(self.service, self.env, limit=1)
        return releases[0] if releases else None

    def _spec(self, release: ReleaseRecord) -> RolloutSpec:
        spec = RolloutSpec.from_json(release.spec["rollout"])
        return dataclasses.replace(spec, release_id=release.id, revision=release.revision)

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
        )

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
        status = RolloutStatus.from_json(release.status)
        spec = self._spec(release)
        preview = rollout.preview_version(spec, status)
        self._header_route = (
            HeaderRoute(status.header_route[0], status.header_route[1], spec.version)
            if status.header_route and Phase(release.phase).in_progress
            else None
        )
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
        )
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
        extra = await self._act(release, spec, decision.action, decision.status)
        events = [
            *(measured or []),
            *(NewEvent(e.kind, {**e.details, **extra.get(e.kind, {})}) for e in decision.events),
        ]
        if decision.status.phase.terminal:
            self.analyses.terminate()
        new_status = decision.status.to_json()
        if self.analyses.runs:
            new_status["analysis"] = self.analyses.to_json()
        if new_status == dict(release.status) and not events:
            return release
        updated = self.store.update_release(
            release.id,
            status=new_status,
            phase=decision.status.phase.value,
            done=decision.status.done,
            expected_version=release.status_version,
            actor=actor,
            events=events,
        )
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
            started = await self._start(source, action.count)
            return {"instances.started": {"instances": started, "revision": source.revision}}
        if isinstance(action, StopInstances):
            await self._stop(list(action.instance_ids), specs.drain_timeout(release))
            return {}
        if isinstance(action, RunAnalysis):
            self.analyses.start(release, spec, action.key, action.template)
            return {}
        if isinstance(action, CheckPreview):
            self._preview = await self._check_preview(release)
            return {}
        raise AssertionError(f"unknown action {action!r}")

    def _stable(self, release: ReleaseRecord) -> ReleaseRecord:
        if release.stable_release_id is None:
            raise AssertionError("asked to start the stable version of a first release")
        return self.store.get_release(release.stable_release_id)

    async def _start(self, source: ReleaseRecord, count: int) -> list[str]:
        artifact = self.store.get_artifact(source.artifact_digest)
        artifact_dir = await asyncio.to_thread(self.artifacts.unpack, source.artifact_digest)
        started = []
        for _ in range(count):
            spec = specs.instance_spec(self.project_name, source, artifact_dir, artifact.commit)
            await self.target.launch(spec)
            started.append(spec.instance_id)
        return started

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
        readiness = release.spec["instance"].get("readiness") or {}
        path = readiness.get("path", "/")
        timeout = float(readiness.get("timeout", 2.0))
        url = f"http://{self.address.host}:{self.address.preview_port}{path}"
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            return PreviewCheck(ok=False, detail=f"GET {path} via preview: {type(exc).__name__}")
        detail = f"GET {path} via preview: {response.status_code} {response.reason_phrase}"
        return PreviewCheck(ok=200 <= response.status_code < 400, detail=detail)
