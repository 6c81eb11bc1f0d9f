"""The ``builtin`` provider: judge a canary from the built-in router's own counters.

The router keeps cumulative per-version counters and a reservoir of recent latencies; nothing
stores a time series. So a measurement is a *window* between two snapshots:

* window queries (``error_rate``, ``request_rate``, ``latency_pNN``) look at the canary's
  traffic since the metric's previous measurement, or since the run began for the first one;
* comparisons (``compare_error_rate``, ``compare_latency``) look at both versions' traffic
  since the run began, so evidence accumulates and the judge can decide as soon as it
  suffices, spending its alpha over the doublings of the canary's traffic rather than over
  the measurements (see ``core.judge``), so nothing about past looks needs remembering.

Snapshots are kept in memory per (run, metric) and also written into each measurement's
evidence (``end`` and ``base``): a controller restarted from stored measurements diffs against
the stored snapshot, unless the counters went backwards (the router restarted too), in which
case the window starts at zero — everything the new router has seen. Latency samples of a
window are the newest *n* of the reservoir, *n* being the requests counted in the window.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.analysis.base import AnalysisContext, RouterView, failed_to_measure, judged
from conveyor.config.analysis import ERROR_RATE_DEFAULTS, LATENCY_DEFAULTS
from conveyor.core.analysis import Measurement, MetricSpec, as_measurement_phase
from conveyor.core.judge import Verdict, compare_error_rate, compare_latency
from conveyor.core.stats import quantile

QUANTILES = {"latency_p50": 0.50, "latency_p95": 0.95, "latency_p99": 0.99}
_MEMORY = 4096  # (run, metric) snapshots kept; old runs fall out first


@dataclass(frozen=True)
class _Count:
    requests: int = 0
    errors: int = 0


@dataclass(frozen=True)
class _Snapshot:
    at: float
    versions: Mapping[str, _Count]

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "versions": {
                v: {"requests": c.requests, "errors": c.errors} for v, c in self.versions.items()
            },
        }

    @classmethod
    def from_json(cls, data: object) -> _Snapshot | None:
        """A snapshot stored in evidence; None for anything unreadable (then it is not used)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("versions"), Mapping):
            return None
        try:
            versions = {
                str(version): _Count(int(count["requests"]), int(count["errors"]))
                for version, count in data["versions"].items()
            }
            return cls(float(data["at"]), versions)
        except (KeyError, TypeError, ValueError):
            return None

    def fits(self, current: _Snapshot) -> bool:
        """Usable as a base for ``current``: same versions, counters that only went up."""
        return all(
            v in current.versions
            and c.requests <= current.versions[v].requests
            and c.errors <= current.versions[v].errors
            for v, c in self.versions.items()
        ) and set(current.versions) <= set(self.versions)


class BuiltinProvider:
    """Measures canary windows and canary-vs-stable comparisons from a ``RouterView``."""

    kind = "builtin"

    def __init__(self) -> None:
        self._last: OrderedDict[tuple[str, str], _Snapshot] = OrderedDict()
        self._begun: OrderedDict[tuple[str, str], _Snapshot] = OrderedDict()

    def begin(self, spec: MetricSpec, context: AnalysisContext) -> None:
        if context.router is None or context.canary_version is None:
            return
        _remember(
            self._begun,
            (context.run_id, spec.name),
            _snap(context.router, _versions(context), context.clock()),
        )

    async def measure(self, spec: MetricSpec, context: AnalysisContext) -> Measurement:
        started = context.clock()
        query = str(spec.config.get("query", ""))
        router = context.router
        if router is None:
            return failed_to_measure(
                context, started, "the builtin provider needs the built-in router"
            )
        if context.canary_version is None:
            return failed_to_measure(context, started, "no canary version to measure")
        if query in COMPARISONS and context.stable_version is None:
            return Measurement(
                "inconclusive",
                None,
                started,
                context.clock(),
                "no stable version to compare against (first release)",
            )
        handler = QUERIES.get(query)
        if handler is None:
            known = ", ".join(QUERIES)
            return failed_to_measure(
                context, started, f"unknown builtin query {query!r} (known: {known})"
            )
        now = _snap(router, _versions(context), started)
        key = (context.run_id, spec.name)
        base = self._base(key, query, context, now)
        measurement = handler(_Window(spec, context, router, base, now, started))
        _remember(self._last, key, now)
        return measurement

    def _base(
        self, key: tuple[str, str], query: str, context: AnalysisContext, now: _Snapshot
    ) -> _Snapshot:
        """Where this window starts; zero (the router's start) once counters went backwards."""
        zero = _Snapshot(0.0, {version: _Count() for version in now.versions})
        last = self._last.get(key)
        if query not in COMPARISONS and last is not None and last.fits(now):
            return last
        previous = context.previous.evidence if context.previous is not None else {}
        stored = _Snapshot.from_json(previous.get("base" if query in COMPARISONS else "end"))
        if stored is not None:
            return stored if stored.fits(now) else zero
        begun = self._begun.get(key)
        return begun if begun is not None and begun.fits(now) else zero


