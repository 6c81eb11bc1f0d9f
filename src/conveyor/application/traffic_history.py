"""Request rate, error rate and latency per version over time, for the dashboard's charts.

Routers keep cumulative counters only (``VersionCounters``); a chart needs rates. The
server samples every served pair every few seconds into a bounded ring per pair and turns
differences of consecutive samples into points. Nothing is stored: a restarted server
charts from its start (the ledger keeps what was decided; this is what users saw).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from conveyor.core.model import VersionCounters

POINTS = 300
"""Samples kept per pair (10 minutes at the default period)."""
MAX_PAIRS = 5000
PERIOD = 2.0

log = logging.getLogger("conveyor.dashboard")

Sample = tuple[float, Mapping[str, VersionCounters]]


@dataclass
class TrafficHistory:
    read: Callable[[], Mapping[tuple[str, str], Mapping[str, VersionCounters]]]
    clock: Callable[[], float]
    period: float = PERIOD
    _rings: dict[tuple[str, str], deque[Sample]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        now = self.clock()
        for key, counters in self.read().items():
            ring = self._rings.get(key)
            if ring is None:
                if len(self._rings) >= MAX_PAIRS:
                    continue
                ring = self._rings[key] = deque(maxlen=POINTS)
            ring.append((now, dict(counters)))

    def start(self) -> None:
        """Sample in the background from now on (idempotent; needs a running loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a chart must never take the server down
                log.exception("sampling router counters failed")
            await asyncio.sleep(self.period)

    def series(self, service: str, env: str, since: float = 0.0) -> dict[str, Any]:
        """Chart data: times, and per version the request rate (/s), error rate (%) and mean
        latency (ms) between consecutive samples; ``None`` where a version had no traffic."""
        ring = list(self._rings.get((service, env), ()))
        return series_of(ring, since)


def series_of(ring: list[Sample], since: float = 0.0) -> dict[str, Any]:
    """Rates from cumulative samples (pure; see ``TrafficHistory.series``)."""
    versions = sorted({v for _, counters in ring for v in counters})
    times: list[float] = []
    out: dict[str, dict[str, list[float | None]]] = {
        v: {"rps": [], "errors": [], "latency_ms": []} for v in versions
    }
    for (t0, before), (t1, after) in pairwise(ring):
        if t1 < since or t1 <= t0:
            continue
        times.append(round(t1, 3))
        for v in versions:
            a, b = before.get(v, VersionCounters()), after.get(v, VersionCounters())
            requests = b.requests - a.requests
            series = out[v]
            if requests <= 0:  # nothing (or a restarted router): a gap, not a zero error rate
                series["rps"].append(0.0 if v in after else None)
                series["errors"].append(None)
                series["latency_ms"].append(None)
                continue
            series["rps"].append(round(requests / (t1 - t0), 3))
            series["errors"].append(round(100 * (b.errors - a.errors) / requests, 3))
            series["latency_ms"].append(round(1000 * (b.latency_sum - a.latency_sum) / requests, 3))
    return {"times": times, "versions": out}
