"""The rollout state machine around the strategies: start, leftovers, readiness, triggers,
rollback, verification and clean-up (core/rollout.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from conveyor.core.model import InstanceObservation, VersionCounters
from conveyor.core.rollout import (
    PREVIEW_FAILURE_LIMIT,
    RESTORE_BACKOFF,
    decide,
    detect_failure,
    error_rate_abort,
    manual_abort,
    restore,
)
from conveyor.core.state import (
    Abort,
    Action,
    CheckPreview,
    Decision,
    Event,
    Observations,
    Phase,
    RolloutSpec,
    RolloutStatus,
    SetWeights,
    StartInstances,
    StopInstances,
    TrafficWindow,
    Wait,
)
from conveyor.core.traffic import window

from .builders import (
    NEW,
    OLD,
    T0,
    inst,
    news,
    observe,
    olds,
    progressing,
    rolling_back,
    spec,
    verifying,
)


def kinds(events: Sequence[Event]) -> list[str]:
    return [e.kind for e in events]


# --- start and housekeeping ----------------------------------------------------------


def test_pending_starts_the_rollout_and_records_the_plan() -> None:
    rollout = spec("blue_green", desired=2, error_rate=0.1, verification=20.0)
    obs = observe(news(False, restarts=9), olds(True), (inst("x1"),))  # ignored while pending
    d = decide(rollout, RolloutStatus(), obs, T0)
    assert d.action == Wait("rollout started")
    assert d.status.phase is Phase.PROGRESSING
    assert (d.status.started_at, d.status.progress_at) == (T0, T0)
    assert kinds(d.events) == ["rollout.started"]
    plan = d.events[0].details
    assert plan["strategy"] == "blue_green"
    assert plan["desired"] == 2
    assert plan["version"] == NEW
    assert plan["stable_revision"] == 1
    assert plan["rollback_triggers"]["error_rate"] == 0.1
    assert plan["rollback_triggers"]["verification"] == 20.0


@pytest.mark.parametrize(
    "status",
    [
        progressing(),
        verifying(),
        rolling_back(),
        progressing(phase=Phase.SUCCEEDED, cleanup_at=T0 + 100),
        progressing(phase=Phase.ROLLED_BACK),
    ],
    ids=lambda s: s.phase.value,
)
def test_leftovers_of_other_releases_are_stopped_first(status: RolloutStatus) -> None:
    # Even a crash-looping new version waits: leftovers share the port range and the router.
    obs = observe(news(True, restarts=10), olds(True), (inst("x2"), inst("x1", ready=False)))
    d = decide(spec(), status, obs, T0 + 1)
    assert d.action == StopInstances(("x1", "x2"), "left over from an earlier release")
    assert d.status == status
    assert d.events == (Event("instances.stopped", {"instances": ["x1", "x2"], "why": "leftover"}),)


def test_newly_ready_instances_are_recorded_once_as_progress() -> None:
    rollout = spec("rolling", desired=3)
    status = progressing(ready_seen=("n1",), weights={NEW: 1, OLD: 3})
    obs = observe((inst("n1"), inst("n3"), inst("n2"), inst("n4", ready=False)), olds(True, True))
    d = decide(rollout, status, obs, T0 + 9)
    assert d.events[0] == Event("instance.ready", {"instances": ["n2", "n3"]})
    assert d.status.ready_seen == ("n1", "n2", "n3")
    assert d.status.progress_at == T0 + 9
    again = decide(rollout, d.status.evolve(progress_at=T0 + 9), obs, T0 + 10)
    assert "instance.ready" not in kinds(again.events)


def test_instance_ready_is_noted_in_verification_too() -> None:
    status = verifying(ready_seen=("n1",))
    d = decide(spec(desired=2), status, observe(news(True, True)), T0 + 12)
    assert kinds(d.events) == ["instance.ready"]
    assert d.status.ready_seen == ("n1", "n2")


@pytest.mark.parametrize(
    "status",
    [progressing(phase=p) for p in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED)],
    ids=lambda s: s.phase.value,
)
def test_terminal_phases_do_nothing(status: RolloutStatus) -> None:
    d = decide(spec(), status, observe(news(False, restarts=5), olds(True)), T0 + 500)
    assert d == type(d)(Wait("nothing to do"), status)


# --- triggers ------------------------------------------------------------------------

OK_NEW = news(True, False)
P, V = progressing(), verifying()

# id: (observations, status, seconds after T0, reason or None); limits: 2 restarts,
# error rate evidently > 5% (core.judge) in windows of at least 20 requests, 60 s without
# progress, 3 failed previews.
TRIGGERS: dict[str, tuple[Observations, RolloutStatus, float, str | None]] = {
    "restarts-below-limit": (observe(news(False, restarts=1)), P, 1, None),
    "restarts-at-limit": (observe(news(False, restarts=2)), P, 1, "crash-loop"),
    "crash-loop-verifying": (observe((inst("n1"), inst("n2", restarts=7))), V, 11, "crash-loop"),
    "too-few-requests": (observe(OK_NEW, traffic=(19, 19)), P, 1, None),
    "rate-at-threshold": (observe(OK_NEW, traffic=(20, 1)), P, 1, None),
    "rate-above-threshold": (observe(OK_NEW, traffic=(20, 4)), P, 1, "error-rate"),
    "rate-above-threshold-not-evident": (observe(OK_NEW, traffic=(20, 2)), P, 1, None),
    "error-rate-verifying": (observe(OK_NEW, traffic=(1000, 80)), V, 11, "error-rate"),
    "just-above-in-many-not-evident": (observe(OK_NEW, traffic=(1000, 51)), V, 11, None),
    "deadline-not-exceeded": (observe(OK_NEW), P, 60, None),
    "deadline-exceeded": (observe(OK_NEW), P, 60.5, "progress-deadline"),
    "deadline-from-last-progress": (observe(OK_NEW), P.evolve(progress_at=T0 + 50), 100, None),
    "no-deadline-verifying": (observe(OK_NEW), V, 500, None),
    "no-progress-clock": (observe(OK_NEW), P.evolve(progress_at=None), 500, None),
    "preview-below-limit": (observe(OK_NEW), P.evolve(preview_failures=2), 1, None),
    "preview-at-limit": (observe(OK_NEW), P.evolve(preview_failures=3), 1, "preview-failed"),
    "crash-loop-first": (
        observe(news(False, restarts=3), traffic=(100, 100)),
        P.evolve(preview_failures=9),
        500,
        "crash-loop",
    ),
    "error-rate-second": (
        observe(OK_NEW, traffic=(100, 100)),
        P.evolve(preview_failures=9),
        500,
        "error-rate",
    ),
    "deadline-before-preview": (
        observe(OK_NEW),
        P.evolve(preview_failures=9),
        500,
        "progress-deadline",
    ),
    "launch-failed": (
        dataclasses.replace(observe(OK_NEW), launch_failure="secret X is not set"),
        P,
        1,
        "launch-failed",
    ),
    "launch-failed-first": (  # it can never start: no need to wait for anything else
        dataclasses.replace(observe(news(False, restarts=3)), launch_failure="no such program"),
        V,
        1,
        "launch-failed",
    ),
}


@pytest.mark.parametrize(("obs", "status", "after", "reason"), TRIGGERS.values(), ids=TRIGGERS)
def test_detect_failure(
    obs: Observations, status: RolloutStatus, after: float, reason: str | None
) -> None:
    rollout = spec("rolling", max_restarts=2, error_rate=0.05, min_requests=20)
    assert PREVIEW_FAILURE_LIMIT == 3
    abort = detect_failure(rollout, status, obs, T0 + after)
    assert (abort.reason if abort else None) == reason
    if abort is not None:
        assert abort.at == T0 + after
        assert abort.actor == "conveyor"


def test_crash_loop_evidence_names_the_instances() -> None:
    crashing = inst("n2", ready=False, state="backoff", restarts=4, last_probe="connection refused")
    abort = detect_failure(spec(max_restarts=3), progressing(), observe((inst("n1"), crashing)), T0)
    assert abort is not None
    # 4 restarts and it is down again right now: 5 crashes.
    assert abort.message == "1 new instance(s) crashed 5 time(s) (limit 3)"
    assert abort.evidence["instances"] == [
        {
            "instance": "n2",
            "state": "backoff",
            "ready": False,
            "restarts": 4,
            "last_exit_code": None,
            "last_probe": "connection refused",
            "recent_probes": [],
        }
    ]


def test_error_rate_evidence() -> None:
    obs = observe(OK_NEW, traffic=(40, 10))
    abort = detect_failure(spec(error_rate=0.05, min_requests=20), progressing(), obs, T0)
    assert abort is not None
    assert abort.message == (
        "25.0% of 40 requests to the new version failed over 10.0s "
        "(limit 5.0%; P(rate > 5.0%) = 1.000, needed 0.939)"
    )
    assert abort.evidence == {
        "requests": 40,
        "errors": 10,
        "error_rate": 0.25,
        "threshold": 0.05,
        "window_seconds": 10.0,
        "min_requests": 20,
        "look": 1.0,  # no lifetime count: judged as the version's first window
        "fail_at": 0.939207,
        "probability_above": 0.999992,
        "test": "beta posterior P(rate > limit), Jeffreys prior, alpha spent per window",
    }


def test_error_rate_one_failed_request_never_rolls_back() -> None:
    """The sequential trigger needs two failures, whatever the window holds."""
    for requests in (1, 2, 5, 40):
        obs = observe(OK_NEW, traffic=(requests, 1))
        assert detect_failure(spec(), progressing(), obs, T0) is None


def test_error_rate_two_failures_in_a_young_window_roll_back_at_once() -> None:
    """20% errors at 5% of 50 req/s: two errors among its first ten requests are enough."""
    obs = observe(OK_NEW, traffic=(10, 2))
    abort = detect_failure(spec(), progressing(), obs, T0)
    assert abort is not None and abort.reason == "error-rate"
    assert abort.evidence["min_requests"] == 1  # the default: no fixed count to wait for


def test_error_rate_an_old_version_needs_more_evidence() -> None:
    """The same window, for a version that has served 60 windows' worth: not a rollback."""
    young = TrafficWindow(20, 4, 10.0, lifetime_requests=20)
    old = TrafficWindow(20, 4, 10.0, lifetime_requests=1200)
    rollout = spec()
    assert detect_failure(rollout, progressing(), observe(OK_NEW, traffic=None), T0) is None
    assert error_rate_abort(rollout.triggers, young, T0) is not None
    abort = error_rate_abort(rollout.triggers, old, T0)
    assert abort is None
    outage = error_rate_abort(rollout.triggers, TrafficWindow(20, 15, 10.0, 1200), T0)
    assert outage is not None and outage.evidence["look"] == 60.0


