"""Each strategy's next step while nothing is wrong, driven through ``rollout.decide``.

Rows read as Argo Rollouts' table tests do: what runs, what the status says, what must
happen next. ``n*`` instances are of the new version, ``o*`` of the stable one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from conveyor.core.rollout import decide
from conveyor.core.state import (
    Action,
    CheckPreview,
    Event,
    Phase,
    SetWeights,
    StartInstances,
    StopInstances,
    Wait,
)

from .builders import NEW, OLD, T0, inst, news, observe, olds, progressing, spec

NOW = T0 + 5


def kinds(events: Sequence[Event]) -> list[str]:
    return [e.kind for e in events]


# --- recreate ------------------------------------------------------------------------


def test_recreate_stops_every_old_instance_first() -> None:
    d = decide(spec("recreate"), progressing(), observe(news(False), olds(True, False, True)), NOW)
    assert d.action == StopInstances(("o1", "o2", "o3"), "recreate: old version goes first")
    assert d.status.weights == {}
    assert d.status.progress_at == NOW
    assert d.events[-1].kind == "instances.stopped"
    assert d.events[-1].details == {"instances": ["o1", "o2", "o3"], "why": "recreate"}


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        ((), StartInstances(NEW, 3)),
        ((False,), StartInstances(NEW, 2)),
        ((False, False, False), Wait("0/3 new instances ready")),
        ((True, True, False), Wait("2/3 new instances ready")),
    ],
)
def test_recreate_starts_then_waits(new: tuple[bool, ...], expected: Action) -> None:
    status = progressing(weights={}, ready_seen=tuple(i.instance_id for i in news(*new) if i.ready))
    d = decide(spec("recreate"), status, observe(news(*new)), NOW)
    assert d.action == expected
    assert d.status.phase is Phase.PROGRESSING


def test_recreate_switches_when_all_ready() -> None:
    status = progressing(weights={}, ready_seen=("n1", "n2", "n3"))
    d = decide(spec("recreate", verification=15.0), status, observe(news(True, True, True)), NOW)
    assert d.action == SetWeights({NEW: 100})
    assert d.status.phase is Phase.VERIFYING
    assert d.status.weights == {NEW: 100}
    assert (d.status.switched_at, d.status.verify_until, d.status.progress_at) == (
        NOW,
        NOW + 15,
        NOW,
    )
    assert kinds(d.events) == ["traffic.switched", "verification.started"]
    assert d.events[0].details == {"to": NEW, "to_revision": 2, "weights": {NEW: 100}}


# --- rolling -------------------------------------------------------------------------

REPLACED = "rolling: replaced by ready new instances"


def replace(*ids: str) -> StopInstances:
    return StopInstances(ids, REPLACED)


def row(
    shape: str, new: str, old: str, weights: dict[str, int], expected: Action, name: str
) -> Any:
    """``shape`` is "desired stable_desired max_surge max_unavailable"; ``new`` and ``old``
    spell each instance's readiness, R ready and U not (``n1``/``o1`` first)."""
    return pytest.param(tuple(map(int, shape.split())), new, old, weights, expected, id=name)


