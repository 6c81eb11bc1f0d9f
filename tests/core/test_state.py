"""Phases and the JSON form of specs and statuses (core/state.py).

The status is the only memory a restarted controller has, so a round trip through real JSON
text must give back an equal value, abort evidence included.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.state import (
    Abort,
    Phase,
    RolloutSpec,
    RolloutStatus,
    StrategySpec,
    TrafficWindow,
    Triggers,
)

from .builders import NEW, OLD, spec


@pytest.mark.parametrize(
    ("phase", "terminal", "in_progress"),
    [
        (Phase.PENDING, False, True),
        (Phase.PROGRESSING, False, True),
        (Phase.VERIFYING, False, True),
        (Phase.ROLLING_BACK, False, True),
        (Phase.SUCCEEDED, True, False),
        (Phase.ROLLED_BACK, True, False),
        (Phase.FAILED, True, False),
    ],
)
def test_phase_classes(phase: Phase, terminal: bool, in_progress: bool) -> None:
    assert phase.terminal is terminal
    assert phase.in_progress is in_progress


@pytest.mark.parametrize(
    ("phase", "cleanup_at", "done"),
    [
        (Phase.SUCCEEDED, None, True),
        (Phase.SUCCEEDED, 1030.0, False),  # old version still warm, to be scaled down
        (Phase.ROLLED_BACK, None, True),
        (Phase.FAILED, None, True),
        (Phase.VERIFYING, None, False),
        (Phase.ROLLING_BACK, None, False),
        (Phase.PENDING, None, False),
    ],
)
def test_status_done(phase: Phase, cleanup_at: float | None, done: bool) -> None:
    assert RolloutStatus(phase=phase, cleanup_at=cleanup_at).done is done


@pytest.mark.parametrize(
    ("requests", "errors", "rate"), [(0, 0, 0.0), (0, 3, 0.0), (10, 1, 0.1), (4, 4, 1.0)]
)
def test_traffic_window_error_rate(requests: int, errors: int, rate: float) -> None:
    assert TrafficWindow(requests, errors, 10.0).error_rate == rate


def _through_json(data: object) -> object:
    return json.loads(json.dumps(data))


@pytest.mark.parametrize(
    "rollout",
    [
        spec("rolling"),
        spec("blue_green", preview_check=False, scale_down_delay=0.0),
        spec("recreate", first=True, error_rate=0.5, min_requests=1, max_restarts=0),
    ],
)
def test_spec_round_trip(rollout: RolloutSpec) -> None:
    data = _through_json(rollout.to_json())
    assert isinstance(data, dict)
    assert RolloutSpec.from_json(data) == rollout
    assert data["strategy"]["kind"] == rollout.strategy.kind


def test_status_default_round_trip() -> None:
    data = _through_json(RolloutStatus().to_json())
    assert isinstance(data, dict)
    assert RolloutStatus.from_json(data) == RolloutStatus()
    assert data["phase"] == "pending"


def test_status_with_abort_round_trip() -> None:
    status = RolloutStatus(
        phase=Phase.ROLLING_BACK,
        started_at=1.5,
        progress_at=2.5,
        ready_seen=("n1", "n2"),
        weights={OLD: 100, NEW: 0},
        switched_at=3.0,
        verify_until=18.0,
        preview_failures=2,
        abort=Abort(
            reason="crash-loop",
            message="1 new instance(s) crashed",
            at=4.25,
            evidence={"instances": [{"instance": "n1", "restarts": 3, "last_probe": None}]},
            actor="alice",
        ),
        message="rolling back",
    )
    data = _through_json(status.to_json())
    assert isinstance(data, dict)
    back = RolloutStatus.from_json(data)
    assert back == status
    assert isinstance(back.abort, Abort)
    assert back.phase is Phase.ROLLING_BACK


def test_status_from_older_json_without_optional_lists() -> None:
    data = RolloutStatus(phase=Phase.PROGRESSING).to_json()
    del data["ready_seen"], data["weights"]
    assert RolloutStatus.from_json(data) == RolloutStatus(phase=Phase.PROGRESSING)


times = st.none() | st.floats(0, 2e9, allow_nan=False)
json_scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=10)
evidence = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=6,
    ),
    max_size=4,
)
aborts = st.builds(
    Abort,
    reason=st.sampled_from(["crash-loop", "progress-deadline", "error-rate", "manual"]),
    message=st.text(max_size=30),
    at=st.floats(0, 2e9, allow_nan=False),
    evidence=evidence,
    actor=st.text(min_size=1, max_size=10),
)
statuses = st.builds(
    RolloutStatus,
    phase=st.sampled_from(Phase),
    started_at=times,
    progress_at=times,
    ready_seen=st.lists(st.text(min_size=1, max_size=6), max_size=4).map(tuple),
    weights=st.dictionaries(st.text(min_size=1, max_size=11), st.integers(0, 100), max_size=3),
    switched_at=times,
    verify_until=times,
    cleanup_at=times,
    preview_failures=st.integers(0, 5),
    abort=st.none() | aborts,
    finished_at=times,
    message=st.text(max_size=40),
)
specs = st.builds(
    RolloutSpec,
    release_id=st.integers(1, 10**6),
    revision=st.integers(1, 10**4),
    version=st.text(min_size=1, max_size=11),
    desired=st.integers(0, 20),
    strategy=st.builds(
        StrategySpec,
        kind=st.sampled_from(["recreate", "rolling", "blue_green"]),
        max_surge=st.integers(0, 5),
        max_unavailable=st.integers(0, 5),
        scale_down_delay=st.floats(0, 600),
        auto_promote=st.booleans(),
    ),
    progress_deadline=st.floats(1, 3600),
    triggers=st.builds(
        Triggers,
        error_rate=st.floats(0, 1),
        min_requests=st.integers(0, 1000),
        window=st.floats(1, 600),
        max_restarts=st.integers(0, 10),
        verification=st.floats(0, 600),
    ),
    stable_version=st.none() | st.text(min_size=1, max_size=11),
    stable_revision=st.none() | st.integers(1, 10**4),
    stable_desired=st.integers(0, 20),
    preview_check=st.booleans(),
)


@given(statuses)
def test_status_round_trip_property(status: RolloutStatus) -> None:
    data = _through_json(status.to_json())
    assert isinstance(data, dict)
    assert RolloutStatus.from_json(data) == status


@given(specs)
def test_spec_round_trip_property(rollout: RolloutSpec) -> None:
    data = _through_json(rollout.to_json())
    assert isinstance(data, dict)
    assert RolloutSpec.from_json(data) == rollout


def test_to_json_does_not_alias_the_status() -> None:
    status = RolloutStatus(weights={OLD: 100}, ready_seen=("n1",))
    data = status.to_json()
    data["weights"][NEW] = 5
    data["ready_seen"].append("n2")
    assert status.weights == {OLD: 100}
    assert status.ready_seen == ("n1",)
