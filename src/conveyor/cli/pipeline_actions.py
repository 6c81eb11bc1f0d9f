"""What `build:` and `deploy:` pipeline jobs do, against the project the run belongs to.

The pipeline package runs DAGs and knows nothing of services, artifacts or servers; this
module is the seam where a run touches them, and it touches them only through the API:

- a **build** job builds the service here (in the run's process, as in CI), hands the
  archive and its facts to the server (``publish``), then has the server attest the results
  finished so far;
- a **deploy** job has the server attest what the run has passed *before* asking for a
  release, so the environment's ``requires: {gates: [...]}`` is checked against a signed
  record of this very run, then follows the rollout to its end: a rollback fails the job;
- when the run ends, everything it built is attested once more with the final results (a
  gate that ran beside or after the build counts for the next promotion).

The server signs attestations with a key the CLI never sees, and writes what it did on the
ledger itself; the run adds only ``pipeline.started`` and ``pipeline.finished``. A server
that cannot be reached does not fail the jobs that do not need it: the run record names
what could not be recorded, once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.artifacts.attestations import JobVerdict, RunFacts
from conveyor.cli.client import ApiClient
from conveyor.cli.follow import FINAL_PHASES, follow
from conveyor.cli.publish import build_and_publish
from conveyor.config.loader import LoadedProject
from conveyor.errors import AlreadyDeployed, ConveyorError, ServerUnavailable
from conveyor.layout import Layout
from conveyor.pipeline.plan import PlannedJob, RunContext
from conveyor.pipeline.runner import ActionOutcome, JobResult, RunResult

_JUNIT = ("tests", "failures", "errors", "skipped")


def verdicts(results: Sequence[JobResult]) -> tuple[JobVerdict, ...]:
    """What an attestation says of each job: result, reason and what it checked, no logs."""
    return tuple(
        JobVerdict(
            job.name,
            job.result,
            job.reason,
            job.gate.gate if job.gate is not None else None,
            job.gate.summary if job.gate is not None else _reports_summary(job),
        )
        for job in results
    )


def _reports_summary(job: JobResult) -> str | None:
    """``junit 120 tests, 0 failures, 0 errors, 3 skipped; coverage 87.5%`` or None."""
    parts: list[str] = []
    if job.reports:
        counts = (f"{sum(getattr(r, key) for r in job.reports)} {key}" for key in _JUNIT)
        parts.append("junit " + ", ".join(counts))
    percents = [c.percent for c in job.coverage if c.percent is not None]
    if percents:
        parts.append("coverage " + ", ".join(f"{p:g}%" for p in percents))
    return "; ".join(parts) or None


@dataclass
class ProjectActions:
    """``JobActions`` for one `conveyor run` of ``project``; remembers what it built."""

    project: LoadedProject
    run_id: str
    context: RunContext
    commit: str | None
    built: dict[str, str] = field(default_factory=dict)  # digest -> service
    problems: list[str] = field(default_factory=list)
    _client: ApiClient | None = field(default=None, init=False, repr=False)
    _connecting: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def layout(self) -> Layout:
        return Layout(self.project.root)

    def client(self) -> ApiClient:
        """The project's server, found once per run and shared by the job threads; a
        server that was not running is looked for again by the next caller."""
        with self._connecting:
            if self._client is None:
                self._client = ApiClient.for_project(self.layout)
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def facts(self, finished: Sequence[JobResult]) -> RunFacts:
        return RunFacts(
            run=self.run_id,
            pipeline=str(self.project.file),
            branch=self.context.branch,
            tag=self.context.tag,
            commit=self.commit,
            recorded=time.time(),
            jobs=verdicts(finished),
        )

    # --- the ledger ---------------------------------------------------------------------

    def record(self, kind: str, details: Mapping[str, Any]) -> None:
        """Append a pipeline event; a server that cannot take it is noted, not fatal."""
        try:
            self.client().post("/api/v1/pipeline-events", {"kind": kind, "details": details})
        except ServerUnavailable as error:
            self._note(f"this run is not on the ledger: {error.message}")
        except ConveyorError as error:
            self._note(f"{kind} not recorded on the ledger: {error.message}")

    def _note(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    def started(self, jobs: Sequence[str]) -> None:
        self.record(
            "pipeline.started",
            {
                "run": self.run_id,
                "pipeline": str(self.project.file),
                "branch": self.context.branch,
                "tag": self.context.tag,
                "commit": self.commit,
                "jobs": list(jobs),
            },
        )

    def finished(self, result: RunResult) -> None:
        """Attest the final results on everything this run built, then close the run."""
        for digest, service in self.built.items():
            try:
                self.attest(digest, service, result.jobs)
            except ConveyorError as error:
                self._note(f"the final attestation of {digest} failed: {error.message}")
        self.record(
            "pipeline.finished",
            {
                "run": self.run_id,
                "result": result.result,
                "duration_seconds": round(result.duration, 3),
                "jobs": {job.name: job.result for job in result.jobs},
                "durations": {job.name: round(job.duration, 3) for job in result.jobs},
                "artifacts": dict(self.built),
            },
        )

    def attest(self, digest: str, service: str, finished: Sequence[JobResult]) -> None:
        """Have the server sign what this run says about ``digest`` so far."""
        run = dataclasses.asdict(self.facts(finished))
        self.client().post(
            "/api/v1/attestations", {"service": service, "digest": digest, "run": run}
        )

    # --- JobActions ---------------------------------------------------------------------

    def build(
        self, job: PlannedJob, finished: Sequence[JobResult], log: Callable[[str], None]
    ) -> ActionOutcome:
        service = job.service
        assert service is not None
        try:
            spec = self.project.config.service(service)
            published = build_and_publish(
                self.client(),
                self.layout,
                service,
                spec,
                log=log,
                on_wait=log,
                pipeline={"run": self.run_id, "jobs": {j.name: j.result for j in finished}},
            )
            digest = published.digest
            self.built[digest] = service
            self.attest(digest, service, finished)
        except ConveyorError as error:
            return _failed(error, log)
        state = "unchanged, reused" if published.reused else "stored"
        log(f"conveyor: built {service} {digest} ({state}), signed and attested")
        return ActionOutcome(
            "success",
            outputs={"digest": digest, "service": service, "reused": str(published.reused).lower()},
        )

    def deploy(
        self,
        job: PlannedJob,
        artifact: str,
        finished: Sequence[JobResult],
        log: Callable[[str], None],
        cancelled: threading.Event,
    ) -> ActionOutcome:
        deploy = job.spec.deploy
        assert deploy is not None and job.service is not None
        service, env = job.service, deploy.env
        try:
            client = self.client()
            digest = str(client.get(f"/api/v1/artifacts/{artifact}")["digest"])
            self.attest(digest, service, finished)
            release = client.post(
                "/api/v1/releases",
                {"service": service, "env": env, "artifact": digest, "set": dict(deploy.set)},
            )
            log(f"conveyor: release {release['name']} created for {digest}")
            final = follow(
                client,
                release,
                on_event=lambda e: log(f"conveyor: {e['kind']} {_brief(e['details'])}"),
                cancelled=cancelled,
                timeout=deploy.timeout,
            )
        except AlreadyDeployed as done:
            # A re-run on unchanged code: the environment is already where this job wants it.
            log(f"conveyor: {done.message}; nothing to deploy")
            return ActionOutcome("success", outputs={"phase": "unchanged", "digest": artifact})
        except ConveyorError as error:
            return _failed(error, log)
        outputs = {
            "release": str(final["name"]),
            "revision": str(final["revision"]),
            "phase": str(final["phase"]),
            "digest": digest,
        }
        phase = final["phase"]
        if phase == "succeeded":
            return ActionOutcome("success", outputs=outputs)
        message = (final.get("status") or {}).get("message") or phase
        if phase in FINAL_PHASES:
            why = f"{final['name']} {phase.replace('_', ' ')}: {message}"
        elif cancelled.is_set():
            why = f"stopped following {final['name']} ({phase}); the rollout goes on"
        else:
            why = f"{final['name']} still {phase} after {deploy.timeout:g}s: {message}"
        return ActionOutcome("failure", why, outputs)


def _brief(details: Mapping[str, Any]) -> str:
    keep = ("weights", "message", "reason", "count", "phase")
    return " ".join(f"{k}={details[k]}" for k in keep if details.get(k) not in (None, ""))


def _failed(error: ConveyorError, log: Callable[[str], None]) -> ActionOutcome:
    log(f"conveyor: {error.message}")
    if error.hint:
        log(f"conveyor: hint: {error.hint}")
    return ActionOutcome("failure", error.message)
