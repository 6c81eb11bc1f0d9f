"""Which version and which instance a request goes to: pure arithmetic, no I/O, no clock.

The router compiles a ``RouteTable`` into a ``WeightPlan`` once per ``apply()`` so that the
per-request decision is a single ``bisect`` over precomputed cumulative weights. The rules,
which the controller and the canary analysis rely on:

* A pool is *eligible* when its weight is positive and it has at least one backend. Only
  eligible pools receive traffic, each with probability ``weight / sum(eligible weights)``.
* A pool with no backend is skipped, so its share falls to the other versions rather than
  turning into errors (a version whose instances all died is not a reason to fail users).
* A pool with weight 0 receives no new request, not even when it is the only pool with
  backends: weight 0 is how a version is switched off.
* No eligible pool (all weights 0, or no backends at all) means the router answers 503.

Within a pool instances are used round-robin. A request whose backend failed before
answering is retried on the next untried instance of the same pool, then on the other
eligible pools in table order, and only then on the *reserve*: weight-0 pools that still
have backends (the warm previous version during a switch). A reserve answer is better than
an error for a request that has nowhere else to go, and ``core.traffic.route_table`` keeps
warm versions in the table at weight 0 precisely for that.
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
    """Eligible pools (as indices into the table), their cumulative weights, the reserve."""

    indices: tuple[int, ...] = ()
    cumulative: tuple[int, ...] = ()
    reserve: tuple[int, ...] = ()  # weight-0 pools with backends: retry targets of last resort

    @property
    def total(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0


def weight_plan(pools: Sequence[Pool]) -> WeightPlan:
    """Compile the eligible pools of a table; see the module docstring for the rules."""
    indices: list[int] = []
    cumulative: list[int] = []
    reserve: list[int] = []
    running = 0
    for index, pool in enumerate(pools):
        if not pool.backends:
            continue
        if pool.weight > 0:
            running += pool.weight
            indices.append(index)
            cumulative.append(running)
        else:
            reserve.append(index)
    return WeightPlan(tuple(indices), tuple(cumulative), tuple(reserve))


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

    ``pools`` are the eligible pools of the *current* table followed by its reserve, as
    ``(version, backends)``, so a retry after ``apply()`` follows the new table. The failed
    version's pool is tried first (its instances from ``start`` on, round-robin), then every
    other pool in the order given.
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
