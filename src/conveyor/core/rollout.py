"""The rollout state machine: ``decide(spec, status, observations, now) -> Decision``.

One call looks at what runs now and returns the single next thing to do. It is pure — no
clock, no I/O — so every path (crash loops, deadlines, error spikes, a controller killed
between any two steps) is tested exhaustively with plain data, and the controller that
carries decisions out stays a thin loop.

Decisions are level-based: they compare what should run with what is observed, never with
what the previous tick *meant* to do. A controller that died after starting an instance but
before recording it sees the instance next time and does not start another; one that died
after switching traffic sees the switch replayed from the stored weights. That is what makes a
SIGKILL at any point safe.

Order of concerns each tick: leftovers of other releases go first; then failure detection
(any trigger turns the rollout into a rollback); then the strategy's next step. A rollback
restores traffic to the stable version *before* anything else, because seconds matter there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from conveyor.core import strategies
from conveyor.core.canary import analysis_failure, canary, holding
from conveyor.core.judge import judge_error_window
from conveyor.core.model import InstanceObservation
from conveyor.core.state import (
    Abort,
    Decision,
    Event,
    Observations,
    Phase,
    RolloutSpec,
    RolloutStatus,
    RunMigration,
    SetWeights,
    StartInstances,
    StopInstances,
    TrafficWindow,
    Triggers,
    Wait,
)
from conveyor.core.traffic import same_split

PREVIEW_FAILURE_LIMIT = 3


def decide(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float) -> Decision:
    if status.phase is Phase.PENDING_APPROVAL:
        return await_approval(status, obs, now)
    if status.rollback_requested is not None:
        # `conveyor rollback` reached a server that does not drive this environment: it
        # wrote the request into the status; the driving server carries it out here.
        actor, status = status.rollback_requested, status.evolve(rollback_requested=None)
        if status.phase.in_progress and status.phase is not Phase.ROLLING_BACK:
            return manual_abort(spec, status, obs, actor, now)
    if status.phase is Phase.PENDING:
        if spec.migrate and status.migration != "succeeded":
            return migrate(spec, status, obs, now)
        return _start(spec, status, now)
    if obs.others:
        ids = tuple(sorted(i.instance_id for i in obs.others))
        return Decision(
            StopInstances(ids, "left over from an earlier release"),
            status,
            (Event("instances.stopped", {"instances": list(ids), "why": "leftover"}),),
        )
    if status.phase in (Phase.PROGRESSING, Phase.VERIFYING):
        if status.progress_at is None:  # the progress clock was restarted (resume)
            status = status.evolve(progress_at=now)
        status, events = _note_ready(spec, status, obs, now)
        abort = detect_failure(spec, status, obs, now)
        if abort is not None:
            return begin_rollback(spec, status, abort, obs, now, events)
        if status.phase is Phase.PROGRESSING:
            decision = progress(spec, status, obs, now)
        else:
            decision = _verify(spec, status, obs, now)
        return Decision(decision.action, decision.status, events + decision.events)
    if status.phase is Phase.ROLLING_BACK:
        return _roll_back(spec, status, obs, now)
    if status.phase is Phase.SUCCEEDED and status.cleanup_at is not None:
        return _clean_up(status, obs, now)
    return Decision(Wait("nothing to do"), status)


def detect_failure(
    spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float
) -> Abort | None:
    """The first rollback trigger that fires, with the evidence that fired it."""
    t = spec.triggers
    if obs.launch_failure is not None:
        return Abort(
            reason="launch-failed",
            message=f"a new instance could not be started: {obs.launch_failure}",
            at=now,
            evidence={"launch_failure": obs.launch_failure},
        )
    crashing = [i for i in obs.new if crashes(i) >= t.max_restarts]
    if crashing:
        worst = max(crashes(i) for i in crashing)
        return Abort(
            reason="crash-loop",
            message=f"{len(crashing)} new instance(s) crashed {worst} time(s) "
            f"(limit {t.max_restarts})",
            at=now,
            evidence={"instances": [_instance_evidence(i) for i in crashing]},
        )
    if obs.traffic is not None:
        abort = error_rate_abort(t, obs.traffic, now)
        if abort is not None:
            return abort
    if (
        status.phase is Phase.PROGRESSING
        and status.progress_at is not None
        and status.paused is None  # waiting for a human is not a stall
        and not (spec.strategy.kind == "canary" and _canary_holding(spec, status))
    ):
        stalled = now - status.progress_at
        if stalled > spec.progress_deadline:
            ready = sum(1 for i in obs.new if i.ready)
            return Abort(
                reason="progress-deadline",
                message=f"no progress for {stalled:.0f}s (deadline {spec.progress_deadline:.0f}s): "
                f"{ready}/{spec.desired} new instances ready",
                at=now,
                evidence={
                    "ready": ready,
                    "desired": spec.desired,
                    "instances": [_instance_evidence(i) for i in obs.new if not i.ready],
                },
            )
    if spec.strategy.kind == "canary":
        failed = analysis_failure(spec, status, obs)
        if failed is not None:
            return dataclasses.replace(failed, at=now)
    if status.preview_failures >= PREVIEW_FAILURE_LIMIT:
        return Abort(
            reason="preview-failed",
            message=f"the preview address failed {status.preview_failures} checks in a row",
            at=now,
        )
    return None


def error_rate_abort(triggers: Triggers, traffic: TrafficWindow, now: float) -> Abort | None:
    """The ``error-rate`` trigger: the window shows the new version's rate above the limit.

    Judged sequentially by ``core.judge.judge_error_window`` (a beta posterior, alpha spent
    per window's worth of traffic), so a broken version is stopped after a few of its
    requests and a healthy one is not rolled back over one unlucky window. ``min_requests``
    is a floor on the window's requests, for those who want one; the test needs none.
    """
    verdict = judge_error_window(
        traffic.errors,
        traffic.requests,
        limit=triggers.error_rate,
        min_requests=triggers.min_requests,
        lifetime_requests=traffic.lifetime_requests,
    )
    if verdict.outcome != "fail":
        return None
    return Abort(
        reason="error-rate",
        message=f"{traffic.error_rate:.1%} of {traffic.requests} requests to the new version "
        f"failed over {traffic.seconds:.1f}s (limit {triggers.error_rate:.1%}; "
        f"{verdict.detail})",
        at=now,
        evidence={**verdict.evidence, "window_seconds": round(traffic.seconds, 3)},
    )


def _canary_holding(spec: RolloutSpec, status: RolloutStatus) -> bool:
    return holding(spec, status)


def await_approval(status: RolloutStatus, obs: Observations, now: float) -> Decision:
    """A release waiting for people starts when approved, ends when rejected or expired."""
    state = obs.approval
    if state is None:
        return Decision(Wait("waiting for approval"), status)
    if state.verdict == "approved" and state.start_at is not None and now >= state.start_at:
        return Decision(
            Wait("approved"),
            status.evolve(phase=Phase.PENDING, message=state.message),
            (Event("release.approved", {"approvals": list(state.approvals)}),),
        )
    if state.verdict in ("rejected", "expired"):
        phase = Phase.REJECTED if state.verdict == "rejected" else Phase.CANCELLED
        return Decision(
            Wait(state.message),
            status.evolve(phase=phase, finished_at=now, message=state.message),
            (Event(f"release.{state.verdict}", {"message": state.message}),),
        )
    if state.message != status.message:
        return Decision(Wait(state.message), status.evolve(message=state.message))
    return Decision(Wait(state.message), status)


def progress(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float) -> Decision:
    """The strategy's next step towards all users on the new version, nothing being wrong."""
    kind = spec.strategy.kind
    if kind == "recreate":
        return strategies.recreate(spec, status, obs, now)
    if kind == "rolling":
        return strategies.rolling(spec, status, obs, now)
    if kind == "canary":
        return canary(spec, status, obs, now)
    return strategies.blue_green(spec, status, obs, now)


def crashes(inst: InstanceObservation) -> int:
    """Times an instance died: its restarts, plus the death it is waiting out right now.

    Counting the exit rather than the restart that follows it decides a crash loop one
    backoff delay sooner (a second crash is known the moment it happens).
    """
    return inst.restarts + (1 if inst.state in ("backoff", "failed") else 0)


def begin_rollback(
    spec: RolloutSpec,
    status: RolloutStatus,
    abort: Abort,
    obs: Observations,
    now: float,
    events: tuple[Event, ...] = (),
) -> Decision:
    """Turn the rollout around; the first action already restores traffic when it can."""
    details = {
        "reason": abort.reason,
        "message": abort.message,
        "evidence": dict(abort.evidence),
        "to_revision": spec.stable_revision,
        "actor": abort.actor,
    }
    failed = Event("release.aborted", details)
    started = Event(
        "rollback.started", {"reason": abort.reason, "to_revision": spec.stable_revision}
    )
    target = f"r{spec.stable_revision}" if spec.stable_revision else "nothing (first release)"
    new_status = status.evolve(
        phase=Phase.ROLLING_BACK,
        abort=abort,
        header_route=None,  # managed routes go with the weights (Argo: RemoveManagedRoutes)
        message=f"rolling back to {target}: {abort.message}",
    )
    decision = _roll_back(spec, new_status, obs, now)
    if isinstance(decision.action, StopInstances):
        # Record the abort before destroying its evidence: if the controller died after
        # stopping the new instances but before committing, the next one would see a calm
        # world, forget why, and start the broken version again.
        return Decision(Wait("rollback decided"), new_status, (*events, failed, started))
    return Decision(decision.action, decision.status, (*events, failed, started, *decision.events))


def manual_abort(
    spec: RolloutSpec,
    status: RolloutStatus,
    obs: Observations,
    actor: str,
    now: float,
    *,
    reason: str = "manual",
    message: str | None = None,
) -> Decision:
    """`conveyor rollback` during a rollout: the same path as an automatic rollback. Also
    how a trigger judged outside the driver (``slo-burn``: a page-level SLO burn alert)
    rolls a rollout back, with its own reason."""
    text = message if message is not None else f"rollback requested by {actor}"
    abort = Abort(reason=reason, message=text, at=now, actor=actor)
    return begin_rollback(spec, status, abort, obs, now)


def migrate(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float) -> Decision:
    """The release's ``migrate:`` step, once, before any new instance starts.

    Three ticks: say it starts (on the ledger before it runs), run it, record how it went.
    A failed migration ends the release there: no new instance was started and no user
    moved, so there is nothing to roll back — the release *fails*, with the command's output
    as evidence. A driver killed while it runs finds ``running`` and runs it again: migration
    tools skip what is already applied (and PostgreSQL rolled back what a killed one left).
    """
    if status.migration is None:
        return Decision(
            Wait("migration starting"),
            status.evolve(migration="running", message="migrating the database"),
            (Event("migration.started", {}),),
        )
    run = obs.migration
    if run is None:
        return Decision(RunMigration(), status)
    details = {
        "seconds": round(run.seconds, 3),
        "exit_code": run.exit_code,
        "result": run.detail,
        "output": run.output,
    }
    if run.ok:
        return Decision(
            Wait("migrated"),
            status.evolve(migration="succeeded", message=f"migrated in {run.seconds:.1f}s"),
            (Event("migration.succeeded", details),),
        )
    message = (
        f"the migration failed ({run.detail}) after {run.seconds:.1f}s; no new instance "
        "was started and no traffic moved"
    )
    abort = Abort(reason="migration-failed", message=message, at=now, evidence=details)
    return Decision(
        Wait(message),
        status.evolve(
            phase=Phase.FAILED, migration="failed", abort=abort, finished_at=now, message=message
        ),
        (
            Event("migration.failed", details),
            Event("release.failed", {"reason": "migration-failed", "message": message}),
        ),
    )


# --- phases -----------------------------------------------------------------------


def _start(spec: RolloutSpec, status: RolloutStatus, now: float) -> Decision:
    plan = {
        "strategy": spec.strategy.kind,
        "desired": spec.desired,
        "version": spec.version,
        "stable_revision": spec.stable_revision,
        "progress_deadline": spec.progress_deadline,
        "rollback_triggers": {
            "error_rate": spec.triggers.error_rate,
            "min_requests": spec.triggers.min_requests,
            "window": spec.triggers.window,
            "max_restarts": spec.triggers.max_restarts,
            "verification": spec.triggers.verification,
        },
    }
    return Decision(
        Wait("rollout started"),
        status.evolve(phase=Phase.PROGRESSING, started_at=now, progress_at=now, message="starting"),
        (Event("rollout.started", plan),),
    )


def _note_ready(
    spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float
) -> tuple[RolloutStatus, tuple[Event, ...]]:
    """Record newly ready instances on the ledger; each one counts as progress."""
    fresh = sorted(
        i.instance_id for i in obs.new if i.ready and i.instance_id not in status.ready_seen
    )
    if not fresh:
        return status, ()
    status = status.evolve(ready_seen=(*status.ready_seen, *fresh), progress_at=now)
    return status, (Event("instance.ready", {"instances": fresh}),)


def _verify(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float) -> Decision:
    keep = strategies.keep_new_in_shape(spec, status, obs)
    if keep is not None:
        return keep
    if status.verify_until is not None and now < status.verify_until:
        left = status.verify_until - now
        return Decision(
            Wait("verifying"),
            status.evolve(message=f"verifying: {left:.0f}s left, watching errors"),
        )
    cleanup_at = None
    if spec.strategy.kind in ("blue_green", "canary") and obs.old:
        cleanup_at = (status.switched_at or now) + spec.strategy.scale_down_delay
    final = status.evolve(
        phase=Phase.SUCCEEDED,
        finished_at=now,
        cleanup_at=cleanup_at,
        message="succeeded" if cleanup_at is None else "succeeded; old version kept warm",
    )
    duration = now - (status.started_at or now)
    return Decision(
        Wait("succeeded"),
        final,
        (
            Event("verification.passed", {"traffic": _traffic_evidence(obs)}),
            Event("release.succeeded", {"duration_seconds": round(duration, 3)}),
        ),
    )


def _roll_back(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float) -> Decision:
    """Traffic back to the stable version first, then its capacity, then the new one goes."""
    abort = status.abort
    reason = abort.reason if abort else "unknown"
    if spec.stable_version is None:
        if obs.new:
            ids = tuple(sorted(i.instance_id for i in obs.new))
            return Decision(
                StopInstances(ids, "first release failed"),
                status.evolve(weights={}),
                (Event("instances.stopped", {"instances": list(ids), "why": reason}),),
            )
        return _finish(
            status.evolve(weights={}),
            Phase.FAILED,
            now,
            "failed; there is no earlier release to return to",
        )
    ready_old = [i for i in obs.old if i.ready]
    if ready_old and not same_split(status.weights, {spec.stable_version: 1}):
        return _restore_traffic(spec, status, now)
    missing = spec.stable_desired - len(obs.old)
    if missing > 0:
        return Decision(
            StartInstances(spec.stable_version, missing),
            status.evolve(
                message=f"rolling back: starting {missing} r{spec.stable_revision} instance(s)"
            ),
            (Event("instances.started", {"version": spec.stable_version, "count": missing}),),
        )
    if obs.new and ready_old:
        ids = tuple(sorted(i.instance_id for i in obs.new))
        return Decision(
            StopInstances(ids, "rolled back"),
            status,
            (Event("instances.stopped", {"instances": list(ids), "why": reason}),),
        )
    if len(ready_old) >= spec.stable_desired and not obs.new:
        return _finish(status, Phase.ROLLED_BACK, now, f"rolled back to r{spec.stable_revision}")
    if abort is not None and now - abort.at > spec.progress_deadline:
        return _finish(
            status,
            Phase.FAILED,
            now,
            f"rollback could not restore r{spec.stable_revision} within "
            f"{spec.progress_deadline:.0f}s: {len(ready_old)}/{spec.stable_desired} ready",
        )
    return Decision(
        Wait("restoring stable"),
        status.evolve(
            message=f"rolling back: {len(ready_old)}/{spec.stable_desired} "
            f"r{spec.stable_revision} instances ready"
        ),
    )


def _restore_traffic(spec: RolloutSpec, status: RolloutStatus, now: float) -> Decision:
    assert spec.stable_version is not None
    weights = {spec.stable_version: 100}
    since = now - status.abort.at if status.abort else 0.0
    return Decision(
        SetWeights(weights),
        status.evolve(weights=weights),
        (
            Event(
                "traffic.switched",
                {
                    "to": spec.stable_version,
                    "to_revision": spec.stable_revision,
                    "weights": weights,
                    "rollback": True,
                    "seconds_after_abort": round(since, 3),
                },
            ),
        ),
    )


def _finish(status: RolloutStatus, phase: Phase, now: float, message: str) -> Decision:
    kind = {Phase.ROLLED_BACK: "release.rolled_back", Phase.FAILED: "release.failed"}[phase]
    details: dict[str, object] = {"message": message}
    if status.abort is not None:
        details["reason"] = status.abort.reason
        details["seconds_since_abort"] = round(now - status.abort.at, 3)
    return Decision(
        Wait(message),
        status.evolve(phase=phase, finished_at=now, cleanup_at=None, message=message),
        (Event(kind, details),),
    )


def _clean_up(status: RolloutStatus, obs: Observations, now: float) -> Decision:
    assert status.cleanup_at is not None
    if not obs.old:
        return Decision(
            Wait("done"),
            status.evolve(cleanup_at=None, message="succeeded"),
            (Event("old_version.scaled_down", {}),),
        )
    if now >= status.cleanup_at:
        ids = tuple(sorted(i.instance_id for i in obs.old))
        return Decision(
            StopInstances(ids, "scale-down delay passed"),
            status,
            (Event("instances.stopped", {"instances": list(ids), "why": "scale_down_delay"}),),
        )
    left = status.cleanup_at - now
    return Decision(
        Wait("old version warm"),
        status.evolve(message=f"succeeded; old version kept warm for {left:.0f}s more"),
    )


def _instance_evidence(inst: InstanceObservation) -> dict[str, object]:
    return {
        "instance": inst.instance_id,
        "state": inst.state,
        "ready": inst.ready,
        "restarts": inst.restarts,
        "last_exit_code": inst.last_exit_code,
        "last_probe": inst.last_probe.detail if inst.last_probe else None,
        "recent_probes": [p.detail for p in inst.recent_probes[-5:]],
    }


def _traffic_evidence(obs: Observations) -> dict[str, object] | None:
    if obs.traffic is None:
        return None
    return {
        "requests": obs.traffic.requests,
        "errors": obs.traffic.errors,
        "window_seconds": round(obs.traffic.seconds, 3),
    }


def preview_version(spec: RolloutSpec, status: RolloutStatus) -> str | None:
    """The blue-green candidate until users are switched to it.

    It is served on the preview listener and never promoted by ``route_table``'s fallback,
    including on the rollback tick that precedes stopping it: an unverified version must not
    reach users because a rollout was aborted before its switch.
    """
    if spec.strategy.kind != "blue_green" or status.done:
        return None
    if status.switched_at is None or status.phase is not Phase.ROLLING_BACK:
        return spec.version
    return None


RESTORE_BACKOFF = 10.0
"""Seconds between two restores of one environment: an instance that keeps dying is the
runtime's crash loop to report, not a reason to start a new one every tick."""

_GONE = ("stopped", "failed")


def restore(
    version: str,
    desired: int,
    instances: Sequence[InstanceObservation],
    *,
    last_restore: float | None,
    now: float,
) -> StartInstances | None:
    """What keeps the running release at its size when no rollout is moving it.

    The desired state is the last succeeded release, on the ledger; this compares it with
    what runs, as a Kubernetes ReplicaSet does: after `conveyor down` and `up`, after a host
    reboot or a lost instance, the missing instances are started again without anyone
    deploying. Instances starting or in backoff count as present (the runtime is already
    bringing them back).
    """
    present = sum(1 for i in instances if i.version == version and i.state not in _GONE)
    missing = desired - present
    if missing <= 0:
        return None
    if last_restore is not None and now - last_restore < RESTORE_BACKOFF:
        return None
    return StartInstances(version, missing)