def test_error_rate_window_carries_the_version_lifetime() -> None:
    samples = [
        (T0, VersionCounters(requests=1000, responses_5xx=5)),
        (T0 + 10, VersionCounters(requests=1020, responses_5xx=9)),
    ]
    traffic = window(samples, T0 + 10, 10.0)
    assert traffic == TrafficWindow(20, 4, 10.0, lifetime_requests=1020)
    assert error_rate_abort(spec().triggers, traffic, T0 + 10) is None  # 51st window


def test_progress_deadline_evidence() -> None:
    obs = observe(news(True, False))
    abort = detect_failure(spec(desired=2, progress_deadline=30), progressing(), obs, T0 + 31)
    assert abort is not None
    assert abort.message == "no progress for 31s (deadline 30s): 1/2 new instances ready"
    assert abort.evidence["ready"] == 1
    assert [i["instance"] for i in abort.evidence["instances"]] == ["n2"]


# --- rollback ------------------------------------------------------------------------


def test_a_trigger_turns_the_rollout_around_and_restores_traffic_at_once() -> None:
    status = verifying(ready_seen=("n1", "n2"))
    obs = observe(news(True, True, True), olds(True, True), traffic=(50, 50))
    d = decide(spec("blue_green", stable_desired=2), status, obs, T0 + 12)
    assert d.action == SetWeights({OLD: 100})
    assert d.status.phase is Phase.ROLLING_BACK
    assert d.status.weights == {OLD: 100}
    assert d.status.abort is not None and d.status.abort.reason == "error-rate"
    assert d.status.message.startswith("rolling back to r1: 100.0% of 50 requests")
    assert kinds(d.events) == [
        "instance.ready",
        "release.aborted",
        "rollback.started",
        "traffic.switched",
    ]
    failed, started, switched = d.events[1:]
    assert failed.details["reason"] == "error-rate"
    assert failed.details["to_revision"] == 1
    assert failed.details["evidence"]["errors"] == 50
    assert started.details == {"reason": "error-rate", "to_revision": 1}
    assert switched.details["rollback"] is True
    assert switched.details["seconds_after_abort"] == 0.0