@pytest.mark.parametrize(
    ("shape", "new", "old", "weights", "expected"),
    [
        row("3 3 1 0", "", "RRR", {}, SetWeights({OLD: 3}), "weights-follow-ready-first"),
        row("3 3 1 0", "", "RRR", {OLD: 100}, StartInstances(NEW, 1), "surge-1"),
        row("3 3 2 0", "", "RRR", {OLD: 1}, StartInstances(NEW, 2), "surge-2"),
        row("3 3 5 0", "", "RRR", {OLD: 1}, StartInstances(NEW, 3), "surge-over-desired"),
        row("3 3 2 1", "", "RRR", {OLD: 1}, StartInstances(NEW, 2), "surge-before-unavailable"),
        row("3 3 0 1", "", "RRR", {OLD: 1}, replace("o1"), "unavailable-1-removes-first"),
        row("3 3 0 2", "", "RRR", {OLD: 1}, replace("o1", "o2"), "unavailable-2"),
        row("3 3 0 5", "", "RRR", {OLD: 1}, replace("o1", "o2"), "never-below-one-ready"),
        row("3 2 0 1", "", "RR", {OLD: 1}, StartInstances(NEW, 1), "room-from-smaller-stable"),
        row("3 3 1 0", "U", "RRR", {OLD: 1}, Wait("0/3 new instances ready, 3 old left"), "wait"),
        row("3 3 1 0", "R", "RRR", {OLD: 1}, SetWeights({NEW: 1, OLD: 3}), "share-per-ready"),
        row("3 3 1 0", "R", "RRR", {NEW: 1, OLD: 3}, replace("o1"), "replace-one"),
        row("3 3 1 0", "R", "RRR", {NEW: 10, OLD: 30}, replace("o1"), "same-split-not-reapplied"),
        row("3 3 1 0", "R", "RR", {NEW: 1, OLD: 2}, StartInstances(NEW, 1), "next-surge"),
        row("3 3 1 0", "RU", "RRU", {NEW: 1, OLD: 2}, replace("o3"), "unready-old-goes-first"),
        row("3 5 1 0", "", "RRRRR", {OLD: 1}, replace("o1", "o2"), "scale-down-larger-stable"),
        row("5 1 1 0", "", "R", {OLD: 1}, StartInstances(NEW, 5), "scale-up-smaller-stable"),
        row("3 3 1 0", "RRR", "R", {NEW: 3, OLD: 1}, replace("o1"), "last-old"),
        row("3 3 1 0", "RRR", "", {NEW: 3, OLD: 1}, SetWeights({NEW: 3}), "drop-empty-stable"),
        row("3 3 1 0", "RRR", "", {NEW: 3}, SetWeights({NEW: 100}), "switch"),
        row(
            "2 2 1 0",
            "RRU",
            "",
            {NEW: 1},
            StopInstances(("n3",), "more instances than desired"),
            "excess-unready-new",
        ),
    ],
)
def test_rolling_step(
    shape: tuple[int, int, int, int],
    new: str,
    old: str,
    weights: dict[str, int],
    expected: Action,
) -> None:
    desired, stable, surge, unavailable = shape
    rollout = spec(
        "rolling",
        desired=desired,
        stable_desired=stable,
        max_surge=surge,
        max_unavailable=unavailable,
    )
    new_instances = news(*(c == "R" for c in new))
    seen = tuple(i.instance_id for i in new_instances if i.ready)
    status = progressing(weights=weights, ready_seen=seen)
    d = decide(rollout, status, observe(new_instances, olds(*(c == "R" for c in old))), NOW)
    assert d.action == expected
    if isinstance(expected, StopInstances) and expected.why == REPLACED:
        assert d.status.progress_at == NOW  # removing old capacity is progress
    if isinstance(expected, SetWeights):
        assert d.status.weights == expected.weights
        assert d.events[-1].kind in ("traffic.shifted", "verification.started")


def test_rolling_first_release_weights_only_the_new_version() -> None:
    rollout = spec("rolling", first=True, desired=2)
    d = decide(rollout, progressing(weights={}), observe(news(True, False)), NOW)
    assert d.action == SetWeights({NEW: 1})
    assert d.events[-1].kind == "traffic.shifted"


def test_rolling_excess_keeps_older_ready_instances() -> None:
    young = inst("n0", ready=True, started_at=T0 + 3)
    new = (inst("n1", started_at=T0), inst("n2", started_at=T0 + 1), young)
    status = progressing(weights={NEW: 3}, ready_seen=("n0", "n1", "n2"))
    d = decide(spec("rolling", desired=2), status, observe(new), NOW)
    assert d.action == StopInstances(("n0",), "more instances than desired")


