"""Incidents link to the release users were getting when they started, and count in DORA."""

from __future__ import annotations

from pathlib import Path

from conveyor.application.caller import Caller
from conveyor.application.insight import Insight
from conveyor.core.state import Phase, RolloutStatus
from conveyor.store import NewEvent, Store
from conveyor.store.insight_repo import NewIncident
from tests.store.helpers import FakeClock, artifact, new_release


def _finish(store: Store, release_id: int, phase: Phase) -> None:
    current = store.get_release(release_id)
    store.update_release(
        release_id,
        status=RolloutStatus(phase=phase),
        expected_version=current.status_version,
        actor="controller",
        events=[NewEvent(f"release.{phase.value}")],
    )


def test_an_incident_counts_against_the_release_running_when_it_started(tmp_path: Path) -> None:
    clock = FakeClock()
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}", clock=clock) as store:
        insight = Insight(store, clock)
        one, two = artifact("one"), artifact("two")
        store.record_artifact(one, actor="ci")
        store.record_artifact(two, actor="ci")
        since = clock.now
        r1 = store.create_release(new_release(one.digest, env="production"), actor="a")
        _finish(store, r1.id, Phase.SUCCEEDED)
        between = clock.now + 0.1
        r2 = store.create_release(new_release(two.digest, env="production"), actor="a")
        during = clock.now + 0.1  # r2 is rolling out
        assert insight.running_at("catalog", "production", since) is None
        assert insight.running_at("catalog", "production", between).id == r1.id  # type: ignore[union-attr]
        assert insight.running_at("catalog", "production", during).id == r2.id  # type: ignore[union-attr]
        _finish(store, r2.id, Phase.SUCCEEDED)
        incident = insight.open(
            Caller("pager"),
            NewIncident("checkout down", "manual", "catalog", "production", fingerprint="x"),
        )
        assert incident.release_id == r2.id
        assert (
            insight.open(Caller("pager"), NewIncident("again", "manual", fingerprint="x"))
            == incident
        )
        keys = insight.dora(
            since=since, until=clock.now + 100, env="production", service=None
        ).total
        assert keys.failed_changes == 1 and keys.unrecovered == 1
        assert [f.why for f in keys.failures] == [f"incident {incident.id}"]
        resolved = insight.resolve(Caller("pager"), incident.id)
        keys = insight.dora(
            since=since, until=clock.now + 100, env="production", service=None
        ).total
        assert keys.recovery.median == resolved.resolved_at - incident.opened_at  # type: ignore[operator]
        assert keys.change_failure_rate == 1 / 2
