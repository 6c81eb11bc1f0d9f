"""The application layer: the one way in for every state change, and the questions asked of it.

The HTTP API (``server/api.py``) is the only door to this layer from outside the server,
and every operation here takes the ``Caller`` it acts for, so authentication and
authorization sit in one place in front of everything (see SECURITY.md). Deploys,
rollbacks, retries and rollout controls, artifacts and their bytes, attestations,
pipeline events and key rotation all enter through ``Application``; nothing else in
Conveyor creates a release or appends to the ledger on a client's behalf.

Operations are grouped by what they touch (``releases``, ``artifacts``, ``pipelines``,
``ledger``);
``Application`` is the facade the API calls, so a newcomer reads one class to see every
verb Conveyor knows.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.application.access import Permission, Tokens, authorize
from conveyor.application.approval_page import approval_page
from conveyor.application.approvals import Approvals
from conveyor.application.artifacts import Artifacts, BlobReceived, Recorded
from conveyor.application.audit import AUDITED, export
from conveyor.application.audit import FORMATS as AUDIT_FORMATS
from conveyor.application.caller import Caller
from conveyor.application.dashboard import (
    PIPELINE_WINDOW,
    Overview,
    PipelineRun,
    Rollout,
    allowed_controls,
    may,
    overview,
    pipeline_runs,
    rollout,
)
from conveyor.application.evidence import find_release, release_evidence
from conveyor.application.flag_rollouts import FlagRollouts
from conveyor.application.flags import Flags
from conveyor.application.insight import Insight, WebhookResult
from conveyor.application.ledger import CheckpointPolicy, Ledger, LedgerReport
from conveyor.application.markers import release_metrics
from conveyor.application.migrations import Migrations
from conveyor.application.notary import KeyringNotary, Notary
from conveyor.application.pipelines import Pipelines
from conveyor.application.policy import Policy, PolicySource, diff
from conveyor.application.project import ConfigState, ProjectSource
from conveyor.application.queries import StatusRow, status_rows
from conveyor.application.releases import Releases
from conveyor.application.slos import SloMonitor, SloState
from conveyor.application.traffic_history import TrafficHistory
from conveyor.application.windows import WindowRow, window_rows, windows_json
from conveyor.artifacts.signing import KeyInfo, Keyring
from conveyor.artifacts.store import ArtifactStore
from conveyor.controller.controller import Controller
from conveyor.controller.driver import apply_control
from conveyor.core.dora import Report, Week
from conveyor.core.state import Phase
from conveyor.errors import ConfigError, Conflict, UsageError
from conveyor.layout import Layout
from conveyor.runtime.local.logs import log_files, tail
from conveyor.store.insight_repo import IncidentRecord, NewIncident
from conveyor.store.records import (
    ArtifactRecord,
    EventRecord,
    GridRow,
    NewEvent,
    ReleaseRecord,
)
from conveyor.store.repository import Store

GRID_TTL = 5.0
"""Seconds the overview's store read is reused while the ledger does not move."""
TRENDS_TTL = 10.0
"""Seconds the Insight page reuses a DORA computation (at 500 services it takes ~1 s)."""
CONTROLS = ("promote", "promote_full", "pause", "resume", "abort", "retry")

__all__ = ["CONTROLS", "Application", "BlobReceived", "Caller", "ConfigState", "Recorded"]


