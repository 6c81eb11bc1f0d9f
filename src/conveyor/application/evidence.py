"""What was checked about a release, and what it showed: the evidence behind a deploy.

A release is only as trustworthy as what was known about its artifact, so the evidence is
read back from the same sources deploy trusts rather than from a copy made at deploy time:
the archive's bytes are re-hashed, the provenance envelope's signature is re-checked, the
pipeline-run attestations are re-verified line by line, and the ledger supplies what the
rollout did. A failed check is *reported*, never raised: evidence about a tampered artifact
is exactly when someone needs to read it.

The environment's promotion requirements are evaluated *now* (the config and the
attestations may have changed since the deploy), and the result says so; the ledger's
``release.created`` is what was true when the release started.

``release_evidence`` gathers (I/O) and ``summarise`` shapes (pure), so the report's shape is
testable without a store. ``find_release`` turns what people type into a release.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.application.migrations import migrations_report
from conveyor.application.promotion import artifact_facts, requirements_of
from conveyor.artifacts.attestations import Attested, verified_runs
from conveyor.artifacts.signing import Keyring, Verified, verify_signed
from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import LoadedProject
from conveyor.core.admission import ArtifactFacts, Requirements, unmet_requirements
from conveyor.errors import ConveyorError, NotFound
from conveyor.store.records import ArtifactRecord, EventRecord, ReleaseRecord
from conveyor.store.repository import Store

REFERENCE_FORMS = (
    "a release id (42), SERVICE/ENV (its newest release), SERVICE/ENV@3, SERVICE/ENV@r3 "
    "or 'SERVICE/ENV r3'"
)
_REFERENCE = re.compile(
    r"(?P<service>[^/\s@]+)/(?P<env>[^/\s@]+)(?:(?:@r?|\s+r)(?P<revision>[0-9]+))?"
)


@dataclass(frozen=True)
class ReleaseRef:
    """A parsed release reference: an id, or a (service, env) with an optional revision."""

    release_id: int | None = None
    service: str | None = None
    env: str | None = None
    revision: int | None = None


@dataclass(frozen=True)
class Integrity:
    """The two checks deploy makes before running an artifact, as results rather than raises."""

    bytes_problem: str | None
    signed: Verified | None
    signature_problem: str | None


@dataclass(frozen=True)
class RequirementsNow:
    """The environment's ``requires:`` and what the artifact lacks of it at ``evaluated_at``."""

    requirements: Requirements | None
    facts: ArtifactFacts | None
    unmet: Sequence[str]
    evaluated_at: float
    problem: str | None = None


def parse_release_reference(reference: str) -> ReleaseRef | None:
    """``42``, ``svc/env``, ``svc/env@3``, ``svc/env@r3``, ``svc/env r3``; None if none of them."""
    text = reference.strip()
    if text.isdigit():
        return ReleaseRef(release_id=int(text))
    match = _REFERENCE.fullmatch(text)
    if match is None:
        return None
    revision = match.group("revision")
    return ReleaseRef(
        service=match.group("service"),
        env=match.group("env"),
        revision=int(revision) if revision is not None else None,
    )


def find_release(store: Store, reference: str) -> ReleaseRecord:
    """The release ``reference`` names; NotFound (listing the accepted forms) otherwise."""
    ref = parse_release_reference(reference)
    hint = f"name a release as {REFERENCE_FORMS}; list them with `conveyor history SERVICE ENV`"
    if ref is None:
        raise NotFound(f"'{reference}' is not a release reference", hint=hint)
    try:
        if ref.release_id is not None:
            return store.get_release(ref.release_id)
        assert ref.service is not None and ref.env is not None
        if ref.revision is not None:
            return store.release_by_revision(ref.service, ref.env, ref.revision)
        newest = store.releases(ref.service, ref.env, limit=1)
    except NotFound as missing:
        raise NotFound(missing.message, hint=hint) from None
    if not newest:
        raise NotFound(f"{ref.service}/{ref.env} has no release yet", hint=hint)
    return newest[0]


def release_evidence(
    project: LoadedProject | ConveyorError,
    store: Store,
    artifacts: ArtifactStore,
    keyring: Keyring,
    release: ReleaseRecord,
) -> dict[str, Any]:
    """Everything known about ``release``, JSON-ready; checks that fail are reported in it.

    ``project`` is today's config, or why it cannot be read: requirements are then reported
    as not evaluated, and everything else still is.
    """
    digest = release.artifact_digest
    artifact = store.get_artifact(digest)
    try:
        attested = verified_runs(
            artifacts, digest, keyring, service=release.service, recorded_at=artifact.created_at
        )
        attestation_problem = None
    except ConveyorError as exc:  # an unreadable key file: say so, keep the rest
        attested, attestation_problem = Attested((), 0), exc.message
    return summarise(
        release,
        artifact,
        check_integrity(artifacts, keyring, digest, release.service, artifact.created_at),
        attested,
        requirements_now(project, store, release, artifact, attested),
        store.events(release_id=release.id),
        attestation_problem=attestation_problem,
    )


def check_integrity(
    artifacts: ArtifactStore,
    keyring: Keyring,
    digest: str,
    service: str,
    recorded_at: float | None = None,
) -> Integrity:
    """Re-hash the bytes and re-check the signature, keeping each refusal's message."""
    bytes_problem: str | None = None
    try:
        artifacts.verify(digest)
    except ConveyorError as exc:
        bytes_problem = exc.message
    except OSError as exc:
        bytes_problem = f"artifact {digest} cannot be read: {exc}"
    try:
        signed = verify_signed(artifacts, digest, keyring, service=service, recorded_at=recorded_at)
        return Integrity(bytes_problem, signed, None)
    except ConveyorError as exc:
        return Integrity(bytes_problem, None, exc.message)
    except OSError as exc:
        return Integrity(bytes_problem, None, f"provenance of {digest} cannot be read: {exc}")


