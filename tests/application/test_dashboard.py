"""The dashboard's pure parts: drift between environments, the pipeline DAG, chart rates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.application.dashboard import Cell, dag_columns, drift_of, filter_events
from conveyor.application.traffic_history import series_of
from conveyor.core.model import VersionCounters
from conveyor.store.records import EventRecord

ENVS = ("dev", "staging", "production")


def _cell(env: str, commit: str | None, phase: str = "succeeded") -> Cell:
    return Cell(
        service="web",
        env=env,
        release_id=1,
        revision=1,
        commit=commit,
        phase=phase,
        age=0.0,
        ready=1,
        desired=1,
        serving_revision=1 if commit else None,
        serving_commit=commit,
    )


@pytest.mark.parametrize(
    ("commits", "expected"),
    [
        ({"dev": "a", "staging": "a", "production": "a"}, []),
        ({"dev": "b", "staging": "a", "production": "a"}, [("dev", "dev runs b, staging runs a")]),
        (
            {"dev": "c", "staging": "b", "production": "a"},
            [
                ("dev", "dev runs c, staging runs b"),
                ("staging", "staging runs b, production runs a"),
            ],
        ),
        # Not deployed to production yet: staging runs what production does not.
        (
            {"dev": "a", "staging": "a"},
            [("staging", "staging runs a, production runs nothing yet")],
        ),
        # A missing middle environment is skipped: dev is compared with production.
        ({"dev": "b", "production": "a"}, [("dev", "dev runs b, production runs a")]),
        # Nothing serving in dev (a first release failed): nothing to say about it.
        ({"dev": None, "staging": "a", "production": "a"}, []),
    ],
)
def test_drift_names_what_the_next_environment_does_not_run(
    commits: dict[str, str | None], expected: list[tuple[str, str]]
) -> None:
    cells = {("web", env): _cell(env, commit) for env, commit in commits.items()}
    if "production" not in commits:
        cells[("web", "production")] = _cell("production", None, phase="failed")
    assert drift_of("web", ENVS, cells) == expected


def test_cells_stand_out_by_phase() -> None:
    assert "moving" in _cell("dev", "a", "progressing").css
    assert "alarm" in _cell("dev", "a", "rolled_back").css
    assert "waiting" in _cell("dev", "a", "pending_approval").css
    assert _cell("dev", "a").css == "phase-succeeded"
    moved = _cell("dev", "a")
    assert moved.signature == _cell("dev", "a").signature  # age aside, nothing changed


NEEDS = {
    "test": [],
    "secrets": [],
    "build": ["test", "secrets"],
    "deploy-dev": ["build"],
    "deploy-staging": ["deploy-dev"],
    "lint": [],
}


@pytest.mark.parametrize(
    ("names", "columns"),
    [
        (
            ["test", "secrets", "build", "deploy-dev", "deploy-staging"],
            [["test", "secrets"], ["build"], ["deploy-dev"], ["deploy-staging"]],
        ),
        # A job that needs one not in this run still gets a column (the first).
        (["build", "lint"], [["build", "lint"]]),
        # Matrix jobs take the needs of the job they expand, and what needs them follows.
        (
            ["test (py=3.11)", "test (py=3.12)", "secrets", "build"],
            [["test (py=3.11)", "test (py=3.12)", "secrets"], ["build"]],
        ),
        ([], []),
    ],
)
def test_dag_columns_follow_needs(names: list[str], columns: list[list[str]]) -> None:
    laid = dag_columns(names, NEEDS, {n: "success" for n in names}, {"build": 1.5})
    assert [[job.name for job in column] for column in laid] == columns
    durations = {job.name: job.duration for column in laid for job in column}
    if "build" in durations:
        assert durations["build"] == 1.5


@given(st.lists(st.sampled_from(sorted(NEEDS)), unique=True))
def test_every_job_sits_right_of_what_it_needs(names: list[str]) -> None:
    laid = dag_columns(names, NEEDS, {}, {})
    level = {job.name: job.level for column in laid for job in column}
    assert sorted(level) == sorted(names)
    for name in names:
        for need in NEEDS[name]:
            if need in level:
                assert level[need] < level[name]


def _event(seq: int, kind: str, actor: str = "ana") -> EventRecord:
    return EventRecord(
        seq=seq,
        at=float(seq),
        actor=actor,
        kind=kind,
        service=None,
        env=None,
        release_id=None,
        details={},
        prev_hash="",
        hash="",
    )


def test_filter_events_by_kind_prefix_and_actor() -> None:
    events = [
        _event(1, "approval.approved"),
        _event(2, "release.created", "bob"),
        _event(3, "approval.rejected", "bob"),
    ]
    assert [e.seq for e in filter_events(events, kind="approval.", actor=None)] == [1, 3]
    assert [e.seq for e in filter_events(events, kind=None, actor="BOB")] == [2, 3]
    assert [e.seq for e in filter_events(events, kind="approval.", actor="bob")] == [3]


def _counters(requests: int, errors: int, latency: float) -> VersionCounters:
    return VersionCounters(requests=requests, responses_5xx=errors, latency_sum=latency)


def test_series_are_rates_between_samples() -> None:
    ring: list[tuple[float, Any]] = [
        (0.0, {"v1": _counters(0, 0, 0.0)}),
        (2.0, {"v1": _counters(100, 0, 1.0)}),
        (4.0, {"v1": _counters(200, 10, 3.0), "v2": _counters(50, 5, 5.0)}),
        (6.0, {"v1": _counters(200, 10, 3.0), "v2": _counters(50, 5, 5.0)}),
    ]
    data = series_of(ring)
    assert data["times"] == [2.0, 4.0, 6.0]
    v1, v2 = data["versions"]["v1"], data["versions"]["v2"]
    assert v1["rps"] == [50.0, 50.0, 0.0]
    assert v1["errors"] == [0.0, 10.0, None]  # no requests: a gap, not 0% errors
    assert v1["latency_ms"] == [10.0, 20.0, None]
    assert v2["rps"][0] is None and v2["rps"][1] == 25.0 and v2["errors"][1] == 10.0
    assert series_of(ring, since=5.0)["times"] == [6.0]


def test_a_restarted_router_is_a_gap_not_a_negative_rate() -> None:
    ring: list[tuple[float, Any]] = [
        (0.0, {"v1": _counters(500, 5, 1.0)}),
        (2.0, {"v1": _counters(10, 0, 0.1)}),
    ]
    assert series_of(ring)["versions"]["v1"]["rps"] == [0.0]
