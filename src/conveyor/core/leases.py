"""Who drives an environment: leases with a fencing epoch, decided purely.

Several servers may share one PostgreSQL store. Each environment has one lease row: the
holder (a server's id), an epoch and an expiry. A server drives an environment only while
it holds that environment's lease; it renews it every ``RENEW_EVERY`` seconds, and a lease
not renewed for ``TTL`` seconds may be taken over by another server, which bumps the epoch.

The epoch is the fence. A leader paused for longer than the TTL (SIGSTOP, a long GC, a
frozen VM) wakes up believing it still leads; every write it makes carries the epoch it
acquired, and the store, the router and the runtime refuse an epoch lower than the newest
one they have seen. Expiry only decides *when* a standby may take over; the epoch decides
whose writes count, so correctness never depends on clocks agreeing.

These functions answer "given the row as it is and the time, what should the row become?"
with no I/O; the store applies the answer with a conditional UPDATE (compare-and-swap on the
holder and epoch it read), so two servers deciding at once cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TTL = 3.0
"""Seconds a lease lasts without renewal: a standby takes over at most this long (plus one
renewal period) after the leader's last renewal."""

RENEW_EVERY = 1.0
"""Seconds between renewals by the holder (and between claims by a standby)."""

MAX_HOLDER = 200
"""Longest holder id stored (``host:pid:random``)."""

Outcome = Literal["acquired", "renewed", "took_over", "held_elsewhere"]


@dataclass(frozen=True)
class Lease:
    """One environment's lease row."""

    env: str
    holder: str
    epoch: int
    expires_at: float

    def live(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class Claim:
    """What a claim decided: the row to write (None: leave it), and why."""

    outcome: Outcome
    lease: Lease | None

    @property
    def held(self) -> bool:
        """The claimant holds the lease once ``lease`` is written."""
        return self.outcome != "held_elsewhere"


def claim(
    current: Lease | None,
    env: str,
    holder: str,
    now: float,
    *,
    ttl: float = TTL,
    exclusive: bool = False,
) -> Claim:
    """Acquire, renew or take over ``env``'s lease for ``holder`` at ``now``.

    - no row yet: acquire at epoch 1;
    - the holder's own row: renew (same epoch: nobody else wrote in between, even if it
      had expired, since any other server taking it would have changed the holder);
    - another holder's live row: leave it (``held_elsewhere``);
    - another holder's expired row: take over with the epoch bumped.

    ``exclusive`` is for a server that knows no other server can run (SQLite, under the
    project's file lock): a lease left by a killed predecessor is taken at once rather
    than after its expiry, still with the epoch bumped.
    """
    if not holder or len(holder) > MAX_HOLDER:
        raise ValueError(f"a lease holder id is 1 to {MAX_HOLDER} characters")
    if ttl <= 0:
        raise ValueError("a lease lasts a positive number of seconds")
    expires = now + ttl
    if current is None:
        return Claim("acquired", Lease(env, holder, 1, expires))
    if current.holder == holder:
        return Claim("renewed", Lease(env, holder, current.epoch, max(expires, current.expires_at)))
    if current.live(now) and not exclusive:
        return Claim("held_elsewhere", None)
    return Claim("took_over", Lease(env, holder, current.epoch + 1, expires))


def release(current: Lease | None, holder: str, now: float) -> Lease | None:
    """The row after ``holder`` steps down (a clean shutdown): expired now, epoch kept, so
    a standby takes over on its next claim instead of waiting out the TTL. None when
    ``holder`` does not hold it (nothing to give back)."""
    if current is None or current.holder != holder:
        return None
    return Lease(current.env, current.holder, current.epoch, min(current.expires_at, now))


def admits(highest_seen: int, epoch: int) -> bool:
    """May a command carrying ``epoch`` be obeyed by a part that has seen ``highest_seen``?

    Epoch 0 means "not fenced" (a single server built without leases, tests): always
    obeyed, and it raises nothing. Any other epoch must be at least the highest seen.
    """
    return epoch == 0 or epoch >= highest_seen


@dataclass(frozen=True)
class Fence:
    """What a controller's write for ``env`` carries: who holds the lease, at which epoch.

    The store refuses the write unless the lease row still names this holder and epoch;
    the router and the runtime refuse an epoch lower than the highest they have seen."""

    env: str
    holder: str
    epoch: int
