"""The canary strategy: a list of steps walked one at a time, judged as it goes.

Weights are shares of users (a `set_weight: 5` step sends 5% of requests to the canary, and
no more until the next step), and capacity follows them: the canary runs
ceil(desired * weight / 100) instances, the stable version keeps all of its own until the
canary is promoted, so an abort is only a weight change. Pauses and analysis steps hold the
step index; an inconclusive analysis holds it too, and says so, until a human promotes or
aborts — it never passes or fails a canary it could not judge, and never waits silently.

Steps are identified by index plus a hash of the step list (Argo's CurrentStepHash): if the
steps change under a running rollout, it restarts from the first step rather than resuming
at an index that now means something else.
"""

from __future__ import annotations

import math

from conveyor.core.model import InstanceObservation
from conveyor.core.state import (
    Abort,
    AnalysisStep,
    Decision,
    Event,
    HeaderRouteStep,
    Observations,
    PauseStep,
    RolloutSpec,
    RolloutStatus,
    RunAnalysis,
    SetWeights,
    SetWeightStep,
    StartInstances,
    Wait,
    describe_step,
)
from conveyor.core.strategies import switch
from conveyor.core.traffic import same_split

BACKGROUND = "background"


def step_key(index: int) -> str:
    return f"step-{index}"


def canary(spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float) -> Decision:
    steps = spec.strategy.steps
    if status.steps_hash != spec.strategy.steps_hash:
        first = (
            (Event("step.started", {"index": 0, "step": describe_step(steps[0])}),) if steps else ()
        )
        return Decision(
            Wait("steps changed"),
            status.evolve(
                steps_hash=spec.strategy.steps_hash, step_index=0, step_started_at=now, paused=None
            ),
            first,
        )
    background = spec.strategy.background_analysis
    if background and BACKGROUND not in obs.analysis:
        return Decision(
            RunAnalysis(BACKGROUND, background),
            status,
            (Event("analysis.started", {"key": BACKGROUND, "template": background}),),
        )
    manual = status.paused is not None and status.paused.startswith(MANUAL_PAUSE)
    if manual and status.promote is None:
        assert status.paused is not None
        return Decision(Wait("paused"), status.evolve(message=status.paused))
    if spec.stable_version is None or status.promote == "full" or status.step_index >= len(steps):
        # A first release has nothing to be compared with: like Argo, it skips the steps.
        return _promote_fully(spec, status, obs, now)
    if status.promote == "step":
        return _advance(status, now, spec, promoted=True)
    state = obs.analysis.get(BACKGROUND)
    if state is not None and state.phase == "inconclusive":
        reason = (
            f"background analysis was inconclusive ({state.message}); "
            "`conveyor promote` to continue or `conveyor abort` to roll back"
        )
        details: dict[str, object] = {"key": BACKGROUND, "message": state.message}
        return _hold(status, reason, details, kind="analysis.inconclusive")
    step = steps[status.step_index]
    if isinstance(step, SetWeightStep):
        return _set_weight(spec, status, obs, now, step)
    if isinstance(step, PauseStep):
        return _pause(spec, status, now, step)
    if isinstance(step, AnalysisStep):
        return _analysis(spec, status, obs, now, step)
    return _header_route(spec, status, now, step)


def holding(spec: RolloutSpec, status: RolloutStatus) -> bool:
    """Paused or judging: waiting is the point, so the progress deadline does not run."""
    if status.paused is not None:
        return True
    steps = spec.strategy.steps
    if spec.stable_version is None or status.promote or status.step_index >= len(steps):
        return False
    return isinstance(steps[status.step_index], PauseStep | AnalysisStep)


def analysis_failure(spec: RolloutSpec, status: RolloutStatus, obs: Observations) -> Abort | None:
    """A failed (or erroring) analysis run aborts the canary; checked with the other triggers."""
    keys = [BACKGROUND]
    if status.step_index < len(spec.strategy.steps) and isinstance(
        spec.strategy.steps[status.step_index], AnalysisStep
    ):
        keys.append(step_key(status.step_index))
    for key in keys:
        state = obs.analysis.get(key)
        if state is not None and state.phase in ("failed", "error"):
            return Abort(
                reason="analysis-failed" if state.phase == "failed" else "analysis-error",
                message=f"analysis {key} {state.phase}: {state.message}",
                at=0.0,
                evidence={"run": key, **dict(state.evidence)},
            )
    return None


# --- steps ---------------------------------------------------------------------------


def _advance(
    status: RolloutStatus, now: float, spec: RolloutSpec, *, promoted: bool = False
) -> Decision:
    steps = spec.strategy.steps
    done = status.step_index
    index = done + 1
    details = {"index": done, "step": describe_step(steps[done]), "promoted": promoted}
    events = [Event("step.completed", details)]
    if index < len(steps):
        events.append(Event("step.started", {"index": index, "step": describe_step(steps[index])}))
    return Decision(
        Wait("step completed"),
        status.evolve(
            step_index=index, step_started_at=now, progress_at=now, paused=None, promote=None
        ),
        tuple(events),
    )


def _needed(spec: RolloutSpec, weight: int) -> int:
    return 0 if weight <= 0 else max(1, math.ceil(spec.desired * weight / 100))