RB, DONE, FAIL = Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED

# id: (new, old readiness as R/U, stored weights, seconds after the abort, action, phase);
# 3 stable instances wanted, the abort happened at T0 + 20, the deadline is 60 s.
ROLLBACK: dict[str, tuple[str, str, dict[str, int], float, Action, Phase]] = {
    "traffic-first": ("RR", "RRR", {NEW: 100}, 1, SetWeights({OLD: 100}), RB),
    "traffic-first-with-one-ready": ("RR", "RUU", {NEW: 1, OLD: 2}, 1, SetWeights({OLD: 100}), RB),
    "restart-removed-stable": ("RR", "R", {OLD: 100}, 1, StartInstances(OLD, 2), RB),
    "no-stable-left-start-first": ("RR", "", {NEW: 100}, 1, StartInstances(OLD, 3), RB),
    "new-serves-until-stable-ready": ("RR", "UUU", {NEW: 100}, 2, Wait("restoring stable"), RB),
    "stop-new-once-stable-ready": (
        "RU",
        "RUU",
        {OLD: 100},
        2,
        StopInstances(("n1", "n2"), "rolled back"),
        RB,
    ),
    "wait-for-all-stable": ("", "RRU", {OLD: 100}, 2, Wait("restoring stable"), RB),
    "rolled-back": ("", "RRR", {OLD: 3}, 3, Wait("rolled back to r1"), DONE),
    "deadline-not-yet": ("", "RUU", {OLD: 100}, 60, Wait("restoring stable"), RB),
    "restoring-exceeds-deadline": (
        "",
        "RUU",
        {OLD: 100},
        60.5,
        Wait("rollback could not restore r1 within 60s: 1/3 ready"),
        FAIL,
    ),
    "stable-never-ready": (
        "R",
        "UUU",
        {NEW: 100},
        61,
        Wait("rollback could not restore r1 within 60s: 0/3 ready"),
        FAIL,
    ),
}


