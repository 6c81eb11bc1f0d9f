"""What `build:` and `deploy:` pipeline jobs do, against the project the run belongs to.

The pipeline package runs DAGs and knows nothing of services, artifact stores or servers;
this module is the seam where a run touches them:

- a **build** job builds the service once (``artifacts.build``), with the run's id and the
  results finished so far in its signed provenance, then attests those results;
- a **deploy** job attests what the run has passed *before* asking the server for a release,
  so the environment's ``requires: {gates: [...]}`` is checked against a signed record of
  this very run, then follows the rollout to its end: a rollback fails the job;
- when the run ends, everything it built is attested once more with the final results (a
  gate that ran beside or after the build counts for the next promotion).

Every run is on the ledger: ``pipeline.started``, ``artifact.attested`` for each signed
record and ``pipeline.finished`` with each job's result. A store that cannot be reached does
not fail the jobs that do not need it; the run record names what could not be written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from conveyor.artifacts.attestations import JobVerdict, RunFacts, attest_run
from conveyor.artifacts.build import build_service
from conveyor.artifacts.store import ArtifactStore
from conveyor.cli.client import ApiClient, actor
from conveyor.config.loader import LoadedProject
from conveyor.errors import AlreadyDeployed, ConveyorError
from conveyor.pipeline.plan import PlannedJob, RunContext
from conveyor.pipeline.runner import ActionOutcome, JobResult, RunResult
from conveyor.store.engine import default_url
from conveyor.store.records import NewEvent
from conveyor.store.repository import Store

FINAL_PHASES = ("succeeded", "rolled_back", "failed")
POLL = 0.25


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


_JUNIT = ("tests", "failures", "errors", "skipped")


@dataclass
class ProjectActions:
    """``JobActions`` for one `conveyor run` of ``project``; remembers what it built."""

    project: LoadedProject
    run_id: str
    context: RunContext
    commit: str | None
    built: dict[str, str] = field(default_factory=dict)  # digest -> service
    problems: list[str] = field(default_factory=list)
    _store: Store | None = field(default=None, init=False, repr=False)
    _opening: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.project.root)

    @contextmanager
    def store(self) -> Iterator[Store]:
        """The project's store, opened (and migrated) once per run, shared by the job threads;
        a failed open is retried by the next caller rather than remembered."""
        with self._opening:
            if self._store is None:
                self._store = Store.open(default_url(self.project.root))
        yield self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

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

    def record(self, kind: str, details: Mapping[str, Any], service: str | None = None) -> None:
        """Append one event; a store that is down is noted, not fatal to the run."""
        try:
            with self.store() as store:
                store.append_events([NewEvent(kind, details, service=service)], actor=actor())
        except ConveyorError as error:
            self.problems.append(f"{kind} not recorded on the ledger: {error.message}")

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
            self.attest(digest, service, result.jobs)
        self.record(
            "pipeline.finished",
            {
                "run": self.run_id,
                "result": result.result,
                "duration_seconds": round(result.duration, 3),
                "jobs": {job.name: job.result for job in result.jobs},
                "artifacts": dict(self.built),
            },
        )

    def attest(self, digest: str, service: str, finished: Sequence[JobResult]) -> None:
        signed = attest_run(self.artifacts, digest, service, self.facts(finished))
        passed = sorted(job.name for job in finished if job.result == "success")
        self.record(
            "artifact.attested",
            {"artifact": digest, "run": self.run_id, "key": signed["key"], "passed": passed},
            service=service,
        )

    # --- JobActions ---------------------------------------------------------------------

    def build(
        self, job: PlannedJob, finished: Sequence[JobResult], log: Callable[[str], None]
    ) -> ActionOutcome:
        service = job.service
        assert service is not None
        try:
            spec = self.project.config.service(service)
            with self.store() as store:
                built = build_service(
                    self.project.root,
                    service,
                    spec,
                    store,
                    self.artifacts,
                    actor=actor(),
                    log=log,
                    pipeline={
                        "run": self.run_id,
                        "jobs": {j.name: j.result for j in finished},
                    },
                )
        except ConveyorError as error:
            return _failed(error, log)
        digest = built.artifact.digest
        self.built[digest] = service
        self.attest(digest, service, finished)
        state = "unchanged, reused" if built.reused else "stored"
        log(f"conveyor: built {service} {digest} ({state}), signed and attested")
        return ActionOutcome(
            "success",
            outputs={"digest": digest, "service": service, "reused": str(built.reused).lower()},
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
            self.project.config.environment(env)
            with self.store() as store:
                digest = store.get_artifact(artifact).digest
            self.attest(digest, service, finished)
            client = ApiClient(self.project.root)
            try:
                release = client.post(
                    "/api/v1/releases",
                    {"service": service, "env": env, "artifact": digest, "set": dict(deploy.set)},
                )
                log(f"conveyor: release {release['name']} created for {digest}")
                final = _follow(client, release, log, cancelled, deploy.timeout)
            finally:
                client.close()
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


def _follow(
    client: ApiClient,
    release: Mapping[str, Any],
    log: Callable[[str], None],
    cancelled: threading.Event,
    timeout: float,
) -> Mapping[str, Any]:
    """Log the release's ledger events until its rollout ends, the run stops, or time is up."""
    after = 0
    current = release
    deadline = time.monotonic() + timeout
    while not cancelled.is_set() and time.monotonic() < deadline:
        for event in client.get("/api/v1/events", release=release["id"], after=after)["events"]:
            after = event["seq"]
            log(f"conveyor: {event['kind']} {_brief(event['details'])}")
        current = client.get(f"/api/v1/releases/{release['id']}")
        if current["phase"] in FINAL_PHASES:
            break
        cancelled.wait(POLL)
    return current


def _brief(details: Mapping[str, Any]) -> str:
    keep = ("weights", "message", "reason", "count", "phase")
    return " ".join(f"{k}={details[k]}" for k in keep if details.get(k) not in (None, ""))


def _failed(error: ConveyorError, log: Callable[[str], None]) -> ActionOutcome:
    log(f"conveyor: {error.message}")
    if error.hint:
        log(f"conveyor: hint: {error.hint}")
    return ActionOutcome("failure", error.message)