def _remember(
    memory: OrderedDict[tuple[str, str], _Snapshot], key: tuple[str, str], snapshot: _Snapshot
) -> None:
    memory[key] = snapshot
    memory.move_to_end(key)
    while len(memory) > _MEMORY:
        memory.popitem(last=False)


def _versions(context: AnalysisContext) -> tuple[str, ...]:
    versions = [v for v in (context.canary_version, context.stable_version) if v is not None]
    return tuple(dict.fromkeys(versions))


def _snap(router: RouterView, versions: tuple[str, ...], at: float) -> _Snapshot:
    counts = {}
    for version in versions:
        counters = router.counters(version)
        counts[version] = _Count(counters.requests, counters.errors)
    return _Snapshot(at, counts)


# -- queries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """One measurement's inputs: the metric, the release, and the two snapshots to diff."""

    spec: MetricSpec
    context: AnalysisContext
    router: RouterView
    base: _Snapshot
    now: _Snapshot
    started: float

    def counts(self, version: str) -> _Count:
        before, after = self.base.versions.get(version, _Count()), self.now.versions[version]
        return _Count(after.requests - before.requests, after.errors - before.errors)

    def samples(self, version: str) -> tuple[float, ...]:
        """The window's latencies: the newest n of the reservoir, n = requests counted."""
        requests = self.counts(version).requests
        return self.router.latency_samples(version)[-requests:] if requests > 0 else ()

    def seconds(self) -> float | None:
        return self.now.at - self.base.at if self.base.at else None

    def evidence(self, **extra: Any) -> dict[str, Any]:
        return {
            "window_seconds": self.seconds(),
            **extra,
            "base": self.base.to_json(),
            "end": self.now.to_json(),
        }

    def settings(self, defaults: Mapping[str, float | int]) -> dict[str, Any]:
        """The comparison's settings; a spec stored before a setting existed gets its default."""
        return {**defaults, **(self.spec.config.get("compare") or {})}

    @property
    def canary(self) -> str:
        return self.context.canary_version or ""

    @property
    def stable(self) -> str:
        return self.context.stable_version or ""


def _error_rate(w: _Window) -> Measurement:
    canary = w.counts(w.canary)
    value = canary.errors / canary.requests if canary.requests else None
    evidence = w.evidence(requests=canary.requests, errors=canary.errors)
    return judged(
        w.spec, value, w.context, w.started, evidence=evidence, sample_size=canary.requests
    )


def _request_rate(w: _Window) -> Measurement:
    requests = w.counts(w.canary).requests
    seconds = w.seconds()
    value = requests / seconds if seconds and seconds > 0 else None
    return judged(w.spec, value, w.context, w.started, evidence=w.evidence(requests=requests))


def _latency(w: _Window) -> Measurement:
    samples = w.samples(w.canary)
    q = QUANTILES[str(w.spec.config["query"])]
    value = quantile(samples, q) if samples else None
    evidence = w.evidence(requests=w.counts(w.canary).requests, samples=len(samples), quantile=q)
    return judged(w.spec, value, w.context, w.started, evidence=evidence, sample_size=len(samples))


def _compare_error_rate(w: _Window) -> Measurement:
    settings, canary, stable = (
        w.settings(ERROR_RATE_DEFAULTS),
        w.counts(w.canary),
        w.counts(w.stable),
    )
    verdict = compare_error_rate(
        canary.errors,
        canary.requests,
        stable.errors,
        stable.requests,
        max_delta=float(settings["max_delta"]),
        alpha=float(settings["alpha"]),
        beta=float(settings["beta"]),
        min_requests=int(settings["min_requests"]),
    )
    return _verdict(w, verdict, verdict.evidence.get("probability_worse"))


def _compare_latency(w: _Window) -> Measurement:
    settings = w.settings(LATENCY_DEFAULTS)
    verdict = compare_latency(
        w.samples(w.canary),
        w.samples(w.stable),
        quantile=float(settings["quantile"]),
        max_ratio=float(settings["max_ratio"]),
        min_delta=float(settings["min_delta"]),
        alpha=float(settings["alpha"]),
        beta=float(settings["beta"]),
        min_samples=int(settings["min_samples"]),
    )
    return _verdict(w, verdict, verdict.evidence.get("ratio"))


def _verdict(w: _Window, verdict: Verdict, value: object) -> Measurement:
    phase = as_measurement_phase(verdict.outcome)
    evidence = w.evidence(**verdict.evidence)
    return Measurement(phase, value, w.started, w.context.clock(), verdict.detail, evidence)


QUERIES: dict[str, Callable[[_Window], Measurement]] = {
    "error_rate": _error_rate,
    "request_rate": _request_rate,
    "latency_p50": _latency,
    "latency_p95": _latency,
    "latency_p99": _latency,
    "compare_error_rate": _compare_error_rate,
    "compare_latency": _compare_latency,
}
COMPARISONS = ("compare_error_rate", "compare_latency")