@pytest.mark.parametrize(
    ("new", "old", "weights", "after", "expected", "phase"), ROLLBACK.values(), ids=ROLLBACK
)
def test_roll_back_step(
    new: str,
    old: str,
    weights: dict[str, int],
    after: float,
    expected: Action,
    phase: Phase,
) -> None:
    status = rolling_back(at=T0 + 20, weights=weights)
    now = T0 + 20 + after
    obs = observe(news(*(c == "R" for c in new)), olds(*(c == "R" for c in old)))
    d = decide(spec(stable_desired=3, progress_deadline=60), status, obs, now)
    assert d.action == expected
    assert d.status.phase is phase
    assert d.status.abort == status.abort
    if phase.terminal:
        assert d.status.finished_at == now
        assert d.status.done
        kind = "release.rolled_back" if phase is Phase.ROLLED_BACK else "release.failed"
        assert kinds(d.events) == [kind]
        assert d.events[0].details["reason"] == "crash-loop"
        assert d.events[0].details["seconds_since_abort"] == after


def decide_until(
    rollout: RolloutSpec, status: RolloutStatus, obs: Observations, now: float, kind: type
) -> tuple[Decision, list[Event]]:
    """Decide (committing each status, the world unchanged) until an action of ``kind``.

    A rollback may first commit its abort with a Wait before it touches any instance; these
    tests care about the order of effects, not about that bookkeeping tick.
    """
    events: list[Event] = []
    for _ in range(3):
        d = decide(rollout, status, obs, now)
        events.extend(d.events)
        if isinstance(d.action, kind):
            return d, events
        assert isinstance(d.action, Wait), d.action
        status = d.status
    raise AssertionError(f"no {kind.__name__} within 3 ticks")