def _ensure_capacity(
    spec: RolloutSpec, status: RolloutStatus, new: tuple[InstanceObservation, ...], count: int
) -> Decision | None:
    missing = count - len(new)
    if missing <= 0:
        return None
    return Decision(
        StartInstances(spec.version, missing),
        status.evolve(message=f"starting {missing} canary instance(s)"),
        (Event("instances.started", {"version": spec.version, "count": missing}),),
    )


def _set_weight(
    spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float, step: SetWeightStep
) -> Decision:
    need = _needed(spec, step.weight)
    start = _ensure_capacity(spec, status, obs.new, need)
    if start is not None:
        return start
    ready = sum(1 for i in obs.new if i.ready)
    if ready < need:
        return Decision(
            Wait("canary capacity"),
            status.evolve(message=f"{ready}/{need} canary instance(s) ready for {step.weight}%"),
        )
    weights = _split(spec, step.weight)
    if not same_split(weights, status.weights):
        return Decision(
            SetWeights(weights),
            status.evolve(weights=weights, message=f"{step.weight}% of users on the canary"),
            (Event("traffic.shifted", {"weights": weights, "canary_percent": step.weight}),),
        )
    return _advance(status, now, spec)


def _pause(spec: RolloutSpec, status: RolloutStatus, now: float, step: PauseStep) -> Decision:
    if step.seconds is None:
        return _hold(status, "paused until promoted (`conveyor promote`)", {})
    left = (status.step_started_at or now) + step.seconds - now
    if left > 0:
        return Decision(Wait("pausing"), status.evolve(message=f"pausing: {left:.0f}s left"))
    return _advance(status, now, spec)


def _analysis(
    spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float, step: AnalysisStep
) -> Decision:
    key = step_key(status.step_index)
    state = obs.analysis.get(key)
    if state is None:
        return Decision(
            RunAnalysis(key, step.template),
            status.evolve(message=f"analysis {step.template} running"),
            (Event("analysis.started", {"key": key, "template": step.template}),),
        )
    if state.phase == "successful":
        return _advance(status, now, spec)
    if state.phase == "inconclusive":
        reason = (
            f"analysis {step.template} was inconclusive ({state.message}); "
            "`conveyor promote` to continue or `conveyor abort` to roll back"
        )
        evidence: dict[str, object] = {
            "key": key,
            "message": state.message,
            "evidence": dict(state.evidence),
        }
        return _hold(status, reason, evidence, kind="analysis.inconclusive")
    message = f"analysis {step.template}: {state.message or state.phase}"
    return Decision(Wait("analysing"), status.evolve(message=message))


def _hold(
    status: RolloutStatus,
    reason: str,
    details: dict[str, object],
    kind: str = "rollout.paused",
) -> Decision:
    """Hold the step index for a human; announce it once (the notifier reads the ledger)."""
    if status.paused == reason:
        return Decision(Wait("held"), status)
    return Decision(
        Wait("held"),
        status.evolve(paused=reason, message=reason),
        (Event(kind, {"reason": reason, **details}),),
    )


def _header_route(
    spec: RolloutSpec, status: RolloutStatus, now: float, step: HeaderRouteStep
) -> Decision:
    route = (step.header, step.value)
    if status.header_route == route:
        return _advance(status, now, spec)
    return Decision(
        Wait("header route"),
        status.evolve(
            header_route=route,
            message=f"requests with {step.header}: {step.value} go to the canary",
        ),
        (Event("traffic.header_route", {"header": step.header, "value": step.value}),),
    )


def _promote_fully(
    spec: RolloutSpec, status: RolloutStatus, obs: Observations, now: float
) -> Decision:
    start = _ensure_capacity(spec, status, obs.new, spec.desired)
    if start is not None:
        return start
    ready = sum(1 for i in obs.new if i.ready)
    if ready < spec.desired:
        return Decision(
            Wait("promoting"),
            status.evolve(message=f"promoting: {ready}/{spec.desired} canary instances ready"),
        )
    return switch(spec, status.evolve(header_route=None, paused=None, promote=None), now)


def _split(spec: RolloutSpec, weight: int) -> dict[str, int]:
    weights = {spec.version: weight}
    if spec.stable_version is not None and weight < 100:
        weights[spec.stable_version] = 100 - weight
    return {v: w for v, w in weights.items() if w > 0}


# --- what humans may do ------------------------------------------------------------------

MANUAL_PAUSE = "paused by "


def promote(status: RolloutStatus, *, full: bool) -> RolloutStatus:
    return status.evolve(promote="full" if full else "step")


def pause(status: RolloutStatus, actor: str) -> RolloutStatus:
    return status.evolve(paused=f"{MANUAL_PAUSE}{actor}", message=f"{MANUAL_PAUSE}{actor}")


def resume(status: RolloutStatus, actor: str = "conveyor") -> RolloutStatus:
    """Lift a manual pause; the progress clock restarts at the next tick (a pause is no stall).

    The message says so at once: until the next step replaces it, ``status`` must not go on
    showing "paused by ..." for a rollout that is moving again.
    """
    held = status.paused is not None and status.paused.startswith(MANUAL_PAUSE)
    if not held:
        return status
    return status.evolve(paused=None, progress_at=None, message=f"resumed by {actor}")