@dataclass
class Application:
    project: ProjectSource
    store: Store
    artifact_store: ArtifactStore
    keyring: Keyring
    layout: Layout
    controller: Controller
    clock: Callable[[], float]
    notary: Notary | None = None  # who signs ledger checkpoints; the keyring's key by default
    checkpoints: CheckpointPolicy = field(default_factory=CheckpointPolicy)

    def __post_init__(self) -> None:
        self.policy = PolicySource(self.store, self.clock)
        self.migrations = Migrations(self.store, self.artifact_store, self.clock)
        self.releases = Releases(
            self.project,
            self.store,
            self.artifact_store,
            self.keyring,
            self._ready,
            announce=self.controller.notifications.send,
            clock=self.clock,
            migrations=self.migrations,
        )
        self.approvals = Approvals(self.store, self.policy.current, self.clock)
        self.artifacts = Artifacts(
            self.project, self.store, self.artifact_store, self.keyring, self.layout, self.clock
        )
        self.pipelines = Pipelines(self.store, self.artifact_store, self.keyring, self.clock)
        self.tokens = Tokens(self.store, self.clock)
        self.insight = Insight(self.store, self.clock)
        self.slos = SloMonitor(self.project, self.store, self.controller, self.clock)
        self.releases.frozen = self._frozen
        self.flags = Flags(self.project, self.store, self.policy.current, self.clock)
        self.flag_rollouts = FlagRollouts(
            self.flags, self.project, self.store, self.policy.current, self.clock
        )
        notary = self.notary or KeyringNotary(self.keyring)
        self.ledger = Ledger(self.store, notary, self.clock, policy=self.checkpoints)
        self.store.on_append(self.ledger.observe)
        self.traffic = TrafficHistory(self.controller.traffic, self.clock)
        self._grid_lock = threading.Lock()
        self._grid_cache: tuple[int, float, list[GridRow], list[GridRow]] | None = None
        self.trends_ttl = TRENDS_TTL
        self._trends: dict[tuple[int, str, str | None], tuple[float, Report, tuple[Week, ...]]]
        self._trends = {}

    # --- releases -----------------------------------------------------------------------

    async def deploy(
        self,
        caller: Caller,
        service: str,
        env: str,
        artifact: str,
        overrides: Mapping[str, str] | None = None,
        *,
        emergency: str | None = None,
        fix: str | None = None,
    ) -> ReleaseRecord:
        self._authorize(caller, Permission.DEPLOY, env)
        if emergency is not None:
            self._authorize(caller, Permission.EMERGENCY, env)
            if not emergency.strip():
                raise UsageError(
                    "the emergency path needs a reason", hint='--emergency --reason "..."'
                )
        if fix is not None and not fix.strip():
            raise UsageError("a fix says what it repairs", hint='--fix "checkout 500s (r7)"')
        release = self.releases.deploy(
            caller, service, env, artifact, overrides=overrides, emergency=emergency, fix=fix
        )
        await self.controller.wake(service, env)
        return release

    async def rollback(
        self, caller: Caller, service: str, env: str, to: int | None
    ) -> ReleaseRecord:
        """Abort the rollout in progress, or return to an earlier release (`to`, or the one
        before the current)."""
        self._authorize(caller, Permission.DEPLOY, env)
        self._check_known(service, env)
        active = self.store.active_release(service, env)
        if to is None and active is not None and active.phase == Phase.PENDING_APPROVAL:
            # Nothing started: withdrawing the request is the whole of the way back.
            self.releases.cancel(caller, active, f"withdrawn by {caller.actor}")
            return self.store.get_release(active.id)
        if to is None and active is not None and active.phase.in_progress:
            driver = await self.controller.wake(service, env)
            if driver is None:
                return self._rollback_elsewhere(caller, active)
            return await driver.abort(caller.actor)
        release = self.releases.rollback(caller, service, env, to)
        await self.controller.wake(service, env)
        return release

    async def control(self, caller: Caller, service: str, env: str, action: str) -> ReleaseRecord:
        """A human's hand on a rollout; answers with the release as it stands afterwards."""
        self._authorize(caller, Permission.DEPLOY, env)
        if action not in CONTROLS:
            raise UsageError(f"unknown action {action!r}", hint=f"one of: {', '.join(CONTROLS)}")
        self._check_known(service, env)
        if action == "retry":
            release = self.releases.retry(caller, service, env)
            await self.controller.wake(service, env)
            return release
        driver = await self.controller.wake(service, env)
        if driver is None and action == "abort":
            active = self.store.active_release(service, env)
            if active is None or not active.phase.in_progress:
                raise Conflict(
                    f"no rollout of {service} in {env} is in progress",
                    hint="to return to an earlier release, use `--to REVISION`",
                )
            return self._rollback_elsewhere(caller, active)
        if action == "abort":
            assert driver is not None
            return await driver.abort(caller.actor)
        if driver is None:
            # Another server drives this environment: the change goes through the store,
            # and that server's next tick acts on it.
            return self._control_elsewhere(caller, service, env, action)
        changed = await driver.control(action, caller.actor)
        # One tick now, so the answer shows what the action did (the next step, a lifted
        # hold), not the state it was taken in.
        await driver.step()
        return self.store.get_release(changed.id)

    def _rollback_elsewhere(self, caller: Caller, active: ReleaseRecord) -> ReleaseRecord:
        """Another server drives the environment: ask it through the store. Its next tick
        rolls back exactly as a rollback sent to it would (``core.rollout.decide``)."""
        if active.phase == Phase.ROLLING_BACK:
            return active
        return self.store.update_release(
            active.id,
            status=active.status.evolve(rollback_requested=caller.actor),
            expected_version=active.status_version,
            actor=caller.actor,
            events=[NewEvent("rollback.requested", {"by": caller.actor})],
        )

    def _control_elsewhere(
        self, caller: Caller, service: str, env: str, action: str
    ) -> ReleaseRecord:
        release = self.store.active_release(service, env)
        if release is None or not release.phase.in_progress:
            raise Conflict(
                f"no rollout of {service} in {env} is in progress",
                hint=f"see `conveyor status --env {env}`",
            )
        return apply_control(self.store, release, action, caller.actor)

    def migration_status(self, caller: Caller, service: str, env: str) -> dict[str, Any]:
        """What ``env``'s schema holds for ``service`` and which rollbacks stay safe."""
        self._authorize(caller, Permission.READ)
        self._check_known(service, env)
        return self.migrations.status(service, env)

    async def undo_migration(
        self, caller: Caller, service: str, env: str, migration: str, reason: str
    ) -> dict[str, Any]:
        """Run an expand's undo on purpose (``conveyor migrate undo``). Admins only: it can
        drop what the expand added, data included, and no approval stands in front of it."""
        self._authorize(caller, Permission.ADMIN)
        self._check_known(service, env)
        return await self.migrations.undo(caller, service, env, migration, reason)

    # --- artifacts and pipelines ----------------------------------------------------------

    async def receive_blob(
        self, caller: Caller, digest: str, chunks: AsyncIterator[bytes], *, limit: int
    ) -> BlobReceived:
        self._authorize(caller, Permission.PUBLISH)
        return await self.artifacts.receive_blob(caller, digest, chunks, limit=limit)

    def record_artifact(
        self, caller: Caller, service: str, digest: str, build: Mapping[str, Any]
    ) -> Recorded:
        self._authorize(caller, Permission.PUBLISH)
        return self.artifacts.record(caller, service, digest, build)

    def attest(
        self, caller: Caller, service: str, digest: str, run: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._authorize(caller, Permission.PUBLISH)
        return self.pipelines.attest(caller, service, digest, run)

    def pipeline_event(
        self, caller: Caller, kind: str, details: Mapping[str, Any], service: str | None
    ) -> EventRecord:
        self._authorize(caller, Permission.PUBLISH)
        return self.pipelines.event(caller, kind, details, service)

    def rotate_keys(self, caller: Caller) -> tuple[KeyInfo, KeyInfo | None]:
        self._authorize(caller, Permission.ADMIN)
        current, previous = self.keyring.rotate()
        self.store.append_events(
            [
                NewEvent(
                    "keys.rotated",
                    {
                        "key": current.fingerprint,
                        "previous": previous.fingerprint if previous else None,
                    },
                )
            ],
            actor=caller.actor,
        )
        return current, previous

    # --- people ---------------------------------------------------------------------------

    def pending_approvals(self, caller: Caller) -> list[tuple[ReleaseRecord, dict[str, Any]]]:
        return [(r, self.approvals.state(r)) for r in self.approvals.pending(caller)]

    def approval_page(self, caller: Caller, release_id: int) -> dict[str, Any]:
        """Everything a reviewer needs about one release, on one page (``approval_page``)."""
        self._authorize(caller, Permission.READ)
        release = self.store.get_release(release_id)
        try:
            project: Any = self.project.current()
        except ConfigError as error:
            project = error
        return approval_page(
            release,
            approval=self.approvals.state(release),
            store=self.store,
            artifacts=self.artifact_store,
            keyring=self.keyring,
            project=project,
            root=self.layout.root,
        )

    async def vote(
        self,
        caller: Caller,
        release_id: int,
        *,
        approve: bool,
        comment: str = "",
        content: str | None = None,
        page_hash: str | None = None,
    ) -> ReleaseRecord:
        release = self.approvals.vote(
            caller,
            release_id,
            approve=approve,
            comment=comment,
            content=content,
            page_hash=page_hash,
        )
        driver = await self.controller.wake(release.service, release.env)
        if driver is not None:  # the answer shows what the vote did (started, or waiting)
            await driver.step()
        return self.store.get_release(release.id)

    def review(self, caller: Caller, release_id: int, comment: str) -> ReleaseRecord:
        return self.approvals.review(caller, release_id, comment)

    def access(self, caller: Caller) -> dict[str, Any]:
        """The policy in force, and the file's ``access:`` if it differs (not yet applied)."""
        self._authorize(caller, Permission.READ)
        applied = self.policy.current()
        proposed = self._proposed_policy()
        return {
            "applied": applied.to_json() if applied.version else None,
            "version": applied.version,
            "file": proposed.to_json() if proposed is not None else None,
            "pending": proposed is not None
            and proposed.to_json() != (applied.to_json() if applied.version else None),
            "changes": diff(applied, proposed or Policy()) if proposed is not None else None,
        }

    def apply_access(self, caller: Caller) -> dict[str, Any]:
        """Put the file's ``access:`` in force (admins only), on the ledger with the change."""
        self._authorize(caller, Permission.ADMIN)
        proposed = self._proposed_policy()  # None: no access: block, tokens alone decide
        applied = self.policy.current()
        [event] = self.store.append_events(
            [
                NewEvent(
                    "access.applied",
                    {
                        "policy": proposed.to_json() if proposed is not None else None,
                        "previous": applied.version,
                        **diff(applied, proposed or Policy()),
                    },
                )
            ],
            actor=caller.actor,
        )
        self.policy.forget()
        return {"version": event.seq, **diff(applied, proposed or Policy())}

    async def audit(self, caller: Caller, *, since: float, until: float, fmt: str) -> Iterator[str]:
        """The audit export of a period (``application/audit.py``), verification included."""
        self._authorize(caller, Permission.READ)
        if fmt not in AUDIT_FORMATS:
            raise UsageError(f"unknown format {fmt!r}", hint="jsonl or csv")
        events = self.store.events(kinds=AUDITED, since=since, until=until, limit=1_000_000)
        check = await asyncio.to_thread(self.ledger.verify, full=True)
        return export(events, check, since=since, until=until, fmt=fmt)

    def _proposed_policy(self) -> Policy | None:
        access = self.project.current().config.access
        if access is None:
            return None
        return Policy.from_json(access.model_dump(mode="json"))

    # --- questions ------------------------------------------------------------------------

    def status(self, caller: Caller, env: str | None) -> list[StatusRow]:
        self._authorize(caller, Permission.READ)
        if env is not None:
            self._check_known(None, env)
        return status_rows(
            self.store, self.controller, env, open_reviews=self.approvals.open_reviews(env=env)
        )

    def windows(
        self, caller: Caller, env: str | None, service: str | None
    ) -> tuple[list[WindowRow], list[dict[str, Any]]]:
        """Whether deploys may start now, per environment (and service where they differ),
        with the next changes; and the windows that apply, as declared. Read from
        conveyor.yaml as it is now: a broken file is a ``ConfigError``, as for a deploy."""
        self._authorize(caller, Permission.READ)
        self._check_known(service, env)
        config = self.project.current().config
        rows = window_rows(config, now=self.clock(), env=env, service=service)
        return rows, windows_json(config, env=env, service=service)

    def config_state(self, caller: Caller) -> ConfigState:
        self._authorize(caller, Permission.READ)
        return self.project.state()

    def release(self, caller: Caller, release_id: int) -> ReleaseRecord:
        self._authorize(caller, Permission.READ)
        return self.store.get_release(release_id)

    def history(self, caller: Caller, service: str, env: str, limit: int) -> list[ReleaseRecord]:
        self._authorize(caller, Permission.READ)
        self._check_known(service, env)
        return self.store.releases(service, env, limit)

    def events(
        self,
        caller: Caller,
        *,
        release_id: int | None,
        service: str | None,
        env: str | None,
        after: int,
        limit: int,
    ) -> list[EventRecord]:
        self._authorize(caller, Permission.READ)
        return self.store.events(
            release_id=release_id, service=service, env=env, after_seq=after, limit=limit
        )

    def list_artifacts(
        self, caller: Caller, service: str | None, limit: int
    ) -> list[ArtifactRecord]:
        self._authorize(caller, Permission.READ)
        if service is not None:
            self._check_known(service, None)
        return self.artifacts.list(service, limit)

    def artifact(self, caller: Caller, ref: str) -> ArtifactRecord:
        self._authorize(caller, Permission.READ)
        return self.artifacts.get(ref)

    def evidence(self, caller: Caller, reference: str) -> dict[str, Any]:
        self._authorize(caller, Permission.READ)
        release = find_release(self.store, reference)
        try:
            project: Any = self.project.current()
        except ConfigError as error:
            project = error
        return release_evidence(project, self.store, self.artifact_store, self.keyring, release)

    async def verify_ledger(self, caller: Caller, full: bool) -> LedgerReport:
        """The chain checked from the newest signed checkpoint, or from genesis (``full``);
        off the event loop, as a full pass over a long ledger takes seconds."""
        self._authorize(caller, Permission.READ)
        return await asyncio.to_thread(self.ledger.report, full=full)

    def leases(self, caller: Caller) -> dict[str, Any]:
        """Which server drives each environment (its lease and fencing epoch), and which
        server answered: any server answers, only the lease holder drives."""
        self._authorize(caller, Permission.READ)
        leadership = self.controller.leadership
        me = None if leadership is None else leadership.holder
        now = self.store.lease_clock()
        return {
            "server": me,
            "leases": [
                {
                    "env": lease.env,
                    "holder": lease.holder,
                    "epoch": lease.epoch,
                    "expires_in": round(lease.expires_at - now, 3),
                    "live": lease.live(now),
                    "this_server": lease.holder == me,
                }
                for lease in self.store.leases()
            ],
        }

    def keys(self, caller: Caller) -> tuple[KeyInfo, list[KeyInfo]]:
        self._authorize(caller, Permission.READ)
        return self.keyring.current(), self.keyring.trusted_infos()

    def logs(self, caller: Caller, service: str, env: str, lines: int) -> dict[str, list[str]]:
        self._authorize(caller, Permission.READ)
        self._check_known(service, env)
        files = log_files(self.layout.instance_logs, service, env)
        return {f.stem: tail(f, lines) for f in files}

    # --- delivery insight -------------------------------------------------------------------

    def dora(
        self, caller: Caller, *, since: float, until: float, env: str | None, service: str | None
    ) -> Report:
        """DORA's five keys of a period, per service and in total (``core/dora.py``)."""
        self._authorize(caller, Permission.READ)
        self._check_known(service, env)
        return self.insight.dora(since=since, until=until, env=env, service=service)

    def dora_trends(
        self, caller: Caller, *, days: int, env: str, service: str | None
    ) -> tuple[Report, tuple[Week, ...]]:
        """``dora`` over the last ``days`` and its total per week (the dashboard's Insight
        page). Pages and their streams asking the same question within ``trends_ttl``
        seconds share one computation: at 500 services it costs about what the API's does
        (bench/dashboard_insight.py), and every open page re-asks it."""
        self._authorize(caller, Permission.READ)
        self._check_known(service, env)
        key = (days, env, service)
        now = self.clock()
        with self._grid_lock:
            cached = self._trends.get(key)
        if cached is not None and now - cached[0] < self.trends_ttl:
            return cached[1], cached[2]
        report, weeks = self.insight.trends(
            since=now - days * 86400, until=now, env=env, service=service
        )
        with self._grid_lock:
            if len(self._trends) > 64:  # a bounded cache: forget everything, rarely
                self._trends.clear()
            self._trends[key] = (now, report, weeks)
        return report, weeks

    def incidents(
        self, caller: Caller, *, open_only: bool, service: str | None, env: str | None, limit: int
    ) -> list[IncidentRecord]:
        self._authorize(caller, Permission.READ)
        return self.store.incidents(open_only=open_only, service=service, env=env, limit=limit)

    def open_incident(self, caller: Caller, new: NewIncident) -> IncidentRecord:
        """A person's incident: linked to the release running in its environment now."""
        self._authorize(caller, Permission.DEPLOY, new.env)
        self._check_known(new.service, new.env)
        return self.insight.open(caller, new)

    def resolve_incident(self, caller: Caller, incident_id: int, note: str) -> IncidentRecord:
        incident = self.store.get_incident(incident_id)
        self._authorize(caller, Permission.DEPLOY, incident.env)
        return self.insight.resolve(caller, incident_id, note=note)

    def alertmanager(self, caller: Caller, body: Mapping[str, Any]) -> WebhookResult:
        """Alertmanager's notification: firing alerts open incidents, resolved ones close
        them. The token must be allowed to deploy where the alerts say they are."""
        alerts = body.get("alerts")
        for alert in alerts if isinstance(alerts, list) else []:
            labels = alert.get("labels") if isinstance(alert, dict) else None
            env = (
                (labels.get("env") or labels.get("environment"))
                if isinstance(labels, dict)
                else None
            )
            self._authorize(caller, Permission.DEPLOY, env if isinstance(env, str) else None)
        return self.insight.alertmanager(caller, body)

    def slo_status(self, caller: Caller, service: str | None, env: str | None) -> list[SloState]:
        """Each SLO's budget and burn rates as the server last judged them."""
        self._authorize(caller, Permission.READ)
        self._check_known(service, env)
        return self.slos.status(service, env)

    def metrics(self, caller: Caller) -> str:
        """The routers' per-version counters and the deployment markers (``markers.py``)."""
        self._authorize(caller, Permission.READ)
        markers = release_metrics(self.store.release_markers())
        return self.controller.prometheus_text() + markers

    # --- the dashboard's questions (application/dashboard.py) ------------------------------

    def overview(self, caller: Caller) -> Overview:
        """Services x environments in two queries, however many there are."""
        self._authorize(caller, Permission.READ)
        project = self.project.last_good()
        services = list(project.config.services) if project is not None else []
        envs = list(project.config.environments) if project is not None else []
        latest, current = self._grid()
        return overview(
            latest,
            current,
            services=services,
            envs=envs,
            ready=self._ready,
            now=self.clock(),
        )

    def _grid(self) -> tuple[list[GridRow], list[GridRow]]:
        """The grid's rows, read again when the ledger moved or after ``GRID_TTL`` seconds:
        every open overview shares one read (releases change with ledger events)."""
        head, _ = self.store.ledger_head()
        with self._grid_lock:
            cached = self._grid_cache
            if cached is not None and cached[0] == head and self.clock() - cached[1] < GRID_TTL:
                return cached[2], cached[3]
        latest, current = self.store.grid(), self.store.grid(succeeded_only=True)
        with self._grid_lock:
            self._grid_cache = (head, self.clock(), latest, current)
        return latest, current

    def rollout(
        self, caller: Caller, service: str, env: str
    ) -> tuple[Rollout | None, list[ReleaseRecord]]:
        """The newest release of (service, env) as the service page shows it, the buttons
        ``caller`` may press, and the releases before it."""
        self._authorize(caller, Permission.READ)
        self._check_known(service, env)
        history = self.store.releases(service, env, 20)
        if not history:
            return None, []
        latest = history[0]
        revisions = {r.template: r.revision for r in reversed(history)}
        view = rollout(
            latest,
            self.controller.observe(service, env),
            revisions=revisions,
            controls=allowed_controls(caller, latest, self.policy.current()),
        )
        return view, history

    def may(self, caller: Caller, permission: Permission, env: str | None = None) -> bool:
        """Whether a button for ``permission`` is worth showing to ``caller``."""
        return may(caller, permission, env, self.policy.current())

    def pipeline_runs(self, caller: Caller) -> list[PipelineRun]:
        self._authorize(caller, Permission.READ)
        head, _ = self.store.ledger_head()
        events = self.store.events(
            kinds=("pipeline.started", "pipeline.finished"),
            after_seq=max(0, head - PIPELINE_WINDOW),
            limit=PIPELINE_WINDOW,
        )
        project = self.project.last_good()
        needs: dict[str, list[str]] = {}
        pipeline = project.config.pipeline if project is not None else None
        if pipeline is not None:
            needs = {name: list(job.needs or []) for name, job in pipeline.jobs.items() if job}
        return pipeline_runs(events, needs)

    # --- internals --------------------------------------------------------------------

    def _authorize(self, caller: Caller, permission: Permission, env: str | None = None) -> None:
        authorize(caller, permission, env, self.policy.current())

    def _frozen(self, service: str, env: str) -> SloState | None:
        """The SLO whose spent budget freezes releases of ``service`` in ``env``, if any."""
        project = self.project.last_good()
        if project is None or env not in project.config.environments:
            return None
        if project.config.environments[env].when_budget_exhausted != "freeze":
            return None
        return self.slos.exhausted(service, env)

    def _ready(self, service: str, env: str, template: str) -> int:
        instances = self.controller.observe(service, env)
        return sum(1 for i in instances if i.ready and i.version == template)

    def _check_known(self, service: str | None, env: str | None) -> None:
        """Unknown names are errors with suggestions, not empty answers.

        Names are checked against the config when it can be read, and against what the
        store knows otherwise: a broken conveyor.yaml must not lock anyone out of a
        rollback.
        """
        project = self.project.last_good()
        if project is not None:
            known_services = set(project.config.services)
            known_envs = set(project.config.environments)
        else:
            known_services, known_envs = set(), set()
        for service_name, env_name in self.store.service_envs():
            known_services.add(service_name)
            known_envs.add(env_name)
        if project is not None and service is not None and service not in known_services:
            project.config.service(service)
        if project is not None and env is not None and env not in known_envs:
            project.config.environment(env)
