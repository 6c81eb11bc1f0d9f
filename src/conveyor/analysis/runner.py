"""``AnalysisRun``: measures a template's metrics when they are due and says how it stands.

The controller owns time. It calls ``step(now)`` on each tick; the run measures whatever
``core.analysis.next_due`` says is due (concurrently, each bounded by the metric's timeout),
records the measurements, and reports its phase. There are no background tasks to leak or to
lose on a crash: the state is the list of measurements, ``to_json`` stores it beside the
rollout, and ``from_json`` builds a run that continues where the stored one stopped — the
phases are recomputed from the measurements, so the restarted controller agrees with the
one that died.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from conveyor.analysis.base import AnalysisContext, BeginsRuns, MetricProvider, failed_to_measure
from conveyor.core.analysis import (
    SEVERITY,
    Assessment,
    Measurement,
    MetricPhase,
    MetricResult,
    MetricSpec,
    assess_metric,
    next_due,
    run_phase,
)

TIMEOUT_GRACE = 1.0
"""Seconds a provider gets beyond the metric's timeout to report its own timeout first."""
FORMAT = 1


class RunSummary(NamedTuple):
    """Where the run stands, in the shape the rollout core records (phase, message, evidence)."""

    phase: MetricPhase
    message: str
    evidence: dict[str, Any]


class AnalysisRun:
    """One execution of an analysis template's metrics for one release."""

    def __init__(
        self,
        metrics: Sequence[MetricSpec],
        providers: Mapping[str, MetricProvider],
        context: AnalysisContext,
        *,
        started_at: float,
        results: Mapping[str, MetricResult] | None = None,
        terminated: bool = False,
    ) -> None:
        names = [metric.name for metric in metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique in a run: {names}")
        self.metrics = tuple(metrics)
        self.providers = dict(providers)
        self.context = context
        self.started_at = started_at
        self.terminated = terminated
        previous = dict(results or {})
        self._results = {name: previous.get(name, MetricResult(name)) for name in names}
        self._begun = False

    # -- where the run stands --------------------------------------------------------------

    @property
    def results(self) -> Mapping[str, MetricResult]:
        return dict(self._results)

    def assessments(self) -> dict[str, Assessment]:
        return {
            metric.name: assess_metric(
                metric, self._results[metric.name], terminating=self.terminated
            )
            for metric in self.metrics
        }

    @property
    def phase(self) -> MetricPhase:
        return run_phase(a.phase for a in self.assessments().values())

    def summary(self) -> RunSummary:
        """The phase, the sentence that explains it, and per-metric evidence for the ledger."""
        assessments = self.assessments()
        phase = run_phase(a.phase for a in assessments.values())
        evidence: dict[str, Any] = {}
        for name, assessment in assessments.items():
            result = self._results[name]
            evidence[name] = {
                "phase": assessment.phase,
                "message": assessment.message,
                "measurements": len(result.measurements),
                "successful": result.successful,
                "failed": result.failed,
                "inconclusive": result.inconclusive,
                "errors": result.errors,
                "last": result.last.to_json() if result.last else None,
            }
        if phase == "running":
            waiting = [name for name, a in assessments.items() if a.phase == "running"]
            return RunSummary(phase, f"measuring {', '.join(waiting)}", evidence)
        deciding = max(assessments.items(), key=lambda item: SEVERITY[item[1].phase], default=None)
        if deciding is None:
            return RunSummary(phase, "no metrics to measure", evidence)
        name, assessment = deciding
        if phase == "successful":
            return RunSummary(phase, f"all {len(assessments)} metrics passed", evidence)
        return RunSummary(phase, f"{name} {assessment.phase}: {assessment.message}", evidence)

    def next_due(self, now: float) -> float | None:
        """The earliest time a metric is due (the controller's next wake-up), None when done."""
        if self.terminated or self.phase != "running":
            return None
        times = [
            due
            for metric in self.metrics
            if (due := next_due(metric, self._results[metric.name], self.started_at, now))
            is not None
        ]
        return min(times, default=None)

    # -- acting ----------------------------------------------------------------------------

    def terminate(self) -> None:
        """Stop measuring; metrics still open count as passed (Argo's termination)."""
        self.terminated = True

    async def step(self, now: float) -> list[Measurement]:
        """Take every measurement that is due at ``now``; returns them in metric order."""
        if not self._begun:
            self._begin()
        if self.terminated or self.phase != "running":
            return []
        due = [
            metric
            for metric in self.metrics
            if (at := next_due(metric, self._results[metric.name], self.started_at, now))
            is not None
            and at <= now
        ]
        taken = await asyncio.gather(*(self._measure(metric, now) for metric in due))
        for metric, measurement in zip(due, taken, strict=True):
            self._results[metric.name] = self._results[metric.name].add(measurement)
        return list(taken)

    def _begin(self) -> None:
        self._begun = True
        for metric in self.metrics:
            provider = self.providers.get(metric.provider)
            if isinstance(provider, BeginsRuns):
                provider.begin(metric, self._context(metric))

    def _context(self, metric: MetricSpec) -> AnalysisContext:
        return dataclasses.replace(self.context, previous=self._results[metric.name].last)

    async def _measure(self, metric: MetricSpec, now: float) -> Measurement:
        context = self._context(metric)
        provider = self.providers.get(metric.provider)
        if provider is None:
            known = ", ".join(sorted(self.providers)) or "none"
            message = f"no metric provider '{metric.provider}' here (known: {known})"
            return self._stamp(failed_to_measure(context, now, message), now)
        try:
            measurement = await asyncio.wait_for(
                provider.measure(metric, context), metric.timeout + TIMEOUT_GRACE
            )
        except TimeoutError:
            message = f"{metric.provider} gave no answer within {metric.timeout:g}s"
            measurement = failed_to_measure(context, now, message)
        except Exception as error:  # a provider bug must not stop the controller's tick
            message = f"{metric.provider} provider crashed: {type(error).__name__}: {error}"
            measurement = failed_to_measure(context, now, message)
        return self._stamp(measurement, now)

    def _stamp(self, measurement: Measurement, now: float) -> Measurement:
        """Times come from the controller's tick, so schedules never depend on provider clocks."""
        finished = max(now, self.context.clock())
        return dataclasses.replace(measurement, started_at=now, finished_at=finished)

    # -- storage ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "run_id": self.context.run_id,
            "started_at": self.started_at,
            "terminated": self.terminated,
            "metrics": [metric.to_json() for metric in self.metrics],
            "results": {
                name: [m.to_json() for m in result.measurements]
                for name, result in self._results.items()
            },
        }

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        providers: Mapping[str, MetricProvider],
        context: AnalysisContext,
    ) -> AnalysisRun:
        """Resume a stored run; ``context`` is rebuilt by the caller (routers do not persist)."""
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown analysis run format {data.get('format')!r}")
        results = {
            name: MetricResult(name, tuple(Measurement.from_json(m) for m in measurements))
            for name, measurements in data["results"].items()
        }
        return cls(
            [MetricSpec.from_json(m) for m in data["metrics"]],
            providers,
            context,
            started_at=data["started_at"],
            results=results,
            terminated=data["terminated"],
        )