def test_first_release_rollback_stops_new_then_fails() -> None:
    rollout = spec("rolling", first=True, desired=2)
    status = progressing(weights={NEW: 2})
    obs = observe(news(True, False, True), traffic=(30, 30))
    d, events = decide_until(rollout, status, obs, T0 + 5, StopInstances)
    assert d.action == StopInstances(("n1", "n2", "n3"), "first release failed")
    assert d.status.weights == {}
    assert d.status.phase is Phase.ROLLING_BACK
    assert d.status.message.startswith("rolling back to nothing (first release)")
    assert kinds(events)[-3:] == ["release.aborted", "rollback.started", "instances.stopped"]
    d2 = decide(rollout, d.status, observe(), T0 + 6)
    assert d2.action == Wait("failed; there is no earlier release to return to")
    assert d2.status.phase is Phase.FAILED
    assert d2.status.done
    assert d2.events[0].details["reason"] == "error-rate"


def test_a_failed_first_release_keeps_no_weights() -> None:
    rollout = spec("blue_green", first=True, desired=1)
    d = manual_abort(rollout, verifying(), observe(), "alice", T0 + 12)
    assert d.status.phase is Phase.FAILED
    assert d.status.weights == {}


def test_manual_abort_takes_the_same_path() -> None:
    rollout = spec("rolling", stable_desired=2)
    status = progressing(weights={NEW: 1, OLD: 1}, ready_seen=("n1",))
    obs = observe(news(True, False), olds(True))
    d = manual_abort(rollout, status, obs, "alice", T0 + 7)
    assert d.action == SetWeights({OLD: 100})
    assert d.status.abort == Abort("manual", "rollback requested by alice", T0 + 7, actor="alice")
    assert kinds(d.events) == ["release.aborted", "rollback.started", "traffic.switched"]
    assert d.events[0].details["actor"] == "alice"
    d2 = decide(rollout, d.status, obs, T0 + 8)
    assert d2.action == StartInstances(OLD, 1)


@pytest.mark.parametrize(
    ("status", "rolls_back"),
    [
        (progressing(weights={NEW: 1, OLD: 1}, ready_seen=("n1",)), True),
        (verifying(), True),
        (progressing(phase=Phase.ROLLING_BACK), False),  # already on its way back
        (progressing(phase=Phase.SUCCEEDED), False),  # finished before the request arrived
    ],
)
def test_a_rollback_requested_through_the_store_is_a_manual_abort(
    status: RolloutStatus, rolls_back: bool
) -> None:
    """A standby server writes ``rollback_requested``; the driving server's decide carries
    it out as the same manual abort, and clears it either way."""
    rollout = spec("rolling", stable_desired=2)
    obs = observe(news(True, False), olds(True))
    d = decide(rollout, status.evolve(rollback_requested="alice"), obs, T0 + 7)
    assert d.status.rollback_requested is None
    if rolls_back:
        assert d == manual_abort(rollout, status, obs, "alice", T0 + 7)
    else:
        assert d == decide(rollout, status, obs, T0 + 7)
    assert "rollback_requested" not in status.to_json()
    requested = status.evolve(rollback_requested="alice")
    assert RolloutStatus.from_json(requested.to_json()) == requested


