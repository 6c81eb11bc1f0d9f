"""Retries away from a failing canary: what may be answered by stable, and what it may cost.

A canary exists to limit harm, so a request that the canary failed is, where that is safe,
sent once more to the stable version before the user is answered; the canary's failure is
still counted against the canary, so the judges see exactly what it did. This module holds
the two decisions, as pure functions of data (the router carries them out):

* ``retry_kind``: may this failed attempt be retried on stable, and does it spend budget?
  A request that never reached the canary (the connection was refused or could not be
  opened) can always go elsewhere: nothing was sent. A request that was sent is retried
  only when its method is in the policy's list (idempotent methods: GET, HEAD, OPTIONS by
  default), its body was buffered whole (so the same bytes can be written again), and the
  canary either answered 5xx or closed the connection before any response byte.
  Non-idempotent requests are never retried after sending: the canary may have acted.
* ``budget_allows``: retries of sent requests may add at most ``budget`` (20%) of the
  user requests seen over a sliding ``window``, or ``min_retries`` per window, whichever is
  more (so a service with little traffic is protected too). Envoy's retry budgets cap
  *concurrent* retries at a share of active requests with a minimum concurrency; at the
  low concurrency of a typical service that cap never binds, so here the share is of a rate,
  which is what "at most 20% extra requests" promises a sick stable. Each request is retried
  at most once, and never a retry, so a failing stable cannot multiply load either.

``window_counts`` turns cumulative counter samples into the window's requests and retries,
so the router keeps no per-request timestamps: it samples its totals now and then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

DEFAULT_METHODS: tuple[str, ...] = ("GET", "HEAD", "OPTIONS")
"""Idempotent methods that are retried by default (RFC 9110 9.2.2 lists PUT and DELETE too,
but applications rarely make those truly idempotent)."""

NEVER_RETRIED: frozenset[str] = frozenset({"POST", "PATCH", "CONNECT"})
"""Methods the configuration refuses in ``methods``: not idempotent by definition."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a route retries a canary's failures on stable; ``methods=()`` turns it off."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    budget: float = 0.2
    """Retries of sent requests, as a share of user requests over ``window``."""
    min_retries: int = 3
    """Retries allowed per window whatever the traffic (a quiet service is protected too)."""
    window: float = 10.0
    """Seconds over which requests and retries are counted."""

    @property
    def enabled(self) -> bool:
        return bool(self.methods)

    def to_json(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "budget": self.budget,
            "min_retries": self.min_retries,
            "window": self.window,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RetryPolicy:
        return cls(
            methods=tuple(str(m) for m in data.get("methods", DEFAULT_METHODS)),
            budget=float(data.get("budget", 0.2)),
            min_retries=int(data.get("min_retries", 3)),
            window=float(data.get("window", 10.0)),
        )


class RetryKind(Enum):
    """What to do with a canary's failed attempt."""

    ANSWER = "answer"
    """Not retryable: the user gets the canary's answer (or the router's 502 for a drop)."""
    FREE = "free"
    """Nothing reached the canary: retry on stable without spending budget."""
    BUDGETED = "budgeted"
    """Sent and retryable: retry on stable if the budget allows."""


def retry_kind(
    policy: RetryPolicy,
    *,
    method: str,
    sent: bool,
    body_buffered: bool,
    status: int | None,
) -> RetryKind:
    """Classify a canary's failed attempt; ``status`` is ``None`` when no response came.

    ``sent`` is whether any request byte may have reached the instance; ``status`` a
    response status (only 5xx is a failure; anything else is the canary's answer).
    """
    if status is not None and status < 500:
        return RetryKind.ANSWER
    if not sent and status is None:
        return RetryKind.FREE
    if method not in policy.methods or not body_buffered:
        return RetryKind.ANSWER
    return RetryKind.BUDGETED


def budget_allows(policy: RetryPolicy, requests: int, retries: int) -> bool:
    """Whether one more retry fits: ``retries`` already spent of ``requests`` in the window
    (the request asking for the retry included)."""
    return retries + 1 <= max(policy.min_retries, policy.budget * requests)


Sample = tuple[float, int, int]
"""(time, cumulative user requests, cumulative budgeted retries)."""


def window_counts(samples: Sequence[Sample], now: Sample, window: float) -> tuple[int, int]:
    """User requests and budgeted retries over the last ``window`` seconds before ``now``.

    The baseline is the newest sample at or before ``now - window``; when no sample is that
    old, the counts run from the start (the totals are cumulative from zero), so the window
    is never shorter than asked while that much history exists. Counts never go negative.
    """
    start = now[0] - window
    baseline: Sample = (start, 0, 0)
    for sample in samples:
        if sample[0] <= start:
            baseline = sample
        else:
            break
    return max(0, now[1] - baseline[1]), max(0, now[2] - baseline[2])


def prune(samples: Sequence[Sample], now: float, window: float) -> int:
    """How many leading samples are no longer needed as a baseline for ``window_counts``."""
    start = now - window
    drop = 0
    while drop + 1 < len(samples) and samples[drop + 1][0] <= start:
        drop += 1
    return drop
