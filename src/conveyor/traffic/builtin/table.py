"""A ``RouteTable`` compiled for the hot path, and the slot that makes ``apply()`` atomic.

Compiling once per ``apply()`` moves every lookup out of the per-request path: a request
reads one attribute (``slot.table``), calls ``choose()`` and gets a pool (with its counters
attached) and a backend (with its idle connection pool attached). Replacing ``slot.table``
is a single reference assignment, so each request sees either the old table or the new one,
never a mix; requests already dispatched keep the objects they hold, which is what lets
them finish on a backend that the new table no longer lists.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Sequence

from conveyor.core.model import HeaderRoute, Pool
from conveyor.traffic.builtin.balancer import retry_candidate, weight_plan
from conveyor.traffic.builtin.budget import RetryBudget
from conveyor.traffic.builtin.metrics import VersionStats
from conveyor.traffic.builtin.upstream import BackendState

_NOTHING: frozenset[bytes] = frozenset()


class CompiledPool:
    """An eligible pool: its counters, its backends and its round-robin cursor.

    ``canary`` marks a version other than the table's stable one (while the table names a
    stable version with backends): its failures are retried on stable (``core.retry``), and
    ``hold`` is the methods whose response status must be seen before a byte of it is
    relayed (empty for every other pool, so the common case costs one set lookup).
    """

    __slots__ = ("backends", "canary", "count", "cursor", "hold", "stats", "version")

    def __init__(self, version: str, stats: VersionStats, backends: Sequence[BackendState]) -> None:
        self.version = version
        self.stats = stats
        self.backends = tuple(backends)
        self.count = len(self.backends)
        self.cursor = 0
        self.canary = False
        self.hold = _NOTHING

    def next_backend(self) -> BackendState:
        """Round robin over the pool (``balancer.next_round_robin``, inlined: per request)."""
        cursor = self.cursor
        following = cursor + 1
        self.cursor = following if following < self.count else 0
        return self.backends[cursor]


class CompiledTable:
    """The per-request decision structure for one listener (main or preview)."""

    __slots__ = (
        "budget",
        "cumulative",
        "header",
        "none_stats",
        "pools",
        "random",
        "reserve",
        "single",
        "stable",
        "total",
    )

    def __init__(
        self,
        pools: Sequence[CompiledPool],
        cumulative: Sequence[int],
        none_stats: VersionStats,
        rng: Callable[[], float] = random.random,
        reserve: Sequence[CompiledPool] = (),
    ) -> None:
        self.pools = tuple(pools)
        self.reserve = tuple(reserve)
        self.cumulative = tuple(cumulative)
        self.total = self.cumulative[-1] if self.cumulative else 0
        self.single = self.pools[0] if len(self.pools) == 1 else None
        self.none_stats = none_stats
        self.random = rng
        # (b"\r\nname:", value, pool): requests carrying that header go to that pool
        self.header: tuple[bytes, bytes, CompiledPool] | None = None
        # where a canary's failures are retried, and what bounds those retries
        self.stable: CompiledPool | None = None
        self.budget: RetryBudget | None = None

    def header_pool(self, raw: bytes) -> CompiledPool | None:
        """The header route's pool if ``raw`` carries its header and value, else ``None``.

        Only tables with a header route pay for looking at the headers, and then only the
        request head is searched (case-insensitively, as HTTP header names are).
        """
        header = self.header
        if header is None:
            return None
        name, value, pool = header
        head = raw[: raw.find(b"\r\n\r\n") + 2].lower()
        at = head.find(name)
        if at >= 0:
            start = at + len(name)
            found = raw[start : raw.find(b"\r\n", start)].strip()
            if found == value and pool.backends:
                return pool
        return None

    def choose(self) -> CompiledPool | None:
        """The pool for the next request, or ``None`` when no pool is eligible (503)."""
        single = self.single
        if single is not None:
            return single
        if not self.total:
            return None
        # ``balancer.pick``, inlined: this runs for every request
        return self.pools[bisect_right(self.cumulative, self.random() * self.total)]

    def retry(
        self, failed_version: str, tried: Sequence[BackendState]
    ) -> tuple[CompiledPool, BackendState] | None:
        """Where to retry a request that failed before any response byte, if anywhere."""
        candidates = self.pools + self.reserve
        same = [pool for pool in candidates if pool.version == failed_version]
        start = same[0].cursor if same else 0
        found = retry_candidate(
            [(pool.version, pool.backends) for pool in candidates], failed_version, tried, start
        )
        if found is None:
            return None
        position, backend = found
        return candidates[position], backend


def compile_table(
    pools: Sequence[Pool],
    stats_for: Callable[[str], VersionStats],
    backend_for: Callable[[str, str, int], BackendState],
    none_stats: VersionStats,
    header_route: HeaderRoute | None = None,
    stable_version: str | None = None,
    budget: RetryBudget | None = None,
) -> CompiledTable:
    """Compile the eligible pools of ``pools`` (see ``balancer`` for the eligibility rules).

    With a ``stable_version`` that has backends and a ``budget``, every other pool becomes
    a canary whose failures are retried on the stable pool (``core.retry``).
    """
    plan = weight_plan(pools)

    def compiled(index: int) -> CompiledPool:
        pool = pools[index]
        backends = [backend_for(b.instance_id, b.host, b.port) for b in pool.backends]
        return CompiledPool(pool.version, stats_for(pool.version), backends)

    table = CompiledTable(
        [compiled(i) for i in plan.indices],
        plan.cumulative,
        none_stats,
        reserve=[compiled(i) for i in plan.reserve],
    )
    if header_route is not None:
        for pool in (*table.pools, *table.reserve):
            if pool.version == header_route.version and pool.backends:
                name = b"\r\n" + header_route.name.lower().encode("latin-1") + b":"
                table.header = (name, header_route.value.encode("latin-1"), pool)
    if stable_version is not None and budget is not None:
        every = (*table.pools, *table.reserve)
        stable = next((p for p in every if p.version == stable_version and p.backends), None)
        if stable is not None:
            table.stable = stable
            table.budget = budget
            hold = frozenset(m.encode("ascii") for m in budget.policy.methods)
            for pool in every:
                if pool is not stable:
                    pool.canary = True
                    pool.hold = hold
    return table


class TableSlot:
    """The one mutable reference a listener's connections read their table through."""

    __slots__ = ("label", "table")

    def __init__(self, table: CompiledTable, label: str) -> None:
        self.table = table
        self.label = label  # "service/env", for the router's own error messages