@pytest.mark.parametrize(
    ("ready_for", "expected"),
    [
        # Ready 1 s of the 5 it must stay ready: users get it, the old instance stays.
        (
            (1.0,),
            Wait("1/2 new instances ready, 2 old left; 1 to stay ready 5s before an old one goes"),
        ),
        ((5.0,), StopInstances(("o1",), REPLACED)),
        # A runtime that cannot say since when counts a ready instance as available.
        ((None,), StopInstances(("o1",), REPLACED)),
        # Both new ready, only one long enough: one old goes, never both.
        ((9.0, 0.5), StopInstances(("o1",), REPLACED)),
    ],
    ids=["soaking", "soaked", "unknown-since", "one-of-two"],
)
def test_rolling_min_ready_holds_old_instances_until_new_ones_stay_ready(
    ready_for: tuple[float | None, ...], expected: Action
) -> None:
    rollout = spec("rolling", desired=2, stable_desired=2, min_ready=5.0)
    new = tuple(
        inst(f"n{i + 1}", ready_since=None if s is None else NOW - s)
        for i, s in enumerate(ready_for)
    )
    weights = {NEW: len(new), OLD: 2}
    status = progressing(weights=weights, ready_seen=tuple(i.instance_id for i in new))
    d = decide(rollout, status, observe(new, olds(True, True)), NOW)
    assert d.action == expected


def test_rolling_min_ready_delays_the_switch_until_every_new_instance_is_available() -> None:
    rollout = spec("rolling", desired=2, stable_desired=2, min_ready=5.0)
    new = (inst("n1", ready_since=NOW - 9), inst("n2", ready_since=NOW - 1))
    status = progressing(weights={NEW: 2}, ready_seen=("n1", "n2"))
    waiting = decide(rollout, status, observe(new), NOW)
    assert isinstance(waiting.action, Wait)
    assert decide(rollout, status, observe(new), NOW + 4).action == SetWeights({NEW: 100})


def test_rolling_without_surge_for_a_single_instance_makes_progress() -> None:
    rollout = spec("rolling", desired=1, stable_desired=1, max_surge=0, max_unavailable=1)
    d = decide(rollout, progressing(weights={OLD: 1}), observe((), olds(True)), NOW)
    assert not isinstance(d.action, Wait), d.action


# --- blue-green ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        ((), StartInstances(NEW, 3)),
        ((True,), StartInstances(NEW, 2)),
        ((True, False, False), Wait("1/3 new instances ready")),
        ((True, True, True, False), StopInstances(("n4",), "more instances than desired")),
        ((True, True, True), CheckPreview()),
    ],
)
def test_blue_green_brings_up_the_whole_new_version_beside_the_old(
    new: tuple[bool, ...], expected: Action
) -> None:
    status = progressing(ready_seen=tuple(i.instance_id for i in news(*new) if i.ready))
    d = decide(spec("blue_green"), status, observe(news(*new), olds(True, True, True)), NOW)
    assert d.action == expected
    assert d.status.phase is Phase.PROGRESSING
    assert d.status.weights == status.weights  # users stay on the old version meanwhile


def test_blue_green_switches_after_a_good_preview() -> None:
    status = progressing(ready_seen=("n1", "n2"), preview_failures=1)
    obs = observe(news(True, True), olds(True, True), preview=True)
    d = decide(spec("blue_green", desired=2), status, obs, NOW)
    assert d.action == SetWeights({NEW: 100})
    assert d.status.phase is Phase.VERIFYING
    assert d.status.switched_at == NOW
    assert d.events[0].details["preview"] == "200 OK"


def test_blue_green_retries_a_failed_preview_and_counts_it() -> None:
    status = progressing(ready_seen=("n1",), preview_failures=1)
    obs = observe(news(True), olds(True), preview=False)
    d = decide(spec("blue_green", desired=1), status, obs, NOW)
    assert d.action == CheckPreview()
    assert d.status.preview_failures == 2
    assert d.status.phase is Phase.PROGRESSING
    assert d.events[-1].kind == "preview.failed"
    assert d.events[-1].details == {"detail": "503 Service Unavailable", "failures": 2}


def test_blue_green_without_preview_check_switches_when_ready() -> None:
    status = progressing(ready_seen=("n1",))
    obs = observe(news(True), olds(True))
    d = decide(spec("blue_green", desired=1, preview_check=False), status, obs, NOW)
    assert d.action == SetWeights({NEW: 100})
    assert "preview" not in d.events[0].details


def test_blue_green_first_release() -> None:
    status = progressing(weights={}, ready_seen=("n1",))
    d = decide(
        spec("blue_green", first=True, desired=1), status, observe(news(True), preview=True), NOW
    )
    assert d.action == SetWeights({NEW: 100})
