"""Leases in the store, on SQLite and PostgreSQL: claims are compare-and-swap, takeovers go
on the ledger, and a fenced write by a stale holder is refused with its whole transaction."""

from __future__ import annotations

import threading

import pytest

from conveyor.core.leases import Fence, Lease
from conveyor.core.state import Phase, RolloutStatus
from conveyor.errors import Conflict, Fenced
from conveyor.store import NewEvent, Store

from .helpers import artifact, new_release

A, B = "host-a:100:aaaa", "host-b:200:bbbb"


def test_acquire_renew_expire_take_over(store: Store) -> None:
    first = store.claim_lease("production", A, ttl=3.0, now=100.0)
    assert (first.outcome, first.lease) == ("acquired", Lease("production", A, 1, 103.0))
    assert store.claim_lease("production", B, ttl=3.0, now=101.0).outcome == "held_elsewhere"
    renewed = store.claim_lease("production", A, ttl=3.0, now=102.0)
    assert (renewed.outcome, renewed.lease) == ("renewed", Lease("production", A, 1, 105.0))
    assert store.claim_lease("production", B, ttl=3.0, now=104.9).outcome == "held_elsewhere"
    taken = store.claim_lease("production", B, ttl=3.0, now=105.0)
    assert (taken.outcome, taken.lease) == ("took_over", Lease("production", B, 2, 108.0))
    # the old holder comes back: the lease is not its any more
    assert store.claim_lease("production", A, ttl=3.0, now=105.5).outcome == "held_elsewhere"
    assert store.lease("production") == Lease("production", B, 2, 108.0)
    # leases are per environment
    assert store.claim_lease("staging", A, ttl=3.0, now=105.5).outcome == "acquired"
    assert [lease.env for lease in store.leases()] == ["production", "staging"]


def test_takeovers_are_on_the_ledger_renewals_are_not(store: Store) -> None:
    store.claim_lease("production", A, ttl=3.0, now=100.0)
    for at in (101.0, 102.0, 103.0):
        store.claim_lease("production", A, ttl=3.0, now=at)
    store.claim_lease("production", B, ttl=3.0, now=110.0)
    events = [e for e in store.events(limit=100) if e.kind == "lease.acquired"]
    assert [(e.env, e.details["holder"], e.details["epoch"]) for e in events] == [
        ("production", A, 1),
        ("production", B, 2),
    ]
    assert events[1].details["previous_holder"] == A
    assert events[1].details["previous_expired"] is True
    assert store.verify_ledger().ok


def test_exclusive_takes_a_live_lease_at_once(store: Store) -> None:
    store.claim_lease("production", A, ttl=3.0, now=100.0)
    taken = store.claim_lease("production", B, ttl=3.0, now=100.5, exclusive=True)
    assert (taken.outcome, taken.lease) == ("took_over", Lease("production", B, 2, 103.5))


def test_release_hands_over_without_waiting(store: Store) -> None:
    store.claim_lease("production", A, ttl=3.0, now=100.0)
    assert not store.release_lease("production", B, now=100.5)
    assert store.release_lease("production", A, now=100.5)
    taken = store.claim_lease("production", B, ttl=3.0, now=100.6)
    assert (taken.outcome, taken.lease) == ("took_over", Lease("production", B, 2, 103.6))


def test_the_database_clock_judges_expiry(store: Store) -> None:
    """Without ``now``, PostgreSQL's clock (or the store's, on SQLite) is used."""
    at = store.lease_clock()
    claimed = store.claim_lease("production", A, ttl=3.0)
    assert claimed.lease is not None
    assert at <= claimed.lease.expires_at - 3.0 < at + 60


def test_a_stale_holder_cannot_write(store: Store) -> None:
    digest = store.record_artifact(artifact("f"), actor="b").digest
    release = store.create_release(new_release(digest, env="production"), actor="alice")
    store.claim_lease("production", A, ttl=3.0, now=100.0)
    mine = Fence("production", A, 1)
    updated = store.update_release(
        release.id,
        status=RolloutStatus(phase=Phase.PROGRESSING),
        expected_version=release.status_version,
        actor="conveyor",
        events=[NewEvent("instances.started", {"instances": ["i1"]})],
        fence=mine,
    )
    store.append_events(
        [NewEvent("instances.restored", {}, env="production")], actor="c", fence=mine
    )
    head = store.ledger_head()
    # A is paused; B takes over at epoch 2
    store.claim_lease("production", B, ttl=3.0, now=200.0)
    after_takeover = store.ledger_head()
    with pytest.raises(Fenced, match=r"epoch 1.*held by host-b:200:bbbb at epoch 2"):
        store.update_release(
            release.id,
            status=RolloutStatus(phase=Phase.PROGRESSING, step_index=1),
            expected_version=updated.status_version,
            actor="conveyor",
            events=[NewEvent("instances.started", {"instances": ["i2"]})],
            fence=mine,
        )
    with pytest.raises(Fenced):
        store.append_events([NewEvent("instances.restored", {})], actor="c", fence=mine)
    # nothing of the refused writes landed: same status, same ledger (one takeover event)
    assert store.get_release(release.id).status_version == updated.status_version
    assert store.ledger_head() == after_takeover
    assert after_takeover[0] == head[0] + 1
    # the new holder writes fine
    store.update_release(
        release.id,
        status=RolloutStatus(phase=Phase.PROGRESSING, step_index=1),
        expected_version=updated.status_version,
        actor="conveyor",
        fence=Fence("production", B, 2),
    )
    assert store.verify_ledger().ok


def test_fenced_error_is_a_conflict_with_a_hint(store: Store) -> None:
    with pytest.raises(Conflict) as caught:
        store.append_events([NewEvent("x", {})], actor="c", fence=Fence("dev", A, 3))
    assert "held by nobody" in caught.value.message
    assert "lost the environment's lease" in (caught.value.hint or "")


def test_racing_claims_elect_exactly_one_per_epoch(database_url: str) -> None:
    """Four servers claim an expired lease at once, many times: each epoch has one holder."""
    with Store.open(database_url) as store:
        store.claim_lease("production", "seed", ttl=0.001, now=0.0)
        winners: dict[int, list[str]] = {}
        lock = threading.Lock()
        start = threading.Barrier(4)

        def server(n: int) -> None:
            start.wait()
            for round_ in range(15):
                # a shared "now" far past any expiry: every round, all four may take it over
                claimed = store.claim_lease("production", f"s{n}", ttl=0.001, now=1000.0 + round_)
                if claimed.outcome in ("took_over", "acquired") and claimed.lease is not None:
                    with lock:
                        winners.setdefault(claimed.lease.epoch, []).append(f"s{n}")

        threads = [threading.Thread(target=server, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert winners and all(len(names) == 1 for names in winners.values()), winners
        epochs = sorted(winners)
        assert epochs == list(range(2, 2 + len(epochs)))
        assert store.verify_ledger().ok
