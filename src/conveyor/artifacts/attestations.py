"""Signed records of what a pipeline run checked about an artifact: the gates' evidence.

Provenance (``provenance``) is written once, when the bytes are first built, and never
replaced. What was *checked* about those bytes keeps growing: the pipeline that built them
ran tests and gates, a later run of the same commit may check them again, a deploy job
attests what its run had passed before releasing. Each such record is an in-toto statement
about the digest with Conveyor's pipeline-run predicate, signed with the project key like
the provenance, and appended as one DSSE line to ``<digest>.attestations.jsonl`` beside the
artifact.

Deploy reads gate results only from these signed lines, never from a database row: a
``requires: {gates: [...]}`` check that anybody with write access to the store could satisfy
would be theatre. A line that does not verify (forged, signed by an untrusted key, about
another digest) is counted and ignored.

When several runs attest the same digest, the newest word on each job wins: a gate that
failed and later passed on the same bytes was flaky, and the later run is what the
environment's requirement is checked against; the ledger keeps both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.artifacts import provenance
from conveyor.artifacts.signing import (
    Keyring,
    fingerprint,
    open_envelope,
    sign_envelope,
    subject_service,
)
from conveyor.artifacts.store import ArtifactStore

RUN_PREDICATE = "https://conveyor.dev/attestation/pipeline-run/v1"


@dataclass(frozen=True)
class JobVerdict:
    """One job's result as attested; ``gate`` names the built-in gate a gate job ran."""

    name: str
    result: str
    reason: str | None = None
    gate: str | None = None
    summary: str | None = None


@dataclass(frozen=True)
class RunFacts:
    """What one pipeline run says about an artifact, at the moment it says it."""

    run: str
    pipeline: str
    branch: str | None
    tag: str | None
    commit: str | None
    recorded: float  # unix seconds
    jobs: tuple[JobVerdict, ...]


@dataclass(frozen=True)
class Attested:
    """The verified pipeline-run statements of one digest, and how many lines failed."""

    statements: tuple[Mapping[str, Any], ...]
    rejected: int

    def gates(self) -> dict[str, str]:
        return gate_results(self.statements)


def base_name(job: str) -> str:
    """``test[python=3.12]`` -> ``test``: requirements name jobs as written, not expanded."""
    return job.split("[", 1)[0]


def run_statement(digest: str, service: str, facts: RunFacts) -> dict[str, Any]:
    """The in-toto statement of ``facts`` about ``digest``; pure, so tests can state it."""
    return {
        "_type": provenance.STATEMENT_TYPE,
        "subject": [
            {"name": f"{service}.tar.gz", "digest": {"sha256": digest.removeprefix("sha256:")}}
        ],
        "predicateType": RUN_PREDICATE,
        "predicate": {
            "run": {
                "id": facts.run,
                "pipeline": facts.pipeline,
                "branch": facts.branch,
                "tag": facts.tag,
                "commit": facts.commit,
                "recordedOn": provenance.rfc3339(facts.recorded),
                "recorded": facts.recorded,
            },
            "jobs": [{k: v for k, v in vars(job).items() if v is not None} for job in facts.jobs],
        },
    }


def attestations_path(artifacts: ArtifactStore, digest: str) -> Path:
    return artifacts.objects / f"{digest.removeprefix('sha256:')}.attestations.jsonl"


def attest_run(
    artifacts: ArtifactStore,
    digest: str,
    service: str,
    facts: RunFacts,
    keyring: Keyring | None = None,
) -> dict[str, str]:
    """Sign ``facts`` about ``digest`` and append it; returns the file and the signing key."""
    keyring = keyring or Keyring.of(artifacts)
    key = keyring.signing_key()
    payload = provenance.encode(run_statement(digest, service, facts))
    line = (json.dumps(sign_envelope(payload, key)) + "\n").encode()
    path = attestations_path(artifacts, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write of one line with O_APPEND: concurrent runs interleave whole lines, never bytes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"attestations": str(path), "key": fingerprint(key.public_key())}


def verified_runs(
    artifacts: ArtifactStore,
    digest: str,
    keyring: Keyring | None = None,
    *,
    service: str | None = None,
    recorded_at: float | None = None,
) -> Attested:
    """Every pipeline-run statement about ``digest`` signed by a trusted key, oldest first.

    With ``service``, only statements about the bytes *as that service*: one codebase built
    as ``web`` and ``worker`` has one digest, and ``web``'s gates must not unlock ``worker``.
    Statements about other services are skipped, not counted as rejected.
    """
    path = attestations_path(artifacts, digest)
    if not path.is_file():
        return Attested((), 0)
    trusted = (keyring or Keyring.of(artifacts)).trusted(recorded_at)
    found: list[Mapping[str, Any]] = []
    rejected = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            payload, _key = open_envelope(json.loads(line), trusted)
            stmt = json.loads(payload)
        except (ValueError, TypeError, KeyError, AttributeError):
            rejected += 1
            continue
        if (
            not isinstance(stmt, dict)
            or stmt.get("predicateType") != RUN_PREDICATE
            or digest.removeprefix("sha256:") not in provenance.subject_digests(stmt)
        ):
            rejected += 1
            continue
        if service is not None and subject_service(stmt) != service:
            continue
        found.append(stmt)
    found.sort(key=_recorded)
    return Attested(tuple(found), rejected)


def gate_results(statements: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Job (as written) -> result, the newest statement's word on each job winning.

    A matrix job passed only if every variant in that statement passed.
    """
    results: dict[str, str] = {}
    for stmt in sorted(statements, key=_recorded):
        per_run: dict[str, list[str]] = {}
        for job in stmt.get("predicate", {}).get("jobs", []):
            if isinstance(job, Mapping) and isinstance(job.get("name"), str):
                per_run.setdefault(base_name(job["name"]), []).append(str(job.get("result")))
        for name, verdicts in per_run.items():
            if all(v == "success" for v in verdicts):
                results[name] = "success"
            else:
                results[name] = next(v for v in verdicts if v != "success")
    return results


def _recorded(stmt: Mapping[str, Any]) -> float:
    run = stmt.get("predicate", {}).get("run", {})
    value = run.get("recorded") if isinstance(run, Mapping) else None
    return float(value) if isinstance(value, int | float) else 0.0
