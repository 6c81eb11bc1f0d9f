"""Lease decisions (core/leases.py): acquire, renew, expire, take over, epochs only grow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.leases import Lease, admits, claim, release

A, B = "a:1:x", "b:2:y"


@pytest.mark.parametrize(
    ("current", "holder", "now", "exclusive", "outcome", "epoch", "expires"),
    [
        # nobody yet: acquired at epoch 1
        (None, A, 100.0, False, "acquired", 1, 103.5),
        # own live lease: renewed, same epoch, expiry pushed
        (Lease("prod", A, 4, 102.0), A, 101.0, False, "renewed", 4, 104.5),
        # own expired lease nobody took: renewed with the same epoch (nobody wrote since)
        (Lease("prod", A, 4, 99.0), A, 101.0, False, "renewed", 4, 104.5),
        # someone else's live lease: left alone
        (Lease("prod", B, 4, 102.0), A, 101.0, False, "held_elsewhere", None, None),
        # expiry is exclusive: at exactly expires_at it is over
        (Lease("prod", B, 4, 101.0), A, 101.0, False, "took_over", 5, 104.5),
        # someone else's expired lease: taken over, epoch bumped
        (Lease("prod", B, 4, 100.0), A, 101.0, False, "took_over", 5, 104.5),
        # exclusive (SQLite under the file lock): a dead predecessor's live lease is taken now
        (Lease("prod", B, 4, 200.0), A, 101.0, True, "took_over", 5, 104.5),
        # exclusive never bumps one's own epoch
        (Lease("prod", A, 4, 200.0), A, 101.0, True, "renewed", 4, 200.0),
    ],
)
def test_claim_table(
    current: Lease | None,
    holder: str,
    now: float,
    exclusive: bool,
    outcome: str,
    epoch: int | None,
    expires: float | None,
) -> None:
    decided = claim(current, "prod", holder, now, ttl=3.5, exclusive=exclusive)
    assert decided.outcome == outcome
    assert decided.held == (outcome != "held_elsewhere")
    if epoch is None:
        assert decided.lease is None
    else:
        assert decided.lease == Lease("prod", holder, epoch, expires)


def test_claim_refuses_bad_holders_and_ttls() -> None:
    with pytest.raises(ValueError, match="holder"):
        claim(None, "prod", "", 0.0)
    with pytest.raises(ValueError, match="holder"):
        claim(None, "prod", "x" * 201, 0.0)
    with pytest.raises(ValueError, match="positive"):
        claim(None, "prod", A, 0.0, ttl=0)


@pytest.mark.parametrize(
    ("current", "holder", "expected"),
    [
        (None, A, None),
        (Lease("prod", B, 3, 110.0), A, None),
        (Lease("prod", A, 3, 110.0), A, Lease("prod", A, 3, 100.0)),
        (Lease("prod", A, 3, 90.0), A, Lease("prod", A, 3, 90.0)),
    ],
)
def test_release(current: Lease | None, holder: str, expected: Lease | None) -> None:
    assert release(current, holder, 100.0) == expected


def test_released_lease_is_taken_over_at_once_with_a_new_epoch() -> None:
    given_back = release(Lease("prod", A, 3, 110.0), A, 100.0)
    assert claim(given_back, "prod", B, 100.0, ttl=3.5).lease == Lease("prod", B, 4, 103.5)


@pytest.mark.parametrize(
    ("seen", "epoch", "ok"),
    [(0, 0, True), (5, 0, True), (0, 1, True), (5, 5, True), (5, 6, True), (5, 4, False)],
)
def test_admits(seen: int, epoch: int, ok: bool) -> None:
    assert admits(seen, epoch) is ok


@given(
    st.lists(
        st.tuples(st.sampled_from([A, B, "c:3:z"]), st.floats(0, 10, allow_nan=False)),
        min_size=1,
        max_size=40,
    )
)
def test_epochs_never_go_back_and_one_holder_per_epoch(steps: list[tuple[str, float]]) -> None:
    """Any sequence of claims by competing servers at advancing times: the epoch never
    decreases, a live lease is never taken from its holder, and an epoch names one holder."""
    current: Lease | None = None
    now = 0.0
    holders: dict[int, str] = {}
    for holder, advance in steps:
        now += advance
        decided = claim(current, "prod", holder, now)
        if current is not None and current.live(now) and current.holder != holder:
            assert decided.lease is None
        if decided.lease is not None:
            if current is not None:
                assert decided.lease.epoch >= current.epoch
                assert (decided.lease.epoch > current.epoch) == (current.holder != holder)
            assert holders.setdefault(decided.lease.epoch, holder) == holder
            current = decided.lease
