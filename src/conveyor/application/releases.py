"""Creating releases: deploys, rollbacks and retries, checked before anything runs.

This is the only way a release enters the store. A deploy reads conveyor.yaml as it is now
(``ProjectSource``: an edited file applies to the next deploy without a restart; a broken
one refuses it), verifies the artifact's digest and signed provenance for this service (a
refusal goes on the ledger), applies the admission rules from ``core.admission`` (including
the environment's promotion ``requires:``, whose refusal goes on the ledger as
``release.refused``), freezes everything the release will run and be judged by into its
plan (``plans.py``) and writes the release with its ``release.created`` event in one
transaction. The controller picks it up from there.

Rollbacks and retries never read the file: they re-run the frozen plan of the release they
return to, so the way back stays open while conveyor.yaml is broken or has moved on. Deploy
windows (``windows.py``) hold back deploys and retries of deploys, never a rollback.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from conveyor.application.approval_page import commit_authors
from conveyor.application.caller import Caller
from conveyor.application.migrations import Migrations
from conveyor.application.plans import check_run_as, release_plan
from conveyor.application.project import ProjectSource
from conveyor.application.promotion import artifact_facts, requirements_of
from conveyor.application.slos import SloState
from conveyor.application.windows import check_deploy, closed_now, refuse
from conveyor.artifacts.attestations import verified_runs
from conveyor.artifacts.signing import Keyring, verify_signed
from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import LoadedProject
from conveyor.core.admission import (
    Candidate,
    Current,
    Requirements,
    admit,
    unmet_requirements,
)
from conveyor.core.plan import ReleasePlan, StableRef
from conveyor.core.release import merge_config, refused_overrides, validate_overrides
from conveyor.core.state import Phase, RolloutStatus
from conveyor.errors import Conflict, NotFound, Refused
from conveyor.run_as import current
from conveyor.store.records import ArtifactRecord, NewEvent, NewRelease, ReleaseRecord
from conveyor.store.repository import Store

HISTORY = 200
"""Releases per environment searched for a rollback target."""


ReadyCount = Callable[[str, str, str], int]
"""Instances of (service, env) with a template key that are ready now."""


@dataclass
class Releases:
    project: ProjectSource
    store: Store
    artifacts: ArtifactStore
    keyring: Keyring
    ready: ReadyCount
    announce: Callable[[ReleaseRecord, list[NewEvent]], None] | None = None
    """Tells people (the release's notifiers) what waits for them or what was overridden."""
    clock: Callable[[], float] = time.time  # deploy windows are judged at this time
    migrations: Migrations | None = None
    """Schema migrations: frozen into plans, contracts and rollbacks checked (migrations.py)."""
    frozen: Callable[[str, str], SloState | None] | None = None
    """The SLO whose spent error budget freezes (service, env), when the environment says
    ``when_budget_exhausted: freeze`` (``slos.py``)."""

    def deploy(
        self,
        caller: Caller,
        service: str,
        env: str,
        artifact: str,
        *,
        overrides: Mapping[str, str] | None = None,
        emergency: str | None = None,
        fix: str | None = None,
    ) -> ReleaseRecord:
        """A new release of ``artifact`` with the environment's config (and ``overrides``).

        ``fix`` (what it repairs) marks a roll-forward that repairs a failed release: DORA
        counts it as rework and the release it replaces as failed (``core/dora.py``).

        ``emergency`` (the reason, from a caller with the emergency role) skips the
        environment's approval and its deploy windows (a window it overrode is named in the
        ``emergency.override`` event); never the artifact's verification, never the rollback
        triggers. It is recorded, notified, and leaves a review open.
        """
        overrides = validate_overrides(overrides or {})
        project = self.project.current()
        project.config.service(service)  # unknown names fail here, with suggestions
        project.config.environment(env)
        self._check_overrides(project, caller, service, env, overrides)
        record = self.store.get_artifact(artifact)
        self._check_artifact(caller, service, env, record)
        self._check_requirements(project, caller, service, env, record)
        if fix is None and emergency is None:
            self._check_budget(caller, service, env, record.digest, "deploy")
        closed = closed_now(project.config, service=service, env=env, now=self.clock())
        if closed is not None and emergency is None:
            refuse(self.store, caller, closed, service=service, env=env, artifact=record.digest)
        stable = self.store.current_release(service, env)
        secrets = project.config.effective_secrets(service, env)
        plan = release_plan(
            project,
            service=service,
            env=env,
            artifact=record.digest,
            commit=record.commit,
            config=merge_config(project.config.effective_config(service, env), overrides),
            # a value set for this release replaces the file's secret reference for the key
            secrets={k: ref for k, ref in secrets.items() if k not in overrides},
            stable=_stable_ref(stable),
            authors=commit_authors(
                project.root, stable.plan.commit if stable else None, record.commit
            ),
        )
        check_run_as(project, service, plan.instance.run_as, current())
        if self.migrations is not None:
            plan = self.migrations.frozen(project, plan)
            self.migrations.check(caller, plan, stable)
        if emergency is not None:
            plan = plan.evolve(approval=None)
        return self._create(
            caller,
            plan,
            record,
            stable,
            reason=_deploy_reason(emergency, fix),
            overrides=sorted(overrides),
            emergency=emergency,
            fix=fix,
            window_overridden=closed.details if closed is not None else None,
        )

    def rollback(self, caller: Caller, service: str, env: str, to: int | None) -> ReleaseRecord:
        """Redeploy an earlier release's frozen plan (never a rebuild, never today's file)."""
        target = self.rollback_target(service, env, to)
        if self.migrations is not None:
            self.migrations.check_rollback(caller, target)
        stable = self.store.current_release(service, env)
        record = self.store.get_artifact(target.artifact_digest)
        # The exit must always be open, even to a build that would not be admitted today
        # (one that predates a gate): requirements are not checked. Integrity still is.
        self._check_artifact(caller, service, env, record)
        plan = target.plan.returning(_stable_ref(stable))
        return self._create(
            caller,
            plan,
            record,
            stable,
            reason=f"rollback to r{target.revision}",
            rollback_of=target.revision,
        )

    def retry(self, caller: Caller, service: str, env: str) -> ReleaseRecord:
        """Run the last aborted release again: its frozen plan, from the first step."""
        latest = self.store.releases(service, env, limit=1)
        if not latest or latest[0].phase not in (Phase.ROLLED_BACK, Phase.FAILED):
            raise Conflict(
                f"the latest release of {service} in {env} was not aborted; nothing to retry",
                hint=f"see `conveyor history {service} --env {env}`",
            )
        failed = latest[0]
        stable = self.store.current_release(service, env)
        record = self.store.get_artifact(failed.artifact_digest)
        self._check_artifact(caller, service, env, record)
        project = self.project.last_good()
        if failed.rollback_of is None and not failed.reason_is_fix:
            self._check_budget(caller, service, env, record.digest, f"retry of r{failed.revision}")
        if failed.rollback_of is None and project is not None:
            # A deploy tried again ships its new version again: the windows apply. A rollback
            # tried again is the way back: they never do. Read from the last good file, so a
            # broken one does not stop a retry (which never reads the file otherwise).
            check_deploy(
                self.store,
                caller,
                project.config,
                service=service,
                env=env,
                now=self.clock(),
                artifact=record.digest,
                asked=f"retry of r{failed.revision}",
            )
        plan = failed.plan.evolve(stable=_stable_ref(stable))
        if self.migrations is not None:
            self.migrations.check(caller, plan, stable)
        return self._create(caller, plan, record, stable, reason=f"retry of r{failed.revision}")

    def rollback_target(self, service: str, env: str, to: int | None) -> ReleaseRecord:
        """The release a manual rollback returns to: `--to N`, or the one before the current."""
        if to is not None:
            target = self.store.release_by_revision(service, env, to)
            if target.phase != Phase.SUCCEEDED:
                raise NotFound(
                    f"r{to} of {service} in {env} never succeeded ({target.phase}); "
                    "only a release that once ran well is a safe place to return to",
                    hint=f"pick one from `conveyor history {service} --env {env}`",
                )
            return target
        current = self.store.current_release(service, env)
        if current is None:
            raise NotFound(
                f"{service} has no successful release in {env} to roll back from",
                hint=f"deploy first: `conveyor deploy {service} --env {env} --build`",
            )
        for release in self.store.releases(service, env, limit=HISTORY):
            if (
                release.revision < current.revision
                and release.phase == Phase.SUCCEEDED
                and release.template != current.template
            ):
                return release
        raise NotFound(
            f"there is no earlier successful release of {service} in {env} to return to",
            hint=f"see `conveyor history {service} --env {env}`",
        )

    # --- internals --------------------------------------------------------------------

    def _create(
        self,
        caller: Caller,
        plan: ReleasePlan,
        record: ArtifactRecord,
        stable: ReleaseRecord | None,
        *,
        reason: str,
        rollback_of: int | None = None,
        overrides: list[str] | None = None,
        emergency: str | None = None,
        window_overridden: Mapping[str, object] | None = None,
        fix: str | None = None,
    ) -> ReleaseRecord:
        service, env = plan.service, plan.env
        active = self.store.active_release(service, env)
        waiting = active if active is not None and active.phase == Phase.PENDING_APPROVAL else None
        if waiting is not None:
            active = None  # a release waiting for people is replaced, not waited for
        current = _current(stable)
        if current is not None and stable is not None:
            current = dataclasses.replace(current, ready=self.ready(service, env, stable.template))
        admission = admit(
            Candidate(service, env, plan.version, plan.desired, record.services),
            active=_current(active),
            stable=current,
            stable_artifact_present=stable is None or self.artifacts.exists(stable.artifact_digest),
        )
        if admission == "restore":
            assert stable is not None
            self.store.append_events(
                [
                    NewEvent(
                        "release.restoring",
                        {
                            "revision": stable.revision,
                            "ready": current.ready if current else None,
                            "desired": stable.instances,
                            "asked": reason,
                        },
                        service=service,
                        env=env,
                        release_id=stable.id,
                    )
                ],
                actor=caller.actor,
            )
            return stable
        if waiting is not None:
            self.cancel(caller, waiting, f"replaced by a newer {reason}")
        previous = self.store.releases(service, env, limit=1)
        # Users stay exactly where the previous release left them until the rollout moves them.
        weights = dict(previous[0].status.weights) if previous else {}
        phase = Phase.PENDING_APPROVAL if plan.approval is not None else Phase.PENDING
        extra: list[NewEvent] = []
        if plan.approval is not None:
            extra.append(
                NewEvent(
                    "approval.requested",
                    {
                        "required": plan.approval.required,
                        "from": list(plan.approval.reviewers),
                        "content": plan.content_hash,
                        "expires_in": plan.approval.expires,
                    },
                )
            )
        if emergency is not None:
            skipped = {"window": dict(window_overridden)} if window_overridden else {}
            extra.append(NewEvent("emergency.override", {"reason": emergency, **skipped}))
        created = self.store.create_release(
            NewRelease(
                plan=plan,
                status=RolloutStatus(
                    phase=phase,
                    weights=weights,
                    message=_waiting_text(plan)
                    if plan.approval is not None
                    else "waiting to start",
                ),
                reason=reason,
                rollback_of=rollback_of,
            ),
            actor=caller.actor,
            events=[
                NewEvent(
                    "release.created",
                    {
                        "artifact": record.digest,
                        "commit": record.commit,
                        "branch": record.branch,
                        "config_version": plan.config_version,
                        "config_changes": _diff(
                            stable.plan.config_shown() if stable else {}, plan.config_shown()
                        ),
                        "secrets": {k: ref.to_json() for k, ref in sorted(plan.secrets.items())},
                        "overrides": overrides or [],
                        "strategy": plan.strategy.to_json(),
                        "instances": plan.desired,
                        "exit": {
                            "stable_revision": stable.revision if stable else None,
                            "stable_artifact": stable.artifact_digest if stable else None,
                        },
                        "reason": reason,
                        "rollback_of": rollback_of,
                        "run": _command_text(plan.instance.command),
                        "analysis": sorted(plan.analysis),
                        "notify": [n.webhook for n in plan.notify],
                        **({"run_as": plan.instance.run_as} if plan.instance.run_as else {}),
                        **({"emergency": emergency} if emergency is not None else {}),
                        **({"fix": fix} if fix is not None else {}),
                    },
                ),
                *extra,
            ],
        )
        if extra and self.announce is not None:
            self.announce(created, extra)
        return created

    def cancel(self, caller: Caller, release: ReleaseRecord, why: str) -> None:
        """End a release that never started (waiting for people): replaced or withdrawn."""
        self.store.update_release(
            release.id,
            status=release.status.evolve(phase=Phase.CANCELLED, message=why),
            expected_version=release.status_version,
            actor=caller.actor,
            events=[NewEvent("release.cancelled", {"message": why})],
        )

    def _check_budget(
        self, caller: Caller, service: str, env: str, artifact: str, asked: str
    ) -> None:
        """The error-budget policy: a frozen service ships only rollbacks, fixes and the
        emergency path until its budget recovers; the refusal is on the ledger."""
        state = None if self.frozen is None else self.frozen(service, env)
        if state is None:
            return
        reason = (
            f"the error budget of SLO {state.slo.name} is spent "
            f"({state.budget.remaining * 100:.1f}% left of {state.slo.period}) and "
            f"{env} freezes releases while it is (when_budget_exhausted: freeze)"
        )
        hint = (
            f"roll back (`conveyor rollback {service} --env {env}`), ship a repair with "
            f"`conveyor deploy {service} --env {env} --fix WHAT`, or take the emergency path"
        )
        self.store.append_events(
            [
                NewEvent(
                    "release.refused",
                    {
                        "artifact": artifact,
                        "asked": asked,
                        "reason": "error budget exhausted",
                        "slo": state.slo.name,
                        "budget_remaining": state.budget.remaining,
                        "hint": hint,
                    },
                    service=service,
                    env=env,
                )
            ],
            actor=caller.actor,
        )
        raise Refused(f"{service} may not be released to {env} now: {reason}", hint=hint)

    def _check_overrides(
        self,
        project: LoadedProject,
        caller: Caller,
        service: str,
        env: str,
        overrides: Mapping[str, str],
    ) -> None:
        """Refuse API-set config that would choose what runs (``core.release``'s rule).

        Checked here, for every caller (CLI, API, deploy jobs), and only for deploys:
        rollbacks and retries run a plan that was admitted when it was made, so a release
        stored before this rule existed still rolls back.
        """
        allowed = project.config.environment(env).allow_set
        refused = refused_overrides(overrides, allowed)
        if not refused:
            return
        name, reason = next(iter(refused.items()))
        others = [n for n in refused if n != name]
        self.store.append_events(
            [
                NewEvent(
                    "release.refused",
                    {"overrides_refused": sorted(refused), "reason": "protected variable"},
                    service=service,
                    env=env,
                )
            ],
            actor=caller.actor,
        )
        also = f" (also refused: {', '.join(others)})" if others else ""
        raise Refused(
            f"config {name} cannot be set with a deploy of {service} to {env}: it controls "
            f"{reason}{also}. A value sent with a deploy may change what a service is told, "
            "not what runs",
            hint=f"set it in conveyor.yaml (services.{service}.config), which is reviewed like "
            f"code, or let deploys to {env} set it: environments.{env}.allow_set: [{name}]",
        )

    def _check_artifact(
        self, caller: Caller, service: str, env: str, record: ArtifactRecord
    ) -> None:
        """The bytes still hash to their name and a trusted key vouches for them as ``service``."""
        try:
            self.artifacts.verify(record.digest)
            verify_signed(
                self.artifacts,
                record.digest,
                self.keyring,
                service=service,
                recorded_at=record.created_at,
            )
        except Refused as exc:
            # Refusals are evidence too: who tried to run which bytes, and why not.
            event = {"artifact": record.digest, "reason": exc.message, "hint": exc.hint}
            self.store.append_events(
                [NewEvent("artifact.refused", event, service=service, env=env)],
                actor=caller.actor,
            )
            raise

    def _check_requirements(
        self,
        project: LoadedProject,
        caller: Caller,
        service: str,
        env: str,
        record: ArtifactRecord,
    ) -> None:
        """Refuse an artifact that lacks anything ``requires:`` demands, naming every gap."""
        requirements = requirements_of(project, env)
        if requirements == Requirements(env):
            return
        attested = verified_runs(
            self.artifacts,
            record.digest,
            self.keyring,
            service=service,
            recorded_at=record.created_at,
        )
        facts = artifact_facts(self.store, service, record, requirements, attested)
        unmet = unmet_requirements(requirements, facts)
        if not unmet:
            return
        missing = [e for e in requirements.environments if e not in facts.succeeded_in]
        hint = (
            f"deploy it to {missing[0]} first: conveyor deploy {service} --env {missing[0]} "
            f"--artifact {record.digest}"
            if missing
            else "run the pipeline that builds it (`conveyor run`) from a clean checkout of an "
            f"allowed branch; its gate results are attested on the artifact (see `requires:` "
            f"of {env} in conveyor.yaml)"
        )
        if attested.rejected:
            unmet.append(
                f"({attested.rejected} attestation line(s) of {record.short} failed "
                "verification and were ignored)"
            )
        self.store.append_events(
            [
                NewEvent(
                    "release.refused",
                    {"artifact": record.digest, "unmet": unmet, "hint": hint},
                    service=service,
                    env=env,
                )
            ],
            actor=caller.actor,
        )
        raise Refused(
            f"{service} {record.short} may not be deployed to {env}: " + "; ".join(unmet),
            hint=hint,
        )


def _deploy_reason(emergency: str | None, fix: str | None) -> str:
    """The release's reason: how ``core.dora.kind_of`` tells a fix from a deploy."""
    if fix is not None:
        return ("emergency fix: " if emergency is not None else "fix: ") + fix
    return "emergency: " + emergency if emergency is not None else "deploy"


def _waiting_text(plan: ReleasePlan) -> str:
    rule = plan.approval
    if rule is None:
        return "waiting to start"
    who = f" from {', '.join(rule.reviewers)}" if rule.reviewers else ""
    return f"waiting for {rule.required} approval(s){who}"


def _stable_ref(release: ReleaseRecord | None) -> StableRef | None:
    if release is None:
        return None
    return StableRef(release.id, release.revision, release.template, release.instances)


def _current(release: ReleaseRecord | None) -> Current | None:
    if release is None:
        return None
    return Current(release.revision, release.template, release.instances, release.phase)


def _command_text(command: str | tuple[str, ...]) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def _diff(before: Mapping[str, object], after: Mapping[str, object]) -> dict[str, list[str]]:
    """Config keys added, removed and changed (names only: values may be sensitive).

    A secret counts as its reference: pointing a key at another secret is a change, a new
    value behind the same reference is not (the release never saw it).
    """
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }
