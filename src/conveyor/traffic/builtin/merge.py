"""How the numbers of the router's processes become one router's: counters, in-flight, samples.

With worker processes (``workers``) each process counts what it served in its own
``VersionStats``; the router process adds them up when asked. These are pure functions, so
the rules can be tested apart from any process:

* counters add version by version (``control.add_counters``), and so do in-flight counts;
* a worker that died leaves its last-read counters in a *retired* base, added for good,
  so merged counters never go backwards across a worker's death; what it counted after its
  last read is lost (``WorkerPool`` reads every second, so at most that much of its share);
* latency samples carry no time, so the newest of each process are interleaved from the
  newest backwards: the tail of the merged samples, which is what an analysis window reads
  (``samples[-requests:]``), holds each process's newest in turn, about as they happened
  since the kernel spreads connections evenly over the processes. Each process gives at
  most ``size // processes``, so the merged reservoir is no larger than one process's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from conveyor.core.model import VersionCounters
from conveyor.traffic.builtin.control import add_counters
from conveyor.traffic.builtin.metrics import SeriesSnapshot


def merge_series(parts: Iterable[Iterable[SeriesSnapshot]]) -> list[SeriesSnapshot]:
    """Several processes' series as one router's: same (service, env, version) added up."""
    merged: dict[tuple[str, str, str], SeriesSnapshot] = {}
    for part in parts:
        for series in part:
            key = (series.service, series.env, series.version)
            seen = merged.get(key)
            merged[key] = (
                series
                if seen is None
                else replace(
                    seen,
                    counters=add_counters(seen.counters, series.counters),
                    in_flight=seen.in_flight + series.in_flight,
                )
            )
    return list(merged.values())


def retire(base: Iterable[SeriesSnapshot], last: Iterable[SeriesSnapshot]) -> list[SeriesSnapshot]:
    """The retired base once a worker whose last-read series were ``last`` has died: its
    counters stay, its in-flight requests do not (nothing is in flight through the dead)."""
    return merge_series([base, [replace(series, in_flight=0) for series in last]])


def route_counters(
    series: Iterable[SeriesSnapshot], service: str, env: str
) -> dict[str, VersionCounters]:
    """One route's counters per version, out of every route's series."""
    return {s.version: s.counters for s in series if s.service == service and s.env == env}


def interleave_samples(parts: Sequence[Sequence[float]], size: int) -> tuple[float, ...]:
    """At most ``size`` latencies out of several processes' reservoirs (each oldest first):
    the newest ``size // len(parts)`` of each, interleaved so the newest come last."""
    if not parts:
        return ()
    share = max(1, size // len(parts))
    newest_first = [list(reversed(part[-share:])) for part in parts]
    merged: list[float] = []
    for position in range(max(len(part) for part in newest_first)):
        merged.extend(part[position] for part in newest_first if position < len(part))
    merged.reverse()
    return tuple(merged)