def test_manual_abort_of_a_switched_blue_green_is_a_traffic_switch() -> None:
    rollout = spec("blue_green", stable_desired=2, desired=2)
    obs = observe(news(True, True), olds(True, True))
    d = manual_abort(rollout, verifying(), obs, "bob", T0 + 12)
    assert d.action == SetWeights({OLD: 100})
    d2 = decide(rollout, d.status, obs, T0 + 13)
    assert d2.action == StopInstances(("n1", "n2"), "rolled back")
    d3 = decide(rollout, d2.status, observe((), olds(True, True)), T0 + 14)
    assert d3.status.phase is Phase.ROLLED_BACK
    assert d3.events[0].details["reason"] == "manual"


def test_preview_failures_end_in_a_rollback() -> None:
    rollout = spec("blue_green", desired=1, stable_desired=1)
    status = progressing(ready_seen=("n1",))
    obs = observe(news(True), olds(True), preview=False)
    for failures in range(1, PREVIEW_FAILURE_LIMIT + 1):
        d = decide(rollout, status, obs, T0 + failures)
        assert d.action == CheckPreview()
        assert d.status.preview_failures == failures
        status = d.status
    d, _ = decide_until(rollout, status, obs, T0 + 10, StopInstances)
    assert d.status.phase is Phase.ROLLING_BACK
    assert d.status.abort is not None and d.status.abort.reason == "preview-failed"
    # Users were still on the old version, so no traffic step comes before removing the new.
    assert d.action == StopInstances(("n1",), "rolled back")


# --- verification and clean-up -------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "now", "expected"),
    [
        ((True, True, True), T0 + 24.9, Wait("verifying")),
        ((True, True), T0 + 12, StartInstances(NEW, 1)),  # lost capacity is replaced
        ((True, True, True, False), T0 + 12, StopInstances(("n4",), "more instances than desired")),
        ((True, True, True), T0 + 25, Wait("succeeded")),
    ],
)
def test_verification_window(new: tuple[bool, ...], now: float, expected: object) -> None:
    status = verifying(ready_seen=tuple(f"n{i + 1}" for i, r in enumerate(new) if r))
    d = decide(spec("rolling"), status, observe(news(*new)), now)
    assert d.action == expected
    assert d.status.weights == {NEW: 100}


def test_success_records_duration_and_traffic() -> None:
    status = verifying(ready_seen=("n1", "n2", "n3"))
    d = decide(spec("rolling"), status, observe(news(True, True, True), traffic=(300, 2)), T0 + 30)
    assert d.status.phase is Phase.SUCCEEDED
    assert d.status.finished_at == T0 + 30
    assert d.status.cleanup_at is None
    assert d.status.done
    assert kinds(d.events) == ["verification.passed", "release.succeeded"]
    assert d.events[0].details == {
        "traffic": {"requests": 300, "errors": 2, "window_seconds": 10.0}
    }
    assert d.events[1].details == {"duration_seconds": 30.0}


def blue_green_cycle(rollout: RolloutSpec) -> list[tuple[float, Action, RolloutStatus]]:
    """Drive a switched blue-green release through verification and clean-up."""
    status = verifying(ready_seen=("n1", "n2"))
    old = olds(True, True)
    trail: list[tuple[float, Action, RolloutStatus]] = []
    for now in (T0 + 24, T0 + 25, T0 + 30, T0 + 39.9, T0 + 40, T0 + 41):
        d = decide(rollout, status, observe(news(True, True), old), now)
        if isinstance(d.action, StopInstances):
            old = ()
        status = d.status
        trail.append((now, d.action, status))
    return trail


