"""Releases: revisions, lookups, optimistic updates, and events that share their transaction."""

from __future__ import annotations

import pytest

from conveyor.errors import Conflict, NotFound
from conveyor.store import NewEvent, ReleaseRecord, Store

from .helpers import FakeClock, artifact, new_release


@pytest.fixture
def digest(store: Store) -> str:
    return store.record_artifact(artifact("r"), actor="builder").digest


def succeed(store: Store, release: ReleaseRecord) -> ReleaseRecord:
    return store.update_release(
        release.id,
        status={"step": 1},
        phase="succeeded",
        done=True,
        expected_version=release.status_version,
        actor="controller",
    )


def test_create_release_stores_everything_given(
    store: Store, digest: str, clock: FakeClock
) -> None:
    release = store.create_release(new_release(digest, reason="deploy", instances=3), actor="alice")
    assert release.revision == 1
    assert release.service == "catalog" and release.env == "staging"
    assert release.artifact_digest == digest
    assert release.config == {"LOG_LEVEL": "info"}
    assert release.strategy == {"rolling": {"max_surge": 1}}
    assert release.spec == {"steps": [{"set_weight": 100}]}
    assert release.status == {"step": 0}
    assert (release.phase, release.done, release.instances) == ("pending", False, 3)
    assert (release.reason, release.rollback_of, release.stable_release_id) == (
        "deploy",
        None,
        None,
    )
    assert release.actor == "alice"
    assert release.created_at == release.updated_at == clock.now
    assert release.status_version == 1
    assert store.get_release(release.id) == release


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
    assert events[2].service == "elsewhere" and events[2].env == "staging"


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
        store.create_release(new_release(digest, stable_release_id=404), actor="a")
    assert store.releases("catalog", "staging") == []


def test_stable_and_rollback_links_are_kept(store: Store, digest: str) -> None:
    first = succeed(store, store.create_release(new_release(digest), actor="a"))
    second = store.create_release(
        new_release(
            digest, stable_release_id=first.id, rollback_of=1, reason="manual rollback to r1"
        ),
        actor="a",
    )
    assert second.stable_release_id == first.id
    assert second.rollback_of == 1
    assert second.reason == "manual rollback to r1"


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
    updated = store.update_release(
        release.id,
        status={"step": 1, "weights": {"a": 50}},
        phase="progressing",
        done=False,
        expected_version=1,
        actor="controller",
        events=[NewEvent("traffic.switched", {"weight": 50})],
    )
    assert updated.status == {"step": 1, "weights": {"a": 50}}
    assert (updated.phase, updated.done, updated.status_version) == ("progressing", False, 2)
    assert updated.updated_at == clock.now > updated.created_at
    assert updated.actor == "alice"
    event = store.events(release_id=release.id)[-1]
    assert (event.kind, event.actor, event.service, event.env) == (
        "traffic.switched",
        "controller",
        "catalog",
        "staging",
    )
    assert event.at == updated.updated_at


def test_stale_update_is_a_conflict_and_leaves_no_trace(store: Store, digest: str) -> None:
    release = store.create_release(new_release(digest), actor="alice")
    store.update_release(
        release.id,
        status={"step": 1},
        phase="progressing",
        done=False,
        expected_version=1,
        actor="c1",
    )
    before = store.events()
    with pytest.raises(Conflict) as info:
        store.update_release(
            release.id,
            status={"step": 99},
            phase="failed",
            done=True,
            expected_version=1,
            actor="c2",
            events=[NewEvent("release.rolled_back")],
        )
    assert "version 2" in info.value.message and "expected 1" in info.value.message
    assert info.value.hint
    assert store.events() == before
    after = store.get_release(release.id)
    assert (after.status, after.phase, after.status_version) == ({"step": 1}, "progressing", 2)


def test_a_failing_event_rolls_back_the_update(store: Store, digest: str) -> None:
    release = store.create_release(new_release(digest), actor="alice")
    before = store.events()
    with pytest.raises(TypeError):
        store.update_release(
            release.id,
            status={"step": 1},
            phase="succeeded",
            done=True,
            expected_version=1,
            actor="c",
            events=[NewEvent("ok"), NewEvent("bad", {"obj": object()})],
        )
    assert store.events() == before
    assert store.get_release(release.id) == release
    assert store.verify_ledger().ok


def test_update_of_a_missing_release_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.update_release(9, status={}, phase="x", done=True, expected_version=1, actor="c")


def test_current_release_is_the_newest_succeeded(store: Store, digest: str) -> None:
    assert store.current_release("catalog", "staging") is None
    r1 = succeed(store, store.create_release(new_release(digest), actor="a"))
    r2 = succeed(store, store.create_release(new_release(digest), actor="a"))
    r3 = store.create_release(new_release(digest), actor="a")
    store.update_release(
        r3.id, status={}, phase="rolled_back", done=True, expected_version=1, actor="c"
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


def test_ledger_stays_valid_across_a_release_lifecycle(store: Store, digest: str) -> None:
    release = store.create_release(new_release(digest), actor="alice")
    version = release.status_version
    for step in range(5):
        release = store.update_release(
            release.id,
            status={"step": step},
            phase="progressing",
            done=False,
            expected_version=version,
            actor="controller",
            events=[NewEvent("step.started", {"step": step})],
        )
        version = release.status_version
    succeed(store, release)
    check = store.verify_ledger()
    assert check.ok and check.checked == len(store.events()) == 7
