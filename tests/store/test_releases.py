"""Releases: revisions, lookups, optimistic updates, and events that share their transaction."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.core.plan import InstanceTemplate, StableRef
from conveyor.core.state import Phase, RolloutSpec, RolloutStatus, StrategySpec
from conveyor.errors import Conflict, NotFound
from conveyor.store import NewEvent, NewRelease, ReleaseRecord, Store

from .helpers import FakeClock, artifact, new_release, plan


@pytest.fixture
def digest(store: Store) -> str:
    return store.record_artifact(artifact("r"), actor="builder").digest


def progressing(**changes: Any) -> RolloutStatus:
    return RolloutStatus(phase=Phase.PROGRESSING).evolve(**changes)


def succeed(store: Store, release: ReleaseRecord) -> ReleaseRecord:
    return store.update_release(
        release.id,
        status=RolloutStatus(phase=Phase.SUCCEEDED, step_index=1, finished_at=5.0),
        expected_version=release.status_version,
        actor="controller",
    )


def test_create_release_stores_everything_given(
    store: Store, digest: str, clock: FakeClock
) -> None:
    new = new_release(digest, reason="deploy", desired=3)
    release = store.create_release(new, actor="alice")
    assert release.revision == 1
    assert release.service == "catalog" and release.env == "staging"
    assert release.plan == new.plan
    assert release.artifact_digest == digest
    assert release.config == {"LOG_LEVEL": "info"}
    assert release.template == new.plan.version and release.template.startswith("t")
    assert release.config_version == new.plan.config_version
    assert release.plan.strategy == StrategySpec(kind="rolling")
    assert release.status == RolloutStatus(phase=Phase.PENDING)
    assert release.analysis == {}
    assert (release.phase, release.done, release.instances) == (Phase.PENDING, False, 3)
    assert (release.reason, release.rollback_of, release.stable_release_id) == (
        "deploy",
        None,
        None,
    )
    assert release.actor == "alice"
    assert release.created_at == release.updated_at == clock.now
    assert release.status_version == 1
    assert store.get_release(release.id) == release


def test_the_plan_round_trips_with_everything_it_can_hold(store: Store, digest: str) -> None:
    first = succeed(store, store.create_release(new_release(digest), actor="a"))
    stable = StableRef(first.id, first.revision, first.template, first.instances)
    given = plan(
        digest,
        instance=InstanceTemplate(command=("python3", "-m", "app"), port_env="HTTP_PORT"),
        strategy=StrategySpec(kind="blue_green", scale_down_delay=5.0, auto_promote=False),
        progress_deadline=12.5,
        preview_check=False,
        pinned_port=8080,
        stable=stable,
        commit="abc123",
    )
    release = store.create_release(NewRelease(given, RolloutStatus()), actor="a")
    assert release.plan == given
    assert store.get_release(release.id).plan == given
    assert release.stable_release_id == first.id
    assert release.instances == 2


def test_rollout_spec_is_numbered_by_the_store(store: Store, digest: str) -> None:
    store.create_release(new_release(digest), actor="a")
    release = store.create_release(new_release(digest, desired=4), actor="a")
    spec = release.rollout_spec()
    assert isinstance(spec, RolloutSpec)
    assert (spec.release_id, spec.revision) == (release.id, 2)
    assert (spec.version, spec.desired) == (release.template, 4)
    assert spec.stable_version is None and spec.stable_desired == 0


def test_release_created_event_is_written_with_the_release(store: Store, digest: str) -> None:
    release = store.create_release(
        new_release(digest),
        actor="alice",
        events=[NewEvent("step.started", {"step": 0}), NewEvent("x", service="elsewhere")],
    )
    events = store.events(release_id=release.id)
    assert [e.kind for e in events] == ["release.created", "step.started", "x"]
    created = events[0]
    assert (created.service, created.env, created.actor) == ("catalog", "staging", "alice")
    assert created.details["revision"] == 1
    assert created.details["artifact"] == digest
    assert created.details["template"] == release.template
    assert created.details["instances"] == 2
    assert events[2].service == "elsewhere" and events[2].env == "staging"


def test_a_callers_release_created_enriches_the_stores_own(store: Store, digest: str) -> None:
    release = store.create_release(
        new_release(digest),
        actor="alice",
        events=[NewEvent("release.created", {"commit": "abc", "revision": 99})],
    )
    events = store.events(release_id=release.id)
    assert [e.kind for e in events] == ["release.created"]
    assert events[0].details["commit"] == "abc"
    assert events[0].details["revision"] == 1  # the store's facts win


def test_revisions_count_per_service_and_env(store: Store, digest: str) -> None:
    revs = [
        store.create_release(new_release(digest, service=s, env=e), actor="a").revision
        for s, e in [
            ("catalog", "staging"),
            ("catalog", "staging"),
            ("catalog", "production"),
            ("cart", "staging"),
            ("catalog", "staging"),
        ]
    ]
    assert revs == [1, 2, 1, 1, 3]
    assert store.release_by_revision("catalog", "staging", 3).revision == 3
    assert [r.revision for r in store.releases("catalog", "staging")] == [3, 2, 1]
    assert [r.revision for r in store.releases("catalog", "staging", limit=1)] == [3]
    assert store.releases("nope", "staging") == []


def test_unknown_artifact_is_refused_without_side_effects(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        store.create_release(new_release("sha256:" + "9" * 64), actor="a")
    assert "conveyor build catalog" in (info.value.hint or "")
    assert store.events() == []
    assert store.latest_per_service_env() == []


def test_unknown_stable_release_is_not_found(store: Store, digest: str) -> None:
    with pytest.raises(NotFound):
        store.create_release(new_release(digest, stable=StableRef(404, 1, "t", 1)), actor="a")
    assert store.releases("catalog", "staging") == []
    assert [e.kind for e in store.events()] == ["artifact.built"]


def test_stable_and_rollback_links_are_kept(store: Store, digest: str) -> None:
    first = succeed(store, store.create_release(new_release(digest), actor="a"))
    stable = StableRef(first.id, first.revision, first.template, first.instances)
    second = store.create_release(
        NewRelease(
            plan(digest, stable=stable),
            RolloutStatus(),
            reason="manual rollback to r1",
            rollback_of=1,
        ),
        actor="a",
    )
    assert second.stable_release_id == first.id
    assert second.plan.stable == stable
    assert second.rollback_of == 1
    assert second.reason == "manual rollback to r1"
    spec = second.rollout_spec()
    assert (spec.stable_version, spec.stable_revision, spec.stable_desired) == (
        first.template,
        1,
        2,
    )


def test_missing_lookups_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_release(12345)
    with pytest.raises(NotFound) as info:
        store.release_by_revision("catalog", "staging", 7)
    assert "r7" in info.value.message


def test_update_release_bumps_the_version_and_appends_events(
    store: Store, digest: str, clock: FakeClock
) -> None:
    release = store.create_release(new_release(digest), actor="alice")
    status = progressing(step_index=1, weights={"a": 50})
    updated = store.update_release(
        release.id,
        status=status,
        expected_version=1,
        actor="controller",
        events=[NewEvent("traffic.switched", {"weight": 50})],
    )
    assert updated.status == status
    assert (updated.phase, updated.done, updated.status_version) == (Phase.PROGRESSING, False, 2)
    assert updated.plan == release.plan
    assert updated.updated_at == clock.now > updated.created_at
    assert updated.actor == "alice"
    assert store.get_release(release.id) == updated
    event = store.events(release_id=release.id)[-1]
    assert (event.kind, event.actor, event.service, event.env) == (
        "traffic.switched",
        "controller",
        "catalog",
        "staging",
    )
    assert event.at == updated.updated_at


@pytest.mark.parametrize(
    ("status", "done"),
    [
        pytest.param(RolloutStatus(phase=Phase.PENDING), False, id="pending"),
        pytest.param(RolloutStatus(phase=Phase.PROGRESSING), False, id="progressing"),
        pytest.param(RolloutStatus(phase=Phase.VERIFYING), False, id="verifying"),
        pytest.param(RolloutStatus(phase=Phase.ROLLING_BACK), False, id="rolling_back"),
        pytest.param(RolloutStatus(phase=Phase.SUCCEEDED), True, id="succeeded"),
        pytest.param(RolloutStatus(phase=Phase.ROLLED_BACK), True, id="rolled_back"),
        pytest.param(RolloutStatus(phase=Phase.FAILED), True, id="failed"),
        # Terminal, but old instances still wait to be scaled down: the controller keeps it.
        pytest.param(
            RolloutStatus(phase=Phase.SUCCEEDED, cleanup_at=99.0), False, id="succeeded-cleanup"
        ),
    ],
)
def test_done_follows_the_status(
    store: Store, digest: str, status: RolloutStatus, done: bool
) -> None:
    release = store.create_release(new_release(digest), actor="a")
    updated = store.update_release(release.id, status=status, expected_version=1, actor="c")
    assert (updated.phase, updated.done) == (status.phase, done)
    assert store.get_release(release.id).done is done
    assert [r.id for r in store.active_releases()] == ([] if done else [release.id])


def test_analysis_runs_are_kept_beside_the_status(store: Store, digest: str) -> None:
    release = store.create_release(new_release(digest), actor="a")
    runs = {"step-1": {"phase": "running", "measurements": [{"value": 0.25}]}}
    first = store.update_release(
        release.id, status=progressing(step_index=1), expected_version=1, actor="c", analysis=runs
    )
    assert first.analysis == runs
    assert first.status == progressing(step_index=1)
    kept = store.update_release(
        release.id, status=progressing(step_index=2), expected_version=2, actor="c"
    )
    assert kept.analysis == runs and kept.status.step_index == 2
    cleared = store.update_release(
        release.id, status=progressing(step_index=2), expected_version=3, actor="c", analysis={}
    )
    assert cleared.analysis == {}
    assert store.get_release(release.id) == cleared


def test_stale_update_is_a_conflict_and_leaves_no_trace(store: Store, digest: str) -> None:
    release = store.create_release(new_release(digest), actor="alice")
    store.update_release(
        release.id,
        status=progressing(step_index=1),
        expected_version=1,
        actor="c1",
    )
    before = store.events()
    with pytest.raises(Conflict) as info:
        store.update_release(
            release.id,
            status=RolloutStatus(phase=Phase.FAILED, step_index=99),
            expected_version=1,
            actor="c2",
            events=[NewEvent("release.rolled_back")],
        )
    assert "version 2" in info.value.message and "expected 1" in info.value.message
    assert info.value.hint
    assert store.events() == before
    after = store.get_release(release.id)
    assert (after.status, after.phase, after.done, after.status_version) == (
        progressing(step_index=1),
        Phase.PROGRESSING,
        False,
        2,
    )


def test_a_failing_event_rolls_back_the_update(store: Store, digest: str) -> None:
    release = store.create_release(new_release(digest), actor="alice")
    before = store.events()
    with pytest.raises(TypeError):
        store.update_release(
            release.id,
            status=RolloutStatus(phase=Phase.SUCCEEDED, step_index=1),
            expected_version=1,
            actor="c",
            events=[NewEvent("ok"), NewEvent("bad", {"obj": object()})],
        )
    assert store.events() == before
    assert store.get_release(release.id) == release
    assert store.verify_ledger().ok


def test_update_of_a_missing_release_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.update_release(
            9, status=RolloutStatus(phase=Phase.SUCCEEDED), expected_version=1, actor="c"
        )


def test_current_release_is_the_newest_succeeded(store: Store, digest: str) -> None:
    assert store.current_release("catalog", "staging") is None
    r1 = succeed(store, store.create_release(new_release(digest), actor="a"))
    r2 = succeed(store, store.create_release(new_release(digest), actor="a"))
    r3 = store.create_release(new_release(digest), actor="a")
    store.update_release(
        r3.id, status=RolloutStatus(phase=Phase.ROLLED_BACK), expected_version=1, actor="c"
    )
    store.create_release(new_release(digest), actor="a")  # r4, still pending
    current = store.current_release("catalog", "staging")
    assert current is not None and current.id == r2.id != r1.id
    assert store.current_release("catalog", "production") is None


def test_active_releases_are_the_unfinished_ones_oldest_first(store: Store, digest: str) -> None:
    a = store.create_release(new_release(digest), actor="a")
    b = store.create_release(new_release(digest, env="production"), actor="a")
    c = store.create_release(new_release(digest, service="cart"), actor="a")
    succeed(store, b)
    assert [r.id for r in store.active_releases()] == [a.id, c.id]
    active = store.active_release("catalog", "staging")
    assert active is not None and active.id == a.id
    assert store.active_release("catalog", "production") is None
    newer = store.create_release(new_release(digest), actor="a")
    active = store.active_release("catalog", "staging")
    assert active is not None and active.id == newer.id


def test_latest_per_service_env(store: Store, digest: str) -> None:
    for service, env in [
        ("catalog", "staging"),
        ("catalog", "staging"),
        ("cart", "staging"),
        ("catalog", "production"),
    ]:
        store.create_release(new_release(digest, service=service, env=env), actor="a")
    latest = store.latest_per_service_env()
    assert [(r.service, r.env, r.revision) for r in latest] == [
        ("cart", "staging", 1),
        ("catalog", "production", 1),
        ("catalog", "staging", 2),
    ]


def test_grid_is_the_newest_and_the_newest_succeeded_of_each_pair(
    store: Store, digest: str
) -> None:
    """The dashboard's overview reads these two lists; the commit comes from the artifact."""
    store.create_release(new_release(digest, phase=Phase.SUCCEEDED), actor="a")
    store.create_release(new_release(digest, phase=Phase.PROGRESSING), actor="a")
    store.create_release(new_release(digest, env="production", phase=Phase.ROLLED_BACK), actor="a")
    latest = store.grid()
    assert [(r.env, r.revision, r.phase) for r in latest] == [
        ("production", 1, Phase.ROLLED_BACK),
        ("staging", 2, Phase.PROGRESSING),
    ]
    assert {r.commit for r in latest} == {"0123abcd" * 5}
    assert latest[1].strategy.kind == "rolling" and latest[1].instances == 2
    good = store.grid(succeeded_only=True)
    assert [(r.env, r.revision) for r in good] == [("staging", 1)]


def test_ledger_stays_valid_across_a_release_lifecycle(store: Store, digest: str) -> None:
    release = store.create_release(new_release(digest), actor="alice")
    version = release.status_version
    for step in range(5):
        release = store.update_release(
            release.id,
            status=progressing(step_index=step),
            expected_version=version,
            actor="controller",
            events=[NewEvent("step.started", {"step": step})],
        )
        version = release.status_version
    final = succeed(store, release)
    assert final.done and final.phase.terminal
    check = store.verify_ledger()
    assert check.ok and check.checked == len(store.events()) == 7
