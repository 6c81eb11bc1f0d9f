"""What pipeline runs hand the server: signed statements of what they checked, and their
start and end on the ledger.

A run's jobs execute where the run does (a laptop, a CI job). The server takes their
results as claims *by the caller* — its identity goes on the ledger — and signs them with
its key as an attestation about one (service, digest), with the server's own clock as the
time of the statement (a client cannot date a claim in the future to make it win). Only
``pipeline.*`` events may be appended by clients; everything else on the ledger is written
by the server about what it did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.application.caller import Caller
from conveyor.artifacts.attestations import JobVerdict, RunFacts, attest_run
from conveyor.artifacts.signing import Keyring
from conveyor.artifacts.store import ArtifactStore
from conveyor.errors import UsageError
from conveyor.store.records import EventRecord, NewEvent
from conveyor.store.repository import Store

CLIENT_EVENTS = frozenset({"pipeline.started", "pipeline.finished"})
MAX_DETAILS = 64 * 1024
MAX_JOBS = 2000
_TEXT = 4096
_SERVICE = re.compile(r"[a-z0-9][a-z0-9-]*")


@dataclass
class Pipelines:
    store: Store
    artifacts: ArtifactStore
    keyring: Keyring
    clock: Callable[[], float]

    def attest(
        self, caller: Caller, service: str, digest: str, run: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Sign what ``run`` says about ``digest`` built for ``service``, and note it."""
        record = self.store.get_artifact(digest)
        if not record.built_for(service):
            raise UsageError(
                f"{record.short} was never built for {service} "
                f"(built for {', '.join(record.services)})",
                hint=f"attest the digest the pipeline built for {service}",
            )
        facts = run_facts(run, recorded=self.clock())
        signed = attest_run(self.artifacts, record.digest, service, facts, self.keyring)
        passed = sorted(job.name for job in facts.jobs if job.result == "success")
        self.store.append_events(
            [
                NewEvent(
                    "artifact.attested",
                    {
                        "artifact": record.digest,
                        "run": facts.run,
                        "key": signed["key"],
                        "passed": passed,
                    },
                    service=service,
                )
            ],
            actor=caller.actor,
        )
        return {"digest": record.digest, "service": service, "run": facts.run, "key": signed["key"]}

    def event(
        self, caller: Caller, kind: str, details: Mapping[str, Any], service: str | None
    ) -> EventRecord:
        if kind not in CLIENT_EVENTS:
            raise UsageError(
                f"clients may append only {', '.join(sorted(CLIENT_EVENTS))}, not {kind!r}",
                hint="everything else on the ledger is written by the server about what it did",
            )
        if not isinstance(details, Mapping):
            raise UsageError("details must be a JSON object")
        if len(json.dumps(details, default=str)) > MAX_DETAILS:
            raise UsageError(f"details are larger than {MAX_DETAILS} bytes")
        if service is not None and not _SERVICE.fullmatch(service):
            raise UsageError(f"{service!r} is not a service name")
        [written] = self.store.append_events(
            [NewEvent(kind, dict(details), service=service)], actor=caller.actor
        )
        return written


def run_facts(data: Mapping[str, Any], *, recorded: float) -> RunFacts:
    """``RunFacts`` from a client's JSON, checked field by field; the time is the server's."""
    if not isinstance(data, Mapping):
        raise UsageError("run must be a JSON object (RunFacts)")
    jobs = data.get("jobs")
    if not isinstance(jobs, list) or len(jobs) > MAX_JOBS:
        raise UsageError(f"run.jobs must be a list of at most {MAX_JOBS} jobs")
    return RunFacts(
        run=_text(data, "run", required=True) or "",
        pipeline=_text(data, "pipeline", required=True) or "",
        branch=_text(data, "branch"),
        tag=_text(data, "tag"),
        commit=_text(data, "commit"),
        recorded=recorded,
        jobs=tuple(_job(job) for job in jobs),
    )


def _job(data: object) -> JobVerdict:
    if not isinstance(data, Mapping):
        raise UsageError("each of run.jobs must be an object")
    result = _text(data, "result", required=True)
    if result not in ("success", "failure", "skipped", "cancelled"):
        raise UsageError(f"job result {result!r} is not success, failure, skipped or cancelled")
    return JobVerdict(
        name=_text(data, "name", required=True) or "",
        result=result,
        reason=_text(data, "reason"),
        gate=_text(data, "gate"),
        summary=_text(data, "summary"),
    )


def _text(data: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > _TEXT or "\x00" in value:
        raise UsageError(f"{name} must be text of at most {_TEXT} characters")
    return value
