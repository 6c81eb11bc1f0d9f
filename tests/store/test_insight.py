"""The store's side of delivery insight, on SQLite and PostgreSQL: finished deployments of a
period with their commits and ends, and incidents with their ledger events."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor.core.dora import DeployKind
from conveyor.core.state import Phase, RolloutStatus
from conveyor.errors import Conflict, NotFound
from conveyor.store import NewEvent, Store
from conveyor.store.insight_repo import NewIncident

from .helpers import FakeClock, artifact, new_release


def _finish(store: Store, release_id: int, phase: Phase) -> None:
    current = store.get_release(release_id)
    kind = {Phase.SUCCEEDED: "release.succeeded", Phase.ROLLED_BACK: "release.rolled_back"}
    events = [NewEvent(kind[phase])]
    if phase is Phase.ROLLED_BACK:
        events.insert(0, NewEvent("release.aborted", {"reason": "error-rate"}))
    store.update_release(
        release_id,
        status=RolloutStatus(phase=phase),
        expected_version=current.status_version,
        actor="controller",
        events=events,
    )


def test_deployments_of_a_period_with_commits_kinds_and_ends(
    store: Store, clock: FakeClock
) -> None:
    commits = [["c" * 40, 1_600_000_000], ["b" * 40, 1_599_999_000]]
    one = dataclasses.replace(artifact("one"), metadata={"commits": commits})
    two = artifact("two")
    store.record_artifact(one, actor="ci")
    store.record_artifact(two, actor="ci")
    before = store.create_release(new_release(one.digest, env="production"), actor="a")
    _finish(store, before.id, Phase.SUCCEEDED)
    since = clock.now
    bad = store.create_release(
        new_release(two.digest, env="production", reason="deploy"), actor="a"
    )
    _finish(store, bad.id, Phase.ROLLED_BACK)
    fix = store.create_release(
        new_release(two.digest, env="production", reason="fix: the 500s"), actor="a"
    )
    _finish(store, fix.id, Phase.SUCCEEDED)
    store.create_release(new_release(one.digest, env="production"), actor="a")  # running
    store.create_release(new_release(one.digest, env="staging"), actor="a")
    found = store.deployments(since=since, until=clock.now + 10, env="production")
    assert [(d.release_id, d.kind, d.outcome) for d in found] == [
        (before.id, DeployKind.DEPLOY, "succeeded"),  # the context before the period
        (bad.id, DeployKind.DEPLOY, "rolled_back"),
        (fix.id, DeployKind.FIX, "succeeded"),
    ]
    assert [list(c) for c in found[0].history] == commits  # as the build recorded them
    assert found[0].commit == "c" * 40
    ends = {e.release_id: e.at for e in store.events(kinds=["release.rolled_back"])}
    aborts = {e.release_id: e.at for e in store.events(kinds=["release.aborted"])}
    assert found[1].finished_at == ends[bad.id] and found[1].aborted_at == aborts[bad.id]
    assert store.deployments(since=since, until=clock.now, env="nowhere") == []


def test_incidents_open_resolve_and_their_events(store: Store) -> None:
    opened = store.open_incident(
        NewIncident("checkout 500s", "alertmanager", "shop", "production", fingerprint="f1"),
        actor="alertmanager",
        release_id=None,
    )
    assert opened.open and opened.opened_by == "alertmanager"
    assert store.open_incident_by_fingerprint("f1") == opened
    resolved = store.resolve_incident(opened.id, actor="bob", note="rolled back")
    assert not resolved.open and resolved.resolved_by == "bob"
    assert resolved.resolved_at is not None and resolved.resolved_at >= opened.opened_at
    assert store.open_incident_by_fingerprint("f1") is None
    with pytest.raises(Conflict, match="resolved already"):
        store.resolve_incident(opened.id, actor="bob")
    with pytest.raises(NotFound):
        store.get_incident(999)
    kinds = [
        (e.kind, e.details["incident"])
        for e in store.events(kinds=["incident.opened", "incident.resolved"])
    ]
    assert kinds == [("incident.opened", opened.id), ("incident.resolved", opened.id)]
    assert store.incidents(open_only=True) == []
    assert [i.id for i in store.incidents()] == [opened.id]
    assert store.verify_ledger().ok


def test_incidents_against_a_period_are_those_linked_to_its_deployments(
    store: Store, clock: FakeClock
) -> None:
    """One joined query (not chunks of ids) finds exactly the incidents of the deployments
    asked about: not those of another environment, of a release outside the period, or of
    none."""
    built = artifact("one")
    store.record_artifact(built, actor="ci")
    old = store.create_release(new_release(built.digest, env="production"), actor="a")
    _finish(store, old.id, Phase.SUCCEEDED)
    ancient = store.create_release(new_release(built.digest, env="production"), actor="a")
    _finish(store, ancient.id, Phase.ROLLED_BACK)
    since = clock.now
    inside = store.create_release(new_release(built.digest, env="production"), actor="a")
    _finish(store, inside.id, Phase.SUCCEEDED)
    elsewhere = store.create_release(new_release(built.digest, env="staging"), actor="a")
    _finish(store, elsewhere.id, Phase.SUCCEEDED)

    def incident(title: str, release_id: int | None, env: str) -> int:
        new = NewIncident(title, "manual", "shop", env)
        return store.open_incident(new, actor="bob", release_id=release_id).id

    on_context = incident("context", old.id, "production")
    incident("outside the period", ancient.id, "production")
    first = incident("inside", inside.id, "production")
    second = incident("inside again", inside.id, "production")
    incident("staging", elsewhere.id, "staging")
    incident("unlinked", None, "production")
    found = store.deployments(since=since, until=clock.now + 10, env="production")
    assert {d.release_id for d in found} == {old.id, inside.id}
    linked = store.incidents_against(found)
    assert [i.id for i in linked] == [second, first, on_context]  # newest first
    assert linked == store.incidents(release_ids=[d.release_id for d in found])
    assert store.incidents_against([]) == []
