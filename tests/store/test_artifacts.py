"""Artifacts that serve several services: the bytes recorded once, each service once."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from conveyor.store import ArtifactRecord, Store

from .helpers import artifact


def built_for(seed: str, service: str, created_at: float) -> ArtifactRecord:
    return artifact(seed, service=service, created_at=created_at)


def count(raw: sa.Engine, table: str) -> int:
    with raw.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_one_digest_built_for_two_services_is_one_artifact(store: Store, raw: sa.Engine) -> None:
    web = store.record_artifact(built_for("app", "web", 1.0), actor="alice")
    worker = store.record_artifact(built_for("app", "worker", 2.0), actor="bob")
    assert worker.digest == web.digest
    assert web.services == ("web",)
    assert worker.services == ("web", "worker")
    # The bytes keep the facts of their first build.
    assert (worker.service, worker.created_at) == ("web", 1.0)
    assert worker.built_for("web") and worker.built_for("worker")
    assert not worker.built_for("cron")
    assert store.get_artifact(web.digest) == worker
    assert count(raw, "artifacts") == 1
    assert count(raw, "artifact_services") == 2


def test_each_new_service_is_one_artifact_built_event(store: Store) -> None:
    record = built_for("app", "web", 1.0)
    store.record_artifact(record, actor="alice")
    store.record_artifact(dataclasses.replace(record, service="worker"), actor="bob")
    store.record_artifact(dataclasses.replace(record, service="cron"), actor="carol")
    built = [e for e in store.events() if e.kind == "artifact.built"]
    assert [(e.service, e.actor) for e in built] == [
        ("web", "alice"),
        ("worker", "bob"),
        ("cron", "carol"),
    ]
    assert all(e.details["digest"] == record.digest for e in built)
    assert "also_built_for" not in built[0].details
    assert built[1].details["also_built_for"] == ["web"]
    assert built[2].details["also_built_for"] == ["web", "worker"]
    assert store.verify_ledger().ok


def test_recording_a_known_service_again_adds_nothing(store: Store, raw: sa.Engine) -> None:
    store.record_artifact(built_for("app", "web", 1.0), actor="alice")
    both = store.record_artifact(built_for("app", "worker", 2.0), actor="bob")
    events = store.events()
    again = store.record_artifact(built_for("app", "web", 3.0), actor="mallory")
    assert again == both
    assert store.events() == events
    assert count(raw, "artifact_services") == 2
    assert store.artifact_provenance(both.digest, "web") == {}


def test_list_artifacts_finds_the_bytes_under_every_service(store: Store) -> None:
    shared = store.record_artifact(built_for("app", "web", 1.0), actor="a")
    store.record_artifact(built_for("app", "worker", 2.0), actor="a")
    assert [a.digest for a in store.list_artifacts("worker")] == [shared.digest]
    assert [a.digest for a in store.list_artifacts("web")] == [shared.digest]
    assert [a.digest for a in store.list_artifacts()] == [shared.digest]
    assert store.list_artifacts("worker")[0].services == ("web", "worker")
    assert store.list_artifacts("cron") == []


def test_list_artifacts_orders_by_when_built_for_that_service(store: Store) -> None:
    old = store.record_artifact(built_for("old", "web", 1.0), actor="a")
    worker_only = store.record_artifact(built_for("worker-only", "worker", 5.0), actor="a")
    newer_web = store.record_artifact(built_for("newer", "web", 6.0), actor="a")
    # Built for web long ago, for worker only now: the newest artifact of worker.
    store.record_artifact(built_for("old", "worker", 10.0), actor="a")
    assert [a.digest for a in store.list_artifacts("worker")] == [old.digest, worker_only.digest]
    assert [a.digest for a in store.list_artifacts("web")] == [newer_web.digest, old.digest]
    assert [a.digest for a in store.list_artifacts("worker", limit=1)] == [old.digest]
    # Without a service, by when the bytes were first built.
    assert [a.digest for a in store.list_artifacts()] == [
        newer_web.digest,
        worker_only.digest,
        old.digest,
    ]


def test_provenance_is_kept_per_service(store: Store) -> None:
    web = {"envelope": "web.intoto.jsonl", "key": "sha256:" + "a" * 64}
    worker = {"envelope": "worker.intoto.jsonl", "key": "sha256:" + "b" * 64, "n": 2.5}
    digest = store.record_artifact(built_for("app", "web", 1.0), actor="a", provenance=web).digest
    store.record_artifact(built_for("app", "worker", 2.0), actor="a", provenance=worker)
    assert store.artifact_provenance(digest, "web") == web
    assert store.artifact_provenance(digest, "worker") == worker
    assert store.artifact_provenance(digest, "cron") is None
    assert store.artifact_provenance("sha256:" + "0" * 64, "web") is None


def test_provenance_of_a_known_service_is_not_replaced(store: Store) -> None:
    first = {"envelope": "first.intoto.jsonl"}
    digest = store.record_artifact(built_for("app", "web", 1.0), actor="a", provenance=first).digest
    store.record_artifact(
        built_for("app", "web", 2.0), actor="mallory", provenance={"envelope": "forged"}
    )
    assert store.artifact_provenance(digest, "web") == first


@pytest.mark.parametrize("second", ["worker", "api"])
def test_services_are_listed_in_the_order_they_were_built(store: Store, second: str) -> None:
    store.record_artifact(built_for("app", "web", 1.0), actor="a")
    record = store.record_artifact(built_for("app", second, 2.0), actor="a")
    assert record.services == ("web", second)
    assert record.services[0] == record.service
