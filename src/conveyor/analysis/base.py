"""The ``MetricProvider`` seam, and what a provider is given to measure with.

A provider turns one ``MetricSpec`` into one ``Measurement``. It never raises for a failure
of the outside world (Prometheus down, a script timing out, a 500 from a URL): that is an
*error measurement*, counted against ``consecutive_error_limit`` like Argo's, because an
exception in a provider would otherwise stop the controller's tick for every rollout.

Providers are looked up by ``kind`` (the ``provider:`` of a metric in conveyor.yaml). Those
that need to mark the start of a run — the builtin provider diffs cumulative router counters
and must know where a window begins — also implement ``begin``, which the runner calls once
per run and again after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from conveyor.core.analysis import Measurement, MetricSpec, evaluate
from conveyor.core.model import VersionCounters


class RouterView(Protocol):
    """One route's per-version traffic, as the analysis sees it."""

    def counters(self, version: str) -> VersionCounters:
        """Cumulative counters of a version since the router started (zeros if unseen)."""

    def latency_samples(self, version: str) -> tuple[float, ...]:
        """The most recent latencies of a version in seconds, oldest first."""


class RouterCounters(Protocol):
    """What a router offers for all its routes (``BuiltinRouter`` has exactly this)."""

    def counters(self, service: str, env: str) -> dict[str, VersionCounters]: ...

    def latency_samples(self, service: str, env: str, version: str) -> tuple[float, ...]: ...


@dataclass(frozen=True)
class RouteView:
    """A ``RouterView`` of one (service, environment) route of a router."""

    router: RouterCounters
    service: str
    env: str

    def counters(self, version: str) -> VersionCounters:
        return self.router.counters(self.service, self.env).get(version, VersionCounters())

    def latency_samples(self, version: str) -> tuple[float, ...]:
        return self.router.latency_samples(self.service, self.env, version)


@dataclass(frozen=True)
class AnalysisContext:
    """Everything about the release a provider may need, and the clock to stamp times with.

    ``previous`` is the metric's last recorded measurement, set by the runner for each call:
    providers that diff counters read their last snapshot from its evidence, so a controller
    restarted from stored measurements continues the windows where they were.
    """

    run_id: str
    args: Mapping[str, str] = field(default_factory=dict)
    canary_version: str | None = None
    stable_version: str | None = None
    router: RouterView | None = None
    clock: Callable[[], float] = time.time
    workdir: Path | None = None
    previous: Measurement | None = None


class MetricProvider(Protocol):
    kind: str

    async def measure(self, spec: MetricSpec, context: AnalysisContext) -> Measurement:
        """Take one measurement; failures of the outside world come back as phase error."""


@runtime_checkable
class BeginsRuns(Protocol):
    def begin(self, spec: MetricSpec, context: AnalysisContext) -> None:
        """Mark the start of a run (or of its resumption) for this metric."""


def judged(
    spec: MetricSpec,
    value: Any,
    context: AnalysisContext,
    started_at: float,
    *,
    evidence: Mapping[str, Any] | None = None,
    sample_size: int | None = None,
) -> Measurement:
    """A measurement whose value is judged by the metric's conditions (Argo's way)."""
    phase, message = evaluate(spec, value, sample_size=sample_size)
    return Measurement(phase, value, started_at, context.clock(), message, dict(evidence or {}))


def failed_to_measure(
    context: AnalysisContext,
    started_at: float,
    message: str,
    evidence: Mapping[str, Any] | None = None,
) -> Measurement:
    """An error measurement: nothing was learnt about the canary, try again later."""
    return Measurement("error", None, started_at, context.clock(), message, dict(evidence or {}))
