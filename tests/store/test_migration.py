"""Upgrading a real database written by the previous Conveyor (schema 0001) to today's.

``fixtures/state-0001.json`` is every row of a state database the previous version wrote
while running four environments: three finished releases, a rollback, and a canary (r2 in
``canary``) left paused mid-rollout after an inconclusive analysis. The test rebuilds that
database at revision 0001, opens it with today's store and checks that nothing a running
release depends on was lost or reinterpreted: the plan says what the old spec said, the
canary resumes at the step it was on, and the hash chain still verifies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from conveyor.core.model import ProbeSpec
from conveyor.core.plan import InstanceTemplate, ReleasePlan, StableRef
from conveyor.core.release import config_version, template_key
from conveyor.core.state import (
    AnalysisStep,
    PauseStep,
    Phase,
    RolloutSpec,
    RolloutStatus,
    SetWeightStep,
    StrategySpec,
    Triggers,
)
from conveyor.store import NewEvent, NewRelease, Store
from conveyor.store.engine import (
    _alembic_config,
    create_engine,
    current_revision,
    head_revision,
    write_transaction,
)

from .helpers import Signer

FIXTURE = Path(__file__).parent / "fixtures" / "state-0001.json"
# Parents before children, for the foreign keys.
TABLES = ("artifacts", "releases", "events", "ledger_head", "addresses", "alembic_version")

OLD = "sha256:e3cd45e233ea55eab6ddb31555f0f5180f1e0e5cad0fb82ab9fda13e91ed697b"
NEW = "sha256:01f113a53b1e13d73be603907190bcaf09ff609fe22c41dc0152d8bf20286bd0"
INSTANCE = InstanceTemplate(
    command="exec python3 app/server.py",
    port_env="PORT",
    readiness=ProbeSpec("/health/ready", timeout=1.0, period=0.2, failure_threshold=2),
    liveness=ProbeSpec("/health/live", timeout=1.0, period=1.0, failure_threshold=3),
    stop_grace=5.0,
    drain_timeout=10.0,
)
TRIGGERS = Triggers(error_rate=0.05, min_requests=20, window=5.0, max_restarts=2, verification=1.0)
CANARY = StrategySpec(
    kind="canary",
    steps=(SetWeightStep(20), AnalysisStep("errors"), PauseStep(None)),
)
HELLO = {"GREETING": "hello"}

# (id) -> what the old release's spec said, written out by hand from the fixture.
EXPECTED: dict[int, dict[str, Any]] = {
    1: {"env": "staging", "revision": 1, "artifact": OLD, "config": HELLO,
        "strategy": StrategySpec(kind="rolling"), "stable": None},
    2: {"env": "production", "revision": 1, "artifact": OLD, "config": HELLO,
        "strategy": StrategySpec(kind="blue_green"), "stable": None},
    3: {"env": "dev", "revision": 1, "artifact": OLD, "config": HELLO,
        "strategy": StrategySpec(kind="recreate"), "stable": None},
    4: {"env": "canary", "revision": 1, "artifact": OLD, "config": HELLO,
        "strategy": CANARY, "stable": None},
    5: {"env": "staging", "revision": 2, "artifact": NEW, "config": {"GREETING": "hi"},
        "strategy": StrategySpec(kind="rolling"), "stable": StableRef(1, 1, "tee75cc330f", 1)},
    6: {"env": "canary", "revision": 2, "artifact": NEW, "config": HELLO,
        "strategy": CANARY, "stable": StableRef(4, 1, "tee75cc330f", 1)},
    7: {"env": "staging", "revision": 3, "artifact": OLD, "config": HELLO,
        "strategy": StrategySpec(kind="rolling"), "stable": StableRef(5, 2, "t9ebf7f4978", 1)},
}  # fmt: skip


@pytest.fixture(scope="module")
def fixture() -> dict[str, list[dict[str, Any]]]:
    data: dict[str, list[dict[str, Any]]] = json.loads(FIXTURE.read_text())
    return data


@pytest.fixture
def old_database(database_url: str, fixture: Mapping[str, list[dict[str, Any]]]) -> str:
    """The fixture's rows in a database at schema 0001, exactly as the old version left them."""
    engine = create_engine(database_url)
    try:
        with write_transaction(engine) as conn:
            command.upgrade(_alembic_config(conn), "0001")
        old = sa.MetaData()
        old.reflect(engine)
        with write_transaction(engine) as conn:
            for name in TABLES:
                table = old.tables[name]
                conn.execute(sa.delete(table))  # 0001 seeded ledger_head and alembic_version
                conn.execute(sa.insert(table), [_row(table, row) for row in fixture[name]])
            if conn.dialect.name == "postgresql":
                # As the old server's inserts left it: the next release id follows the last.
                conn.execute(
                    sa.text(
                        "SELECT setval(pg_get_serial_sequence('releases', 'id'), max(id))"
                        " FROM releases"
                    )
                )
        assert current_revision(engine) == "0001"
    finally:
        engine.dispose()
    return database_url


