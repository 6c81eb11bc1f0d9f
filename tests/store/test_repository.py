"""Store behaviour against a real database: SQLite always, PostgreSQL when configured."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from conveyor.errors import Conflict, NotFound, Refused
from conveyor.store import NewEvent, Store

from .helpers import FakeClock, artifact, digest_of, free_port

# --- artifacts -----------------------------------------------------------------------


def test_record_artifact_round_trips_and_logs_once(store: Store) -> None:
    original = artifact("a")
    stored = store.record_artifact(original, actor="alice")
    assert stored == dataclasses.replace(original, services=("catalog",))
    assert store.get_artifact(original.digest) == stored
    again = store.record_artifact(original, actor="bob")
    assert again == stored
    built = [e for e in store.events() if e.kind == "artifact.built"]
    assert len(built) == 1
    assert built[0].actor == "alice"
    assert built[0].service == "catalog"
    assert built[0].details["digest"] == original.digest


def test_an_existing_digest_is_never_overwritten(store: Store) -> None:
    first = store.record_artifact(artifact("a"), actor="alice")
    impostor = dataclasses.replace(
        artifact("a", service="other", created_at=99.0), commit="f" * 40, size=1, files=1
    )
    again = store.record_artifact(impostor, actor="mallory")
    # The bytes keep the facts of their first build; the new service is only added beside them.
    assert again == dataclasses.replace(first, services=("catalog", "other"))
    stored = store.get_artifact(first.digest)
    assert (stored.service, stored.commit, stored.size, stored.created_at) == (
        "catalog",
        first.commit,
        first.size,
        first.created_at,
    )


def test_record_artifact_refuses_a_malformed_digest(store: Store) -> None:
    bad = dataclasses.replace(artifact("a"), digest="md5:abc")
    with pytest.raises(Refused) as info:
        store.record_artifact(bad, actor="alice")
    assert info.value.hint


def test_get_artifact_by_full_digest_and_prefixes(store: Store) -> None:
    stored = store.record_artifact(artifact("a"), actor="alice")
    hex_ = stored.digest.removeprefix("sha256:")
    assert store.get_artifact(stored.digest) == stored
    assert store.get_artifact(hex_[:7]) == stored
    assert store.get_artifact("sha256:" + hex_[:10].upper()) == stored


@pytest.mark.parametrize("query", ["abc", "sha256:12", "not-hex!", ""])
def test_get_artifact_rejects_short_or_non_hex_queries(store: Store, query: str) -> None:
    with pytest.raises(NotFound) as info:
        store.get_artifact(query)
    assert "7 hex" in (info.value.hint or "")


def test_get_artifact_unknown_prefix_is_not_found(store: Store) -> None:
    stored = store.record_artifact(artifact("a"), actor="alice")
    assert not stored.digest.startswith("sha256:deadbeef")
    with pytest.raises(NotFound) as info:
        store.get_artifact("deadbeef")
    assert "deadbeef" in info.value.message
    assert info.value.hint


def _seeds_sharing_seven_hex() -> tuple[str, str]:
    """Two seeds whose digests agree on the first 7 hex characters (a birthday search)."""
    seen: dict[str, str] = {}
    i = 0
    while True:
        seed = f"s{i}"
        prefix = digest_of(seed)[7:14]
        if prefix in seen:
            return seen[prefix], seed
        seen[prefix] = seed
        i += 1


def test_ambiguous_prefix_is_a_conflict_and_a_longer_one_resolves(store: Store) -> None:
    seed_a, seed_b = _seeds_sharing_seven_hex()
    a = store.record_artifact(artifact(seed_a), actor="x")
    b = store.record_artifact(artifact(seed_b), actor="x")
    with pytest.raises(Conflict) as info:
        store.get_artifact(a.digest[7:14])
    assert "ambiguous" in info.value.message
    assert a.digest[:19] in info.value.message and b.digest[:19] in info.value.message
    assert info.value.hint == "give more characters of the digest"
    assert store.get_artifact(a.digest[7:]) == a
    assert store.get_artifact(b.digest) == b


def test_list_artifacts_newest_first_filtered_and_limited(store: Store) -> None:
    for i, service in enumerate(["catalog", "cart", "catalog", "catalog"]):
        store.record_artifact(artifact(f"x{i}", service=service, created_at=float(i)), actor="a")
    everything = store.list_artifacts()
    assert [a.created_at for a in everything] == [3.0, 2.0, 1.0, 0.0]
    assert [a.created_at for a in store.list_artifacts("catalog")] == [3.0, 2.0, 0.0]
    assert [a.created_at for a in store.list_artifacts("catalog", limit=2)] == [3.0, 2.0]
    assert store.list_artifacts("nope") == []


# --- addresses -----------------------------------------------------------------------


class Ports:
    """An allocator handing out real free ports, optionally preceded by scripted ones."""

    def __init__(self, *scripted: int) -> None:
        self.scripted = list(scripted)
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.scripted.pop(0) if self.scripted else free_port()


def test_address_is_allocated_once_and_then_stable(store: Store) -> None:
    ports = Ports()
    first = store.address("catalog", "staging", allocate=ports)
    assert first.host == "127.0.0.1"
    assert first.port != first.preview_port
    assert ports.calls == 2
    again = store.address("catalog", "staging", allocate=ports)
    assert again == first
    assert ports.calls == 2
    kinds = [e.kind for e in store.events(service="catalog", env="staging")]
    assert kinds == ["address.allocated"]


def test_each_service_env_gets_its_own_ports(store: Store) -> None:
    a = store.address("catalog", "staging", allocate=Ports(20001, 20002))
    # The allocator offers ports already recorded for catalog/staging: they must be skipped.
    b = store.address("catalog", "production", allocate=Ports(20001, 20002, 20003, 20002, 20004))
    assert (a.port, a.preview_port) == (20001, 20002)
    assert (b.port, b.preview_port) == (20003, 20004)
    assert store.addresses() == [b, a]


def test_pinned_port_is_used_on_first_allocation(store: Store) -> None:
    ports = Ports(30001)
    got = store.address("catalog", "staging", pinned_port=8080, allocate=ports)
    assert (got.port, got.preview_port) == (8080, 30001)


def test_repinning_updates_the_port_and_logs_it(store: Store) -> None:
    first = store.address("catalog", "staging", allocate=Ports(30001, 30002))
    moved = store.address("catalog", "staging", pinned_port=8081, allocate=Ports())
    assert (moved.port, moved.preview_port) == (8081, first.preview_port)
    event = store.events(service="catalog")[-1]
    assert event.kind == "address.pinned"
    assert event.details["previous_port"] == 30001
    assert event.details["port"] == 8081
    # Dropping the pin later does not move the address again.
    assert store.address("catalog", "staging", allocate=Ports()) == moved


def test_pinning_onto_the_own_preview_port_moves_the_preview(store: Store) -> None:
    store.address("catalog", "staging", allocate=Ports(30001, 30002))
    moved = store.address("catalog", "staging", pinned_port=30002, allocate=Ports(30003))
    assert (moved.port, moved.preview_port) == (30002, 30003)


def test_pinning_another_address_port_is_a_conflict(store: Store) -> None:
    store.address("cart", "staging", allocate=Ports(30001, 30002))
    with pytest.raises(Conflict) as info:
        store.address("catalog", "staging", pinned_port=30002, allocate=Ports())
    assert "cart/staging" in info.value.message
    assert "pin a different port" in (info.value.hint or "")
    assert [a.service for a in store.addresses()] == ["cart"]


def test_pinning_an_impossible_port_is_refused(store: Store) -> None:
    with pytest.raises(Refused):
        store.address("catalog", "staging", pinned_port=70000, allocate=Ports())


def test_an_allocator_that_never_finds_a_free_port_gives_up(store: Store) -> None:
    store.address("cart", "staging", allocate=Ports(30001, 30002))
    stuck = Ports(*([30001] * 100))
    with pytest.raises(Conflict) as info:
        store.address("catalog", "staging", allocate=stuck)
    assert info.value.hint
    assert stuck.calls == 50


# --- ledger --------------------------------------------------------------------------


def test_append_events_chains_from_genesis(store: Store, clock: FakeClock) -> None:
    written = store.append_events(
        [NewEvent("flag.flipped", {"flag": "new-ui", "on": True}), NewEvent("approval.given")],
        actor="carol",
    )
    assert [e.seq for e in written] == [1, 2]
    assert written[0].prev_hash == "0" * 64
    assert written[1].prev_hash == written[0].hash
    assert written[0].at == written[1].at == clock.now
    assert store.events() == written
    assert store.append_events([], actor="carol") == []
    check = store.verify_ledger()
    assert check.ok and check.checked == 2


def test_events_filters_and_pages(store: Store) -> None:
    store.append_events(
        [
            NewEvent("a", service="catalog", env="staging", release_id=None),
            NewEvent("b", service="catalog", env="production"),
            NewEvent("c", service="cart", env="staging"),
            NewEvent("d", service="catalog", env="staging"),
        ],
        actor="x",
    )
    assert [e.kind for e in store.events(service="catalog")] == ["a", "b", "d"]
    assert [e.kind for e in store.events(env="staging")] == ["a", "c", "d"]
    assert [e.kind for e in store.events(service="catalog", env="staging")] == ["a", "d"]
    assert [e.kind for e in store.events(after_seq=2)] == ["c", "d"]
    assert [e.kind for e in store.events(limit=2)] == ["a", "b"]
    # The newest matches, still oldest first, and paging back from there.
    assert [e.kind for e in store.events(limit=2, newest=True)] == ["c", "d"]
    assert [e.kind for e in store.events(service="catalog", newest=True, limit=2)] == ["b", "d"]
    assert [e.kind for e in store.events(newest=True, before_seq=3, limit=5)] == ["a", "b"]
    # Every match, however many pages it takes.
    assert [e.kind for e in store.every_event(service="catalog", page=1)] == ["a", "b", "d"]
    assert [e.kind for e in store.every_event(env="staging", page=2)] == ["a", "c", "d"]


def test_event_details_and_times_round_trip_exactly(store: Store, database_url: str) -> None:
    clock_value = 1_700_000_000.123456789
    details = {"nested": {"list": [1, 2.5, None, True]}, "text": "ünïcode ✓", "big": 2**53}
    with Store.open(database_url, clock=lambda: clock_value) as other:
        written = other.append_events([NewEvent("x", details)], actor="a")[0]
    read = store.events()[0]
    assert read == written
    assert read.at == clock_value
    assert read.details == details


def test_editing_an_event_in_sql_is_detected_at_that_seq(store: Store, raw: sa.Engine) -> None:
    store.append_events([NewEvent(f"e{i}", {"i": i}) for i in range(1, 6)], actor="x")
    with raw.begin() as conn:
        conn.execute(sa.text("UPDATE events SET details = :d WHERE seq = 3"), {"d": '{"i": 33}'})
    check = store.verify_ledger()
    assert not check.ok
    assert check.first_bad_seq == 3
    assert check.checked == 2
    assert "altered" in (check.problem or "")


def test_deleting_the_last_event_is_detected(store: Store, raw: sa.Engine) -> None:
    store.append_events([NewEvent(f"e{i}") for i in range(4)], actor="x")
    with raw.begin() as conn:
        conn.execute(sa.text("DELETE FROM events WHERE seq = 4"))
    check = store.verify_ledger()
    assert (check.ok, check.first_bad_seq) == (False, 4)


def test_deleting_a_middle_event_is_detected(store: Store, raw: sa.Engine) -> None:
    store.append_events([NewEvent(f"e{i}") for i in range(4)], actor="x")
    with raw.begin() as conn:
        conn.execute(sa.text("DELETE FROM events WHERE seq = 2"))
    check = store.verify_ledger()
    assert (check.ok, check.first_bad_seq) == (False, 2)


def test_verify_walks_more_than_one_page(store: Store) -> None:
    for _ in range(3):
        store.append_events([NewEvent("bulk", {"n": n}) for n in range(500)], actor="x")
    check = store.verify_ledger()
    assert check.ok and check.checked == 1500
