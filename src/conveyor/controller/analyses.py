"""The analysis runs of one release, as the driver keeps them between ticks.

Runs are created when the core asks (`RunAnalysis`), stepped every tick (each provider is
called only when its metric is due), and stored beside the rollout status after every
measurement, so a restarted controller resumes them where they were instead of judging a
canary twice. Every measurement also goes on the ledger, with its sample sizes and verdict:
that is the evidence an abort or a promotion is shown with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from conveyor.analysis.base import AnalysisContext, MetricProvider, RouteView
from conveyor.analysis.runner import AnalysisRun
from conveyor.core.state import AnalysisState, RolloutSpec
from conveyor.errors import ConveyorError
from conveyor.store.records import NewEvent, ReleaseRecord
from conveyor.traffic.base import TrafficRouter


class ReleaseAnalyses:
    def __init__(
        self,
        *,
        service: str,
        env: str,
        router: TrafficRouter,
        providers: Mapping[str, MetricProvider],
        clock: Callable[[], float],
        workdir: Path | None,
    ) -> None:
        self.service = service
        self.env = env
        self.router = router
        self.clock = clock
        self.workdir = workdir
        self.providers = providers
        self.runs: dict[str, AnalysisRun] = {}
        self.broken: dict[str, str] = {}  # runs that could not start, and why
        self.release_id: int | None = None

    def load(self, release: ReleaseRecord, spec: RolloutSpec) -> None:
        """Adopt the runs stored with `release` (after a restart, or a new release)."""
        if self.release_id == release.id:
            return
        self.release_id = release.id
        self.runs = {}
        self.broken = {}
        for key, stored in release.analysis.items():
            if "broken" in stored:
                self.broken[key] = str(stored["broken"])
                continue
            context = self._context(release, spec, key)
            self.runs[key] = AnalysisRun.from_json(stored["run"], self.providers, context)

    def start(self, release: ReleaseRecord, spec: RolloutSpec, key: str, template: str) -> None:
        """Start run ``key`` from the template frozen in the release's plan.

        A run that cannot start (a release stored before plans, whose templates were never
        frozen; an argument with no value) is an analysis *error*, which the core treats as
        a failed judgement: the release rolls back rather than waiting on nothing.
        """
        if key in self.runs or key in self.broken:
            return
        frozen = release.plan.analysis.get(template)
        if frozen is None:
            self.broken[key] = (
                f"analysis template '{template}' is not part of this release's plan "
                "(a release created before plans were frozen)"
            )
            return
        context = self._context(release, spec, key)
        try:
            metrics = frozen.filled(context.args)
        except ConveyorError as error:
            self.broken[key] = error.message
            return
        self.runs[key] = AnalysisRun(metrics, self.providers, context, started_at=self.clock())

    async def step(self) -> list[NewEvent]:
        """Measure what is due; ledger events for every measurement taken."""
        events: list[NewEvent] = []
        now = self.clock()
        for key, run in self.runs.items():
            measured = await run.step(now)
            events.extend(
                NewEvent("analysis.measured", {"run": key, **m.to_json()}) for m in measured
            )
            summary = run.summary()
            if measured and summary.phase != "running":
                events.append(
                    NewEvent(
                        "analysis.completed",
                        {
                            "run": key,
                            "phase": summary.phase,
                            "message": summary.message,
                            "evidence": summary.evidence,
                        },
                    )
                )
        return events

    @property
    def active(self) -> bool:
        """Whether this release has any analysis run, started or broken."""
        return bool(self.runs or self.broken)

    def terminate(self) -> None:
        for run in self.runs.values():
            run.terminate()

    def states(self) -> dict[str, AnalysisState]:
        states = {key: AnalysisState("error", message) for key, message in self.broken.items()}
        for key, run in self.runs.items():
            summary = run.summary()
            states[key] = AnalysisState(summary.phase, summary.message, summary.evidence)
        return states

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            key: {"broken": message, "phase": "error", "summary": message}
            for key, message in self.broken.items()
        }
        for key, run in self.runs.items():
            summary = run.summary()
            out[key] = {"run": run.to_json(), "phase": summary.phase, "summary": summary.message}
        return out

    def _context(self, release: ReleaseRecord, spec: RolloutSpec, key: str) -> AnalysisContext:
        args = {
            "service": self.service,
            "env": self.env,
            "canary_version": spec.version,
            "stable_version": spec.stable_version or "",
            "canary_revision": str(release.revision),
            "stable_revision": str(spec.stable_revision or ""),
        }
        return AnalysisContext(
            run_id=f"{self.service}/{self.env}/r{release.revision}/{key}",
            args=args,
            canary_version=spec.version,
            stable_version=spec.stable_version,
            router=RouteView(self.router, self.service, self.env),
            clock=self.clock,
            workdir=self.workdir,
        )