def _row(table: sa.Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """A fixture row as the database takes it: JSON text parsed, SQLite's 0/1 as booleans."""
    values = {}
    for name, value in row.items():
        column_type = table.c[name].type
        if isinstance(column_type, sa.JSON) and isinstance(value, str):
            value = json.loads(value)
        elif isinstance(column_type, sa.Boolean) and value is not None:
            value = bool(value)
        values[name] = value
    return values


@pytest.fixture
def store(old_database: str) -> Iterator[Store]:
    with Store.open(old_database) as opened:
        yield opened


def stored(fixture: Mapping[str, list[dict[str, Any]]], release_id: int) -> dict[str, Any]:
    row = next(r for r in fixture["releases"] if r["id"] == release_id)
    return {k: json.loads(v) if k in ("spec", "status", "config") else v for k, v in row.items()}


def test_opening_migrates_to_head(old_database: str) -> None:
    Store.open(old_database).close()
    engine = create_engine(old_database)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


@pytest.mark.parametrize("release_id", sorted(EXPECTED))
def test_every_release_gets_the_plan_its_spec_described(
    store: Store, fixture: Mapping[str, list[dict[str, Any]]], release_id: int
) -> None:
    want = EXPECTED[release_id]
    release = store.get_release(release_id)
    assert (release.service, release.env, release.revision) == (
        "catalog",
        want["env"],
        want["revision"],
    )
    assert release.plan == ReleasePlan(
        service="catalog",
        env=want["env"],
        artifact=want["artifact"],
        config=want["config"],
        instance=INSTANCE,
        desired=1,
        strategy=want["strategy"],
        progress_deadline=8.0,
        triggers=TRIGGERS,
        preview_check=True,
        analysis={},
        notify=(),
        router=None,
        pinned_port=None,
        stable=want["stable"],
        commit=None,
    )
    assert release.stable_release_id == (want["stable"].release_id if want["stable"] else None)
    # The plan reproduces the identity the old version gave the instances, so they are
    # recognised as this release's, not restarted as a new version.
    row = stored(fixture, release_id)
    assert release.template == row["template"]
    key = template_key(want["artifact"], want["config"], INSTANCE.command, "PORT")
    assert release.template == key
    assert release.config_version == row["config_version"] == config_version(want["config"])
    old_spec = RolloutSpec.from_json({**row["spec"]["rollout"], "release_id": release_id})
    assert release.rollout_spec() == old_spec


@pytest.mark.parametrize("release_id", sorted(EXPECTED))
def test_every_status_reads_back_as_stored(
    store: Store, fixture: Mapping[str, list[dict[str, Any]]], release_id: int
) -> None:
    row = stored(fixture, release_id)
    release = store.get_release(release_id)
    assert release.status.phase == Phase(row["phase"])
    assert release.done is bool(row["done"])
    assert release.status_version == row["status_version"]
    assert (release.created_at, release.updated_at) == (row["created_at"], row["updated_at"])
    assert (release.reason, release.rollback_of, release.actor) == (
        row["reason"],
        row["rollback_of"],
        row["actor"],
    )
    status = dict(row["status"])
    status.pop("analysis", None)
    assert release.status.to_json() == status


def test_the_paused_canary_resumes_where_it_was(store: Store) -> None:
    canary = store.get_release(6)
    status = canary.status
    assert status.phase == Phase.PROGRESSING and not canary.done
    assert status.step_index == 1
    assert status.paused is not None
    assert status.paused.startswith("analysis errors was inconclusive")
    assert status.weights == {"t985ed0d2a1": 20, "tee75cc330f": 80}
    assert status.step_started_at == 1796579868.7323406
    # Same steps, same hash: the controller does not restart the steps after the upgrade.
    assert status.steps_hash == canary.plan.strategy.steps_hash == "adfcf2e7c2ba"
    assert canary.plan.strategy.steps[status.step_index] == AnalysisStep("errors")
    run = canary.analysis["step-1"]
    assert run["phase"] == "inconclusive"
    assert run["run"]["metrics"][0]["min_sample"] == 30
    assert run["run"]["results"]["error-rate"][0]["evidence"]["window_seconds"] == (
        0.9254097938537598
    )
    assert [r.id for r in store.active_releases()] == [6]
    assert canary.rollout_spec().stable_revision == 1


def test_artifact_services_are_backfilled(
    store: Store, fixture: Mapping[str, list[dict[str, Any]]]
) -> None:
    for row in fixture["artifacts"]:
        record = store.get_artifact(row["digest"])
        assert record.services == (row["service"],) == ("catalog",)
        assert record.created_at == row["created_at"]
        assert record.metadata == json.loads(row["metadata"])
        provenance = json.loads(row["metadata"])["provenance"]
        assert store.artifact_provenance(row["digest"], "catalog") == provenance
    assert [a.digest for a in store.list_artifacts("catalog")] == [NEW, OLD]


def test_the_ledger_survives_the_upgrade(
    store: Store, fixture: Mapping[str, list[dict[str, Any]]]
) -> None:
    check = store.verify_ledger()
    assert check.ok, check
    assert check.checked == len(fixture["events"]) == 74
    assert store.events(after_seq=73)[0].hash == fixture["ledger_head"][0]["hash"]


def test_an_upgraded_ledger_has_no_checkpoints_and_is_walked_whole_once(store: Store) -> None:
    signer = Signer()
    assert store.checkpoints() == []
    check = store.verify_ledger(opener=signer.opener(), from_checkpoint=True)
    assert check.ok and check.checked == 74 and check.checkpoint is None
    seq, hash_ = store.ledger_head()
    claim, envelope = signer.sign(seq, hash_, 1.0)
    store.record_checkpoint(claim, envelope, reason="start")
    after = store.verify_ledger(opener=signer.opener(), from_checkpoint=True)
    assert after.ok and after.checked == 1 and after.checkpoint == claim


def test_the_upgraded_database_keeps_working(store: Store) -> None:
    canary = store.get_release(6)
    promoted = store.update_release(
        canary.id,
        status=canary.status.evolve(paused=None, promote="step"),
        expected_version=canary.status_version,
        actor="alice",
        events=[NewEvent("release.promoted", {"step": 1})],
    )
    assert promoted.analysis == canary.analysis  # the runs stay beside the new status
    assert promoted.status.promote == "step"

    stable = store.get_release(7)
    back = store.create_release(
        NewRelease(
            store.get_release(5).plan.returning(
                StableRef(stable.id, stable.revision, stable.template, stable.instances)
            ),
            RolloutStatus(),
            reason="rollback to r2",
            rollback_of=5,
        ),
        actor="bob",
    )
    assert (back.id, back.revision) == (8, 4)
    assert back.template == "t9ebf7f4978"
    assert store.verify_ledger().ok


def test_a_release_written_by_the_previous_version_after_the_upgrade_reads_back(
    store: Store, old_database: str, fixture: Mapping[str, list[dict[str, Any]]]
) -> None:
    """0002 adds columns only so an old server keeps working during an upgrade; its inserts
    leave ``plan`` empty, and today's server must still read those releases."""
    old_row = {**next(r for r in fixture["releases"] if r["id"] == 5), "id": 8, "revision": 4}
    engine = create_engine(old_database)
    try:
        schema = sa.MetaData()
        schema.reflect(engine)
        releases = schema.tables["releases"]
        with write_transaction(engine) as conn:
            conn.execute(sa.insert(releases), [_row(releases, old_row)])  # no "plan": NULL
    finally:
        engine.dispose()
    release = store.get_release(8)
    assert release.plan == store.get_release(5).plan
    assert [r.revision for r in store.releases("catalog", "staging")] == [4, 3, 2, 1]
