"""Which version and which instance a request goes to: pure arithmetic, no I/O, no clock.

The router compiles a ``RouteTable`` into a ``WeightPlan`` once per ``apply()`` so that the
per-request decision is a single ``bisect`` over precomputed cumulative weights. The rules,
which the controller and the canary analysis rely on:

* A pool is *eligible* when its weight is positive and it has at least one backend. Only
  eligible pools receive traffic, each with probability ``weight / sum(eligible weights)``.
* A pool with no backend is skipped, so its share falls to the other versions rather than
  turning into errors (a version whose instances all died is not a reason to fail users).
* A pool with weight 0 receives nothing, not even when it is the only pool with backends and
  not even as a retry target: weight 0 is how an aborted canary is switched off, and sending
  it "just the retries" would expose users to the version that was judged bad.
* No eligible pool (all weights 0, or no backends at all) means the router answers 503.

Within a pool instances are used round-robin; retries go to the next untried instance of the
same pool, then to the instances of the other eligible pools in table order.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import TypeVar

from conveyor.core.model import Pool

T = TypeVar("T")


@dataclass(frozen=True)
class WeightPlan:
    """Eligible pools (as indices into the table) and their cumulative weights."""

    indices: tuple[int, ...] = ()
    cumulative: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0


def weight_plan(pools: Sequence[Pool]) -> WeightPlan:
    """Compile the eligible pools of a table; see the module docstring for the rules."""
    indices: list[int] = []
    cumulative: list[int] = []
    running = 0
    for index, pool in enumerate(pools):
        if pool.weight > 0 and pool.backends:
            running += pool.weight
            indices.append(index)
            cumulative.append(running)
    return WeightPlan(tuple(indices), tuple(cumulative))


def pick(cumulative: Sequence[int], point: float) -> int:
    """Position in the plan of the pool owning ``point`` (``0 <= point < total``).

    A uniform ``point`` therefore lands on a pool with probability proportional to its weight.
    """
    return bisect_right(cumulative, point)


def next_round_robin(cursor: int, count: int) -> int:
    """The cursor after ``cursor`` in a ring of ``count`` instances."""
    following = cursor + 1
    return following if following < count else 0


def retry_candidate(
    pools: Sequence[tuple[str, Sequence[T]]],
    failed_version: str,
    tried: Container[T],
    start: int = 0,
) -> tuple[int, T] | None:
    """The backend to retry on after a failure: ``(pool position, backend)`` or ``None``.

    ``pools`` are the eligible pools of the *current* table as ``(version, backends)``, so a
    retry after ``apply()`` follows the new table. The failed version's pool is tried first
    (its instances from ``start`` on, round-robin), then every other pool in table order.
    """
    order = sorted(range(len(pools)), key=lambda i: pools[i][0] != failed_version)
    for position in order:
        version, backends = pools[position]
        count = len(backends)
        offset = start if version == failed_version else 0
        for step in range(count):
            backend = backends[(offset + step) % count]
            if backend not in tried:
                return position, backend
    return None