def requirements_now(
    project: LoadedProject | ConveyorError,
    store: Store,
    release: ReleaseRecord,
    artifact: ArtifactRecord,
    attested: Attested,
) -> RequirementsNow:
    """The release environment's ``requires:`` checked against today's facts (as deploy does)."""
    now = time.time()
    if isinstance(project, ConveyorError):
        return RequirementsNow(None, None, (), now, f"conveyor.yaml: {project.message}")
    try:
        project.config.environment(release.env)
    except ConveyorError as exc:  # the environment left the config since
        return RequirementsNow(None, None, (), now, exc.message)
    requirements = requirements_of(project, release.env)
    facts = artifact_facts(store, release.service, artifact, requirements, attested)
    return RequirementsNow(requirements, facts, unmet_requirements(requirements, facts), now)


def summarise(
    release: ReleaseRecord,
    artifact: ArtifactRecord,
    integrity: Integrity,
    attested: Attested,
    requirements: RequirementsNow,
    events: Sequence[EventRecord],
    *,
    attestation_problem: str | None = None,
) -> dict[str, Any]:
    """The evidence report of one release, from facts already gathered; no I/O."""
    signed = integrity.signed
    return {
        "release": {
            "name": release.name,
            "id": release.id,
            "service": release.service,
            "env": release.env,
            "revision": release.revision,
            "phase": release.phase,
            "reason": release.reason,
            "actor": release.actor,
            "created_at": release.created_at,
            "config_version": release.config_version,
            "rollback_of": release.rollback_of,
            "message": release.status.message,
        },
        "artifact": {
            "digest": artifact.digest,
            "service": artifact.service,
            "services": list(artifact.services),
            "commit": artifact.commit,
            "branch": artifact.branch,
            "dirty": artifact.dirty,
            "build_command": artifact.build_command,
            "created_at": artifact.created_at,
            "size": artifact.size,
        },
        "integrity": {
            "bytes_ok": integrity.bytes_problem is None,
            "bytes_problem": integrity.bytes_problem,
            "signature_ok": signed is not None,
            "signed_by": signed.key if signed is not None else None,
            "signature_problem": integrity.signature_problem,
        },
        "provenance": provenance_summary(signed.statement) if signed is not None else None,
        "attestations": {
            "runs": [run_summary(stmt) for stmt in latest_per_run(attested.statements)],
            "rejected": attested.rejected,
            "problem": attestation_problem,
        },
        "gates": attested.gates(),
        "migrations": migrations_report(release.plan),
        "requirements": {
            "evaluated": "now",
            "evaluated_at": requirements.evaluated_at,
            "declared": _declared(requirements.requirements),
            "succeeded_in": sorted(requirements.facts.succeeded_in)
            if requirements.facts is not None
            else None,
            "unmet": list(requirements.unmet),
            "problem": requirements.problem,
        },
        "events": [
            {"seq": e.seq, "kind": e.kind, "at": e.at, "actor": e.actor, "details": e.details}
            for e in events
        ],
    }


def provenance_summary(stmt: Mapping[str, Any]) -> dict[str, Any]:
    """Who built it, from which commit, in which pipeline run (if any): the signed claims."""
    predicate = _map(stmt.get("predicate"))
    definition = _map(predicate.get("buildDefinition"))
    details = _map(predicate.get("runDetails"))
    builder = _map(details.get("builder"))
    pipeline = _map(_map(definition.get("internalParameters")).get("pipeline"))
    materials = definition.get("resolvedDependencies")
    first = _map(materials[0]) if isinstance(materials, list) and materials else {}
    run = pipeline.get("run") or _map(details.get("metadata")).get("invocationId") or None
    return {
        "builder": builder.get("id"),
        "builder_version": _map(builder.get("version")).get("conveyor"),
        "commit": _map(first.get("digest")).get("gitCommit"),
        "dirty": _map(first.get("annotations")).get("dirty"),
        "command": _map(definition.get("externalParameters")).get("command"),
        "pipeline_run": run,
        "pipeline_jobs": pipeline.get("jobs"),
    }


def latest_per_run(statements: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One statement per pipeline run: its last word (a run attests as it builds, as it
    deploys and when it ends; the last one has every job the others had)."""
    latest: dict[str, Mapping[str, Any]] = {}
    for stmt in statements:  # oldest first
        run = _map(_map(stmt.get("predicate")).get("run")).get("id")
        latest[str(run)] = stmt
    return list(latest.values())


def run_summary(stmt: Mapping[str, Any]) -> dict[str, Any]:
    """One verified pipeline-run statement: where it ran and each job's verdict."""
    predicate = _map(stmt.get("predicate"))
    run = _map(predicate.get("run"))
    jobs = predicate.get("jobs")
    return {
        "run": run.get("id"),
        "pipeline": run.get("pipeline"),
        "branch": run.get("branch"),
        "tag": run.get("tag"),
        "commit": run.get("commit"),
        "recorded": run.get("recorded"),
        "recorded_on": run.get("recordedOn"),
        "jobs": [
            {key: _map(job).get(key) for key in ("name", "result", "reason", "gate", "summary")}
            for job in (jobs if isinstance(jobs, list) else [])
        ],
    }


def _declared(requirements: Requirements | None) -> dict[str, list[str]] | None:
    if requirements is None:
        return None
    return {
        "environments": list(requirements.environments),
        "branches": list(requirements.branches),
        "gates": list(requirements.gates),
    }


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