def test_blue_green_keeps_the_old_version_warm_then_scales_it_down() -> None:
    trail = blue_green_cycle(spec("blue_green", desired=2, stable_desired=2, scale_down_delay=30))
    by_time = {now: (action, status) for now, action, status in trail}
    assert by_time[T0 + 24][0] == Wait("verifying")
    action, status = by_time[T0 + 25]
    assert action == Wait("succeeded")
    assert status.phase is Phase.SUCCEEDED
    assert status.cleanup_at == T0 + 10 + 30  # switched_at + scale_down_delay
    assert not status.done
    assert status.message == "succeeded; old version kept warm"
    assert by_time[T0 + 30][0] == Wait("old version warm")
    assert by_time[T0 + 30][1].message == "succeeded; old version kept warm for 10s more"
    assert by_time[T0 + 39.9][0] == Wait("old version warm")
    assert by_time[T0 + 40][0] == StopInstances(("o1", "o2"), "scale-down delay passed")
    assert not by_time[T0 + 40][1].done
    action, status = by_time[T0 + 41]
    assert action == Wait("done")
    assert status.cleanup_at is None
    assert status.done
    assert status.message == "succeeded"


def test_blue_green_scale_down_event() -> None:
    status = progressing(phase=Phase.SUCCEEDED, cleanup_at=T0 + 40)
    d = decide(spec("blue_green"), status, observe(news(True)), T0 + 41)
    assert d.events == (Event("old_version.scaled_down", {}),)


def test_blue_green_without_old_instances_needs_no_clean_up() -> None:
    status = verifying(ready_seen=("n1",))
    d = decide(spec("blue_green", desired=1), status, observe(news(True)), T0 + 26)
    assert d.status.phase is Phase.SUCCEEDED
    assert d.status.cleanup_at is None
    assert d.status.done


def test_clean_up_resumes_from_the_stored_deadline() -> None:
    """A controller restarted during the warm period resumes clean-up from the stored time."""
    status = progressing(phase=Phase.SUCCEEDED, cleanup_at=T0 + 40)
    back = RolloutStatus.from_json(status.to_json())
    d = decide(spec("blue_green"), back, observe(news(True), olds(True)), T0 + 40)
    assert isinstance(d.action, StopInstances)


# --- restore: the last succeeded release kept at its size -----------------------------------


def _inst(version: str, state: str, n: int) -> InstanceObservation:
    return InstanceObservation(
        instance_id=f"{version}-{n}",
        service="s",
        env="e",
        version=version,
        revision=1,
        host="127.0.0.1",
        port=1000 + n,
        pid=n,
        state=state,  # type: ignore[arg-type]
        ready=state == "running",
        restarts=0,
        started_at=0.0,
    )


@pytest.mark.parametrize(
    ("instances", "desired", "last", "expected"),
    [
        pytest.param([], 2, None, StartInstances("v1", 2), id="after-down"),
        pytest.param([_inst("v1", "running", 1)], 2, None, StartInstances("v1", 1), id="one-lost"),
        pytest.param(
            [_inst("v1", "running", 1), _inst("v1", "running", 2)], 2, None, None, id="complete"
        ),
        pytest.param(
            [_inst("v1", "backoff", 1), _inst("v1", "starting", 2)],
            2,
            None,
            None,
            id="coming-back",
        ),
        pytest.param(
            [_inst("v1", "failed", 1), _inst("v1", "stopped", 2)],
            2,
            None,
            StartInstances("v1", 2),
            id="gone",
        ),
        pytest.param([_inst("v0", "running", 1)], 1, None, StartInstances("v1", 1), id="others"),
        pytest.param([], 2, 100.0, None, id="backing-off"),
        pytest.param([], 2, 100.0 - RESTORE_BACKOFF, StartInstances("v1", 2), id="backoff-over"),
    ],
)
def test_restore(
    instances: list[InstanceObservation],
    desired: int,
    last: float | None,
    expected: StartInstances | None,
) -> None:
    assert restore("v1", desired, instances, last_restore=last, now=100.0) == expected


def test_a_launch_failure_rolls_back_with_the_runtimes_reason() -> None:
    obs = dataclasses.replace(observe(news(True)), launch_failure="secret DB reads $X, unset")
    d = decide(spec(), progressing(), obs, T0 + 2)
    assert d.status.phase is Phase.ROLLING_BACK
    failed = next(e for e in d.events if e.kind == "release.aborted")
    assert failed.details["reason"] == "launch-failed"
    assert "secret DB reads $X, unset" in failed.details["message"]
