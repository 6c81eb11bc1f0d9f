"""The canary strategy step by step (core/canary.py, through ``rollout.decide``).

Each test hands ``decide`` a rollout standing at one step with what runs, and checks the one
next thing it does. Where canary.py is silent the expectation is Argo Rollouts' (cited where
it matters). Whole canary rollouts, with controller crashes and humans, are properties in
test_sim.py; the scenarios here pin single behaviours end to end in the same simulated world.

Each test names the behaviour it pins; bugs found here were fixed in src and their tests kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from conveyor.core.canary import pause, promote, resume
from conveyor.core.rollout import decide, manual_abort
from conveyor.core.state import (
    AnalysisState,
    AnalysisStep,
    Decision,
    Event,
    HeaderRouteStep,
    Observations,
    PauseStep,
    Phase,
    RolloutSpec,
    RolloutStatus,
    RunAnalysis,
    SetWeights,
    SetWeightStep,
    StartInstances,
    Step,
    StopInstances,
    Wait,
)

from . import sim
from .builders import NEW, OLD, T0, news, observe, olds, progressing, spec

STABLE3 = olds(True, True, True)
ENTERED = T0 + 10  # when the step under test started


def kinds(events: Sequence[Event]) -> list[str]:
    return [e.kind for e in events]


def cspec(
    *steps: Step, background: str | None = None, desired: int = 4, **kwargs: Any
) -> RolloutSpec:
    """A canary of NEW over OLD (3 stable instances) with these steps."""
    base = spec("canary", desired=desired, **kwargs)
    strategy = dataclasses.replace(base.strategy, steps=steps, background_analysis=background)
    return dataclasses.replace(base, strategy=strategy)


def at(rollout: RolloutSpec, index: int, **changes: Any) -> RolloutStatus:
    """Standing at step ``index`` since ENTERED; instances n1..n9 already noted ready."""
    base = progressing(
        steps_hash=rollout.strategy.steps_hash,
        step_index=index,
        step_started_at=ENTERED,
        ready_seen=tuple(f"n{i}" for i in range(1, 10)),
    )
    return base.evolve(**changes)


def runs(obs: Observations, **states: AnalysisState) -> Observations:
    """``obs`` with analysis runs by key; ``step_1=`` is the run ``step-1``."""
    keys = {k.replace("_", "-"): v for k, v in states.items()}
    return dataclasses.replace(obs, analysis=keys)


def split(weight: int) -> dict[str, int]:
    return {NEW: weight, OLD: 100 - weight}


def advanced(d: Decision, done: int, now: float, *, promoted: bool = False) -> None:
    """``d`` completed step ``done`` at ``now`` and moved to the next one."""
    assert d.action == Wait("step completed")
    assert d.status.step_index == done + 1
    assert d.status.step_started_at == now
    assert d.status.paused is None and d.status.promote is None
    assert d.events[0].kind == "step.completed"
    assert d.events[0].details["index"] == done
    assert d.events[0].details["promoted"] is promoted


# --- set_weight ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "weight", "need"),
    [(4, 25, 1), (4, 26, 2), (3, 5, 1), (10, 33, 4), (1, 1, 1), (5, 100, 5), (7, 50, 4)],
)
def test_set_weight_runs_ceil_desired_times_weight_canary_instances(
    desired: int, weight: int, need: int
) -> None:
    rollout = cspec(SetWeightStep(weight), desired=desired)
    d = decide(rollout, at(rollout, 0), observe((), STABLE3), ENTERED + 1)
    assert d.action == StartInstances(NEW, need)
    assert d.status.weights == {OLD: 100}
    assert kinds(d.events) == ["instances.started"]
    if need > 1:
        d = decide(rollout, at(rollout, 0), observe(news(False), STABLE3), ENTERED + 1)
        assert d.action == StartInstances(NEW, need - 1)


def test_weights_move_only_once_that_many_canary_instances_are_ready() -> None:
    rollout = cspec(SetWeightStep(50), SetWeightStep(75))  # 2 of 4
    status = at(rollout, 0)
    d = decide(rollout, status, observe(news(True, False), STABLE3), ENTERED + 1)
    assert d.action == Wait("canary capacity")
    assert d.status.weights == {OLD: 100}
    assert "1/2" in d.status.message
    d = decide(rollout, status, observe(news(True, True), STABLE3), ENTERED + 2)
    assert d.action == SetWeights(split(50))
    assert d.status.weights == split(50)
    assert d.events == (Event("traffic.shifted", {"weights": split(50), "canary_percent": 50}),)
    d = decide(rollout, d.status, observe(news(True, True), STABLE3), ENTERED + 3)
    advanced(d, 0, ENTERED + 3)
    assert d.events[1] == Event("step.started", {"index": 1, "step": "set weight 75%"})


def test_a_lower_weight_moves_users_back_and_keeps_the_canary_capacity() -> None:
    rollout = cspec(SetWeightStep(50), SetWeightStep(10))
    status = at(rollout, 1, weights=split(50))
    d = decide(rollout, status, observe(news(True, True), STABLE3), ENTERED + 1)
    assert d.action == SetWeights(split(10))


def test_weight_zero_needs_no_canary_and_passes_at_once() -> None:
    rollout = cspec(SetWeightStep(0), SetWeightStep(20))
    d = decide(rollout, at(rollout, 0), observe((), STABLE3), ENTERED + 1)
    advanced(d, 0, ENTERED + 1)
    assert d.status.weights == {OLD: 100}


def test_weight_100_is_a_step_not_a_promotion() -> None:
    rollout = cspec(SetWeightStep(100), PauseStep(None), desired=2)
    d = decide(rollout, at(rollout, 0), observe(news(True, True), STABLE3), ENTERED + 1)
    assert d.action == SetWeights({NEW: 100})
    assert d.status.phase is Phase.PROGRESSING
    assert d.status.switched_at is None


# --- pauses --------------------------------------------------------------------------

AT_25 = observe(news(True), STABLE3)


@pytest.mark.parametrize(
    ("now", "advances"),
    [(ENTERED, False), (ENTERED + 29, False), (ENTERED + 30, True), (ENTERED + 500, True)],
)
def test_a_timed_pause_counts_from_when_its_step_started(now: float, advances: bool) -> None:
    rollout = cspec(SetWeightStep(25), PauseStep(30), SetWeightStep(50))
    d = decide(rollout, at(rollout, 1, weights=split(25)), AT_25, now)
    if advances:
        advanced(d, 1, now)
    else:
        assert d.action == Wait("pausing")
        assert d.status.message == f"pausing: {ENTERED + 30 - now:.0f}s left"
        assert d.events == ()


def test_a_zero_pause_passes_at_once() -> None:
    rollout = cspec(SetWeightStep(25), PauseStep(0), SetWeightStep(50))
    advanced(decide(rollout, at(rollout, 1, weights=split(25)), AT_25, ENTERED), 1, ENTERED)


def test_an_indefinite_pause_holds_says_so_once_and_waits_for_a_promote() -> None:
    rollout = cspec(SetWeightStep(25), PauseStep(None), SetWeightStep(50))
    d = decide(rollout, at(rollout, 1, weights=split(25)), AT_25, ENTERED + 1)
    assert d.action == Wait("held")
    assert d.status.paused is not None and "promote" in d.status.paused
    assert kinds(d.events) == ["rollout.paused"]
    held = d.status
    # Days later: still held, silently; waiting for a human is not a stalled rollout.
    d = decide(rollout, held, AT_25, ENTERED + 86_400)
    assert (d.action, d.status, d.events) == (Wait("held"), held, ())
    d = decide(rollout, promote(held, full=False), AT_25, ENTERED + 86_401)
    advanced(d, 1, ENTERED + 86_401, promoted=True)
    assert d.status.weights == split(25)


# --- analysis steps ------------------------------------------------------------------

ANALYSED = cspec(SetWeightStep(25), AnalysisStep("errors"), SetWeightStep(50))
AT_ANALYSIS = at(ANALYSED, 1, weights=split(25))


def test_an_analysis_step_starts_its_run_once_and_waits_while_it_runs() -> None:
    d = decide(ANALYSED, AT_ANALYSIS, AT_25, ENTERED + 1)
    assert d.action == RunAnalysis("step-1", "errors")
    assert d.events == (Event("analysis.started", {"key": "step-1", "template": "errors"}),)
    for phase in ("pending", "running"):
        obs = runs(AT_25, step_1=AnalysisState(phase, "2 of 5 measurements"))
        d = decide(ANALYSED, AT_ANALYSIS, obs, ENTERED + 500)
        assert d.action == Wait("analysing")
        assert d.status.step_index == 1 and d.status.phase is Phase.PROGRESSING
        assert d.events == ()


def test_a_successful_analysis_completes_its_step() -> None:
    obs = runs(AT_25, step_1=AnalysisState("successful"))
    advanced(decide(ANALYSED, AT_ANALYSIS, obs, ENTERED + 7), 1, ENTERED + 7)


def test_the_run_key_is_the_step_index() -> None:
    rollout = cspec(AnalysisStep("a"), SetWeightStep(10), AnalysisStep("b"))
    d = decide(rollout, at(rollout, 2, weights=split(10)), observe(news(True), STABLE3), T0)
    assert d.action == RunAnalysis("step-2", "b")


@pytest.mark.parametrize(
    ("phase", "reason"), [("failed", "analysis-failed"), ("error", "analysis-error")]
)
def test_a_failed_analysis_returns_users_to_stable_first_then_stops_the_canary(
    phase: str, reason: str
) -> None:
    run = AnalysisState(phase, "error rate 31% > 5%", {"value": 0.31, "measurements": 3})
    obs = runs(AT_25, step_1=run)
    d = decide(ANALYSED, AT_ANALYSIS, obs, ENTERED + 9)
    assert d.action == SetWeights({OLD: 100})
    assert d.status.phase is Phase.ROLLING_BACK
    abort = d.status.abort
    assert abort is not None
    assert (abort.reason, abort.at) == (reason, ENTERED + 9)
    assert abort.evidence == {"run": "step-1", "value": 0.31, "measurements": 3}
    assert "step-1" in abort.message and "error rate 31%" in abort.message
    assert kinds(d.events) == ["release.aborted", "rollback.started", "traffic.switched"]
    d = decide(ANALYSED, d.status, obs, ENTERED + 10)
    assert d.action == StopInstances(("n1",), "rolled back")
    d = decide(ANALYSED, d.status, runs(observe((), STABLE3), step_1=run), ENTERED + 11)
    assert d.status.phase is Phase.ROLLED_BACK
    assert d.status.weights == {OLD: 100}


def test_an_inconclusive_analysis_holds_for_a_human_and_never_decides_by_itself() -> None:
    run = AnalysisState("inconclusive", "p99 between limits", {"p99": 0.41})
    obs = runs(AT_25, step_1=run)
    d = decide(ANALYSED, AT_ANALYSIS, obs, ENTERED + 9)
    assert d.action == Wait("held")
    assert d.status.paused is not None and "inconclusive" in d.status.paused
    assert kinds(d.events) == ["analysis.inconclusive"]
    details = d.events[0].details
    assert (details["key"], details["message"], details["evidence"]) == (
        "step-1",
        "p99 between limits",
        {"p99": 0.41},
    )
    held = d.status
    for later in (ENTERED + 10, ENTERED + 86_400):
        d = decide(ANALYSED, held, obs, later)
        assert (d.action, d.status, d.events) == (Wait("held"), held, ())
    assert resume(held) == held  # resume lifts a human's pause, not this one
    advanced(
        decide(ANALYSED, promote(held, full=False), obs, ENTERED + 99),
        1,
        ENTERED + 99,
        promoted=True,
    )
    d = manual_abort(ANALYSED, held, obs, "carol", ENTERED + 99)
    assert d.action == SetWeights({OLD: 100})
    assert d.status.abort is not None and d.status.abort.reason == "manual"


def test_the_failed_run_of_a_step_already_passed_does_not_abort() -> None:
    # Promoted past a failing analysis: a human's call that the run no longer binds.
    rollout = cspec(AnalysisStep("a"), PauseStep(60))
    obs = runs(observe((), STABLE3), step_0=AnalysisState("failed", "bad"))
    d = decide(rollout, at(rollout, 1), obs, ENTERED + 1)
    assert d.status.phase is Phase.PROGRESSING
    assert d.action == Wait("pausing")


# --- header routes -------------------------------------------------------------------


def test_a_header_route_step_sends_the_header_to_the_canary_then_passes() -> None:
    rollout = cspec(SetWeightStep(25), HeaderRouteStep("x-canary", "yes"), PauseStep(None))
    d = decide(rollout, at(rollout, 1, weights=split(25)), AT_25, ENTERED + 1)
    assert d.action == Wait("header route")
    assert d.status.header_route == ("x-canary", "yes")
    assert d.events == (Event("traffic.header_route", {"header": "x-canary", "value": "yes"}),)
    assert d.status.weights == split(25)
    d = decide(rollout, d.status, AT_25, ENTERED + 2)
    advanced(d, 1, ENTERED + 2)
    assert d.status.header_route == ("x-canary", "yes")


def test_full_promotion_drops_the_header_route() -> None:
    rollout = cspec(HeaderRouteStep("x-canary", "yes"), desired=1)
    status = at(rollout, 1, header_route=("x-canary", "yes"))
    d = decide(rollout, status, observe(news(True), STABLE3), ENTERED + 1)
    assert d.action == SetWeights({NEW: 100})
    assert d.status.header_route is None


def test_an_abort_takes_the_header_route_away_with_the_weights() -> None:
    rollout = cspec(SetWeightStep(25), HeaderRouteStep("x-canary", "yes"), PauseStep(None))
    status = at(rollout, 2, weights=split(25), header_route=("x-canary", "yes"))
    d = manual_abort(rollout, status, AT_25, "carol", ENTERED + 1)
    assert d.action == SetWeights({OLD: 100})
    assert d.status.header_route is None


# --- background analysis -------------------------------------------------------------


def test_background_analysis_starts_before_the_first_step_acts() -> None:
    rollout = cspec(SetWeightStep(20), background="slo")
    d = decide(rollout, at(rollout, 0), observe((), STABLE3), ENTERED + 1)
    assert d.action == RunAnalysis("background", "slo")
    assert d.events == (Event("analysis.started", {"key": "background", "template": "slo"}),)
    obs = runs(observe((), STABLE3), background=AnalysisState("running"))
    assert decide(rollout, at(rollout, 0), obs, ENTERED + 2).action == StartInstances(NEW, 1)


BG = cspec(SetWeightStep(25), PauseStep(60), PauseStep(None), background="slo")
BG_AT: dict[str, RolloutStatus] = {
    "set-weight": at(BG, 0, weights=split(25)),
    "timed-pause": at(BG, 1, weights=split(25)),
    "held": at(BG, 2, weights=split(25), paused="paused until promoted (`conveyor promote`)"),
    "manually-paused": pause(at(BG, 1, weights=split(25)), "bob"),
    "promoting": at(BG, 3, weights=split(25)),
    "verifying": at(BG, 3, phase=Phase.VERIFYING, weights={NEW: 100}, switched_at=ENTERED),
}


@pytest.mark.parametrize("where", list(BG_AT))
@pytest.mark.parametrize(
    ("phase", "reason"), [("failed", "analysis-failed"), ("error", "analysis-error")]
)
def test_a_failed_background_analysis_aborts_at_any_step(
    where: str, phase: str, reason: str
) -> None:
    obs = runs(AT_25, background=AnalysisState(phase, "5xx ratio 12%", {"ratio": 0.12}))
    d = decide(BG, BG_AT[where], obs, ENTERED + 1)
    assert d.status.phase is Phase.ROLLING_BACK
    assert d.status.abort is not None
    assert d.status.abort.reason == reason
    assert d.status.abort.evidence == {"run": "background", "ratio": 0.12}
    assert d.action == SetWeights({OLD: 100})  # users first; never a stable instance stopped


def test_an_inconclusive_background_analysis_holds_the_rollout() -> None:
    rollout = cspec(SetWeightStep(25), SetWeightStep(50), background="slo")
    obs = runs(AT_25, background=AnalysisState("inconclusive", "not enough data"))
    d = decide(rollout, at(rollout, 0, weights=split(25)), obs, ENTERED + 1)
    assert d.action == Wait("held")
    assert d.status.step_index == 0
    assert kinds(d.events) == ["analysis.inconclusive"]


def test_a_canary_without_steps_is_promoted_fully() -> None:
    rollout = cspec(desired=2)
    status = decide(rollout, RolloutStatus(weights={OLD: 100}), observe((), STABLE3), T0).status
    d = decide(rollout, status, observe((), STABLE3), T0 + 1)
    d = decide(rollout, d.status, observe((), STABLE3), T0 + 2)
    assert d.action == StartInstances(NEW, 2)


# --- the steps hash ------------------------------------------------------------------


def test_the_first_canary_tick_records_the_steps_hash_and_starts_step_0() -> None:
    rollout = cspec(SetWeightStep(10), PauseStep(None))
    status = decide(rollout, RolloutStatus(weights={OLD: 100}), observe((), STABLE3), T0).status
    d = decide(rollout, status, observe((), STABLE3), T0 + 1)
    assert d.action == Wait("steps changed")
    assert (d.status.steps_hash, d.status.step_index) == (rollout.strategy.steps_hash, 0)
    assert d.status.step_started_at == T0 + 1
    assert d.events == (Event("step.started", {"index": 0, "step": "set weight 10%"}),)


def test_a_changed_step_list_restarts_at_step_0() -> None:
    rollout = cspec(SetWeightStep(10), PauseStep(None), SetWeightStep(60))
    held = at(rollout, 2, weights=split(10), steps_hash="0123456789ab", paused="held")
    d = decide(rollout, held, observe(news(True), STABLE3), ENTERED + 5)
    assert d.action == Wait("steps changed")
    assert d.status.steps_hash == rollout.strategy.steps_hash
    assert (d.status.step_index, d.status.step_started_at, d.status.paused) == (
        0,
        ENTERED + 5,
        None,
    )
    assert kinds(d.events) == ["step.started"]


@pytest.mark.parametrize(
    "other",
    [
        (SetWeightStep(20), PauseStep(30)),
        (SetWeightStep(10), PauseStep(31)),
        (PauseStep(30), SetWeightStep(10)),
        (SetWeightStep(10), PauseStep(None)),
        (SetWeightStep(10), PauseStep(30), AnalysisStep("a")),
    ],
)
def test_any_change_to_the_steps_changes_the_hash(other: tuple[Step, ...]) -> None:
    steps = (SetWeightStep(10), PauseStep(30))
    assert cspec(*steps).strategy.steps_hash == cspec(*steps).strategy.steps_hash
    assert cspec(*steps).strategy.steps_hash != cspec(*other).strategy.steps_hash


# --- what humans may do --------------------------------------------------------------


def test_promote_skips_the_current_step_without_acting_on_it() -> None:
    rollout = cspec(SetWeightStep(50), PauseStep(None))
    d = decide(rollout, promote(at(rollout, 0), full=False), observe((), STABLE3), ENTERED + 1)
    advanced(d, 0, ENTERED + 1, promoted=True)
    assert d.status.weights == {OLD: 100}


def test_promote_on_the_last_step_leads_to_full_promotion() -> None:
    rollout = cspec(SetWeightStep(25), PauseStep(None), desired=2)
    d = decide(rollout, promote(at(rollout, 1, weights=split(25)), full=False), AT_25, ENTERED)
    advanced(d, 1, ENTERED, promoted=True)
    assert decide(rollout, d.status, AT_25, ENTERED + 1).action == StartInstances(NEW, 1)


def test_promote_full_jumps_to_full_promotion() -> None:
    rollout = cspec(SetWeightStep(25), AnalysisStep("a"), PauseStep(None), desired=3)
    status = promote(at(rollout, 1, weights=split(25), header_route=("x", "1")), full=True)
    d = decide(rollout, status, AT_25, ENTERED + 1)
    assert d.action == StartInstances(NEW, 2)
    assert d.status.weights == split(25)  # users stay put until the capacity is there
    d = decide(rollout, d.status, observe(news(True, True, False), STABLE3), ENTERED + 2)
    assert d.action == Wait("promoting")
    d = decide(rollout, d.status, observe(news(True, True, True), STABLE3), ENTERED + 3)
    assert d.action == SetWeights({NEW: 100})
    assert d.status.phase is Phase.VERIFYING
    assert d.status.switched_at == ENTERED + 3
    assert (d.status.promote, d.status.paused, d.status.header_route) == (None, None, None)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_manual_pause_holds_any_step_until_resume(index: int) -> None:
    rollout = cspec(SetWeightStep(50), PauseStep(5), AnalysisStep("a"))
    weights = {OLD: 100} if index == 0 else split(50)
    paused = pause(at(rollout, index, weights=weights), "bob")
    assert paused.paused == "paused by bob"
    obs = observe(news(True) if index else (), STABLE3)
    d = decide(rollout, paused, obs, ENTERED + 30)
    assert d.action == Wait("paused")
    assert d.status.message == "paused by bob"
    assert (d.status.step_index, d.status.weights, d.events) == (index, weights, ())
    resumed = resume(d.status)
    assert resumed.paused is None
    moved = decide(rollout, resumed, obs, ENTERED + 30).action
    assert (
        moved == [StartInstances(NEW, 2), Wait("step completed"), RunAnalysis("step-2", "a")][index]
    )


def test_promote_during_a_manual_pause_moves_on_and_lifts_it() -> None:
    # Argo's `promote` unpauses spec.paused and skips the step (cmd/promote getPatches).
    rollout = cspec(SetWeightStep(50), PauseStep(5))
    status = promote(pause(at(rollout, 0), "bob"), full=False)
    advanced(
        decide(rollout, status, observe((), STABLE3), ENTERED + 1), 0, ENTERED + 1, promoted=True
    )


def test_a_manual_pause_also_holds_the_final_promotion() -> None:
    rollout = cspec(SetWeightStep(25), desired=3)
    paused = pause(at(rollout, 1, weights=split(25)), "bob")
    d = decide(rollout, paused, AT_25, ENTERED + 1)
    assert d.action == Wait("paused")


def test_resuming_a_long_manual_pause_does_not_count_the_pause_as_a_stall() -> None:
    rollout = cspec(SetWeightStep(50), desired=4)  # progress_deadline 60
    status = at(rollout, 0, progress_at=ENTERED)
    paused = decide(rollout, pause(status, "bob"), observe(news(True, False), STABLE3), ENTERED + 5)
    assert paused.action == Wait("paused")
    d = decide(rollout, resume(paused.status), observe(news(True, False), STABLE3), ENTERED + 600)
    assert d.status.phase is Phase.PROGRESSING, d.status.abort


def test_resume_lifts_only_a_manual_pause() -> None:
    rollout = cspec(PauseStep(None))
    held = decide(rollout, at(rollout, 0), observe((), STABLE3), ENTERED).status
    assert held.paused is not None
    assert resume(held) == held
    assert resume(at(rollout, 0)) == at(rollout, 0)


# --- after the last step -------------------------------------------------------------


def test_after_the_last_step_promote_verify_succeed_then_stop_the_stable_after_the_delay() -> None:
    rollout = cspec(SetWeightStep(50), desired=2, scale_down_delay=30.0)
    status = at(rollout, 1, weights=split(50))
    d = decide(rollout, status, observe(news(True), STABLE3), ENTERED + 1)
    assert d.action == StartInstances(NEW, 1)
    full = observe(news(True, True), STABLE3)
    d = decide(rollout, d.status, full, ENTERED + 2)
    assert d.action == SetWeights({NEW: 100})
    switched = d.status
    assert (switched.phase, switched.switched_at) == (Phase.VERIFYING, ENTERED + 2)
    verified_at = switched.verify_until
    assert verified_at == ENTERED + 2 + rollout.triggers.verification
    assert decide(rollout, switched, full, verified_at - 1).status.phase is Phase.VERIFYING
    d = decide(rollout, switched, full, verified_at)
    assert d.status.phase is Phase.SUCCEEDED
    assert d.status.cleanup_at == ENTERED + 2 + 30.0
    assert kinds(d.events) == ["verification.passed", "release.succeeded"]
    warm = decide(rollout, d.status, full, ENTERED + 31)
    assert warm.action == Wait("old version warm")
    stop = decide(rollout, d.status, full, ENTERED + 32)
    assert stop.action == StopInstances(("o1", "o2", "o3"), "scale-down delay passed")
    done = decide(rollout, d.status, observe(news(True, True)), ENTERED + 33)
    assert done.status.done
    assert kinds(done.events) == ["old_version.scaled_down"]


def test_a_first_release_skips_the_steps() -> None:
    # Nothing to compare a canary with: like Argo's initial deploy, straight to full.
    rollout = cspec(SetWeightStep(10), PauseStep(None), desired=2, first=True)
    d = decide(rollout, at(rollout, 0, weights={}), observe(), ENTERED + 1)
    assert d.action == StartInstances(NEW, 2)


# --- aborts --------------------------------------------------------------------------

MID = cspec(SetWeightStep(25), PauseStep(600), SetWeightStep(50), desired=4)
MID_AT = at(MID, 1, weights=split(25))


@pytest.mark.parametrize(
    ("obs", "reason"),
    [
        (observe(news(True), STABLE3, traffic=(40, 10)), "error-rate"),
        (observe(news(True, restarts=2), STABLE3), "crash-loop"),
    ],
    ids=["error-rate", "crash-loop"],
)
def test_a_trigger_at_any_step_returns_users_first_then_stops_the_canary(
    obs: Observations, reason: str
) -> None:
    d = decide(MID, MID_AT, obs, ENTERED + 3)
    assert d.action == SetWeights({OLD: 100})
    assert d.status.abort is not None and d.status.abort.reason == reason
    d = decide(MID, d.status, obs, ENTERED + 4)
    assert d.action == StopInstances(("n1",), "rolled back")
    d = decide(MID, d.status, observe((), STABLE3), ENTERED + 5)
    assert (d.status.phase, d.status.weights) == (Phase.ROLLED_BACK, {OLD: 100})


def test_a_manual_abort_of_a_held_canary_takes_the_same_path() -> None:
    held = at(MID, 1, weights=split(25), paused="paused by bob")
    d = manual_abort(MID, held, AT_25, "carol", ENTERED + 3)
    assert d.action == SetWeights({OLD: 100})
    assert d.status.abort is not None and d.status.abort.actor == "carol"


def test_an_abort_before_the_canary_had_users_goes_straight_to_stopping_it() -> None:
    obs = observe(news(False, restarts=5), STABLE3)
    d = decide(MID, at(MID, 0), obs, ENTERED + 1)
    # Recorded before the evidence is destroyed (rollout.begin_rollback).
    assert d.action == Wait("rollback decided")
    assert decide(MID, d.status, obs, ENTERED + 2).action == StopInstances(("n1",), "rolled back")


# --- scenarios in the simulated world ------------------------------------------------


def simulate(
    steps: tuple[Step, ...],
    fault: sim.Fault = "healthy",
    *,
    analysis: Mapping[str, sim.Analysis] | None = None,
    desired: int = 4,
    **kwargs: Any,
) -> sim.Run:
    rollout = sim.make_spec("canary", desired=desired, stable_desired=3, steps=steps)
    return sim.simulate(rollout, fault, analysis=analysis, max_ticks=300, **kwargs)


def told(run: sim.Run) -> list[dict[str, int]]:
    return [dict(t.action.weights) for t in run.ticks if isinstance(t.action, SetWeights)]


def test_a_healthy_canary_walks_every_step_in_order() -> None:
    steps = (
        SetWeightStep(25),
        PauseStep(3),
        AnalysisStep("errors"),
        HeaderRouteStep("x-canary", "1"),
        SetWeightStep(50),
        PauseStep(None),
    )
    run = simulate(steps, on_hold="promote", patience=4)
    assert run.status.phase is Phase.SUCCEEDED
    assert told(run) == [
        {sim.NEW: 25, sim.STABLE: 75},
        {sim.NEW: 50, sim.STABLE: 50},
        {sim.NEW: 100},
    ]
    events = [e for t in run.ticks if not t.lost for e in t.events]
    completed = [e.details["index"] for e in events if e.kind == "step.completed"]
    assert completed == [0, 1, 2, 3, 4, 5]
    assert [t.human for t in run.ticks if t.human] == ["promote"]
    assert run.final_versions() == {sim.NEW: 4}


def test_an_inconclusive_run_stays_held_until_a_human_decides() -> None:
    steps = (SetWeightStep(25), AnalysisStep("latency"), SetWeightStep(75))
    scripts = {"step-1": sim.Analysis("inconclusive", after=3)}
    alone = simulate(steps, analysis=scripts)
    assert not alone.status.done
    assert alone.status.phase is Phase.PROGRESSING
    assert alone.status.paused is not None
    held_from = next(t.index for t in alone.ticks if sim.is_held(t.status))
    assert held_from < 50
    assert all(t.action == Wait("held") for t in alone.ticks[held_from:])
    events = [e.kind for t in alone.ticks for e in t.events]
    assert events.count("analysis.inconclusive") == 1
    promoted = simulate(steps, analysis=scripts, promote_at={200: False})
    assert promoted.status.phase is Phase.SUCCEEDED
    aborted = simulate(steps, analysis=scripts, abort_at={200})
    assert aborted.status.phase is Phase.ROLLED_BACK
    assert aborted.status.abort is not None and aborted.status.abort.reason == "manual"


def test_an_erroring_canary_is_caught_at_its_first_weight_that_gets_enough_requests() -> None:
    steps = (SetWeightStep(10), PauseStep(60), SetWeightStep(50))
    run = simulate(steps, "erroring")
    assert run.status.phase is Phase.ROLLED_BACK
    assert run.status.abort is not None and run.status.abort.reason == "error-rate"
    assert told(run) == [{sim.NEW: 10, sim.STABLE: 90}, {sim.STABLE: 100}]
    assert run.final_versions() == {sim.STABLE: 3}
