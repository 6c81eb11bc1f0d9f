"""What an artifact claims about its origin: an in-toto Statement with SLSA Provenance v1.

The statement is plain data built from facts the build already has (digest, commit, command,
times), with no I/O and no clock of its own, so the same facts always give the same bytes and
tests can state exactly what a build claims. Signing those bytes is ``signing``'s job; this
module only says what is signed and checks, on the way back, that a signed statement speaks
about the artifact being deployed -- a valid signature over someone else's subject is worth
nothing.

Formats: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md and
https://slsa.dev/spec/v1.0/provenance. The source commit goes into ``resolvedDependencies``
(SLSA v1's name for materials) with both the generic ``sha1`` and in-toto's ``gitCommit``
digest keys, and the work tree's dirtiness as an annotation: a dirty build's commit does not
fully describe its inputs, and the record must say so rather than hide it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor.artifacts.gitinfo import GitInfo
from conveyor.errors import Refused

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://conveyor.dev/build/service/v1"
BUILDER_ID = "conveyor"


@dataclass(frozen=True)
class BuildFacts:
    """Everything a provenance statement records about one build."""

    digest: str  # "sha256:<hex>" of the archive
    service: str
    command: str
    outputs: tuple[str, ...]
    source: GitInfo
    source_uri: str  # where the sources were read from, e.g. git+file:///path/to/service
    files: int
    size: int
    started: float  # unix seconds
    finished: float
    builder_version: str
    pipeline: Mapping[str, Any] | None = None
    """For a build inside ``conveyor run``: the run's id, and the jobs finished before it
    with their results (so the gates the build needed are part of what is signed)."""


def statement(facts: BuildFacts) -> dict[str, Any]:
    """The in-toto Statement (v1) with an SLSA Provenance (v1) predicate for one build."""
    material: dict[str, Any] = {
        "uri": facts.source_uri,
        "annotations": {"dirty": facts.source.dirty, "branch": facts.source.branch},
    }
    if facts.source.commit is not None:
        material["digest"] = {"sha1": facts.source.commit, "gitCommit": facts.source.commit}
    metadata = {"startedOn": rfc3339(facts.started), "finishedOn": rfc3339(facts.finished)}
    internal: dict[str, Any] = {}
    if facts.pipeline is not None:
        metadata["invocationId"] = str(facts.pipeline.get("run", ""))
        internal["pipeline"] = dict(facts.pipeline)
    stmt: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{facts.service}.tar.gz", "digest": {"sha256": _hex(facts.digest)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "service": facts.service,
                    "command": facts.command,
                    "outputs": list(facts.outputs),
                },
                "resolvedDependencies": [material],
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"conveyor": facts.builder_version}},
                "metadata": metadata,
                "byproducts": [
                    {
                        "name": "outputs",
                        "annotations": {"files": facts.files, "size": facts.size},
                    }
                ],
            },
        },
    }
    if internal:
        stmt["predicate"]["buildDefinition"]["internalParameters"] = internal
    return stmt


def encode(stmt: Mapping[str, Any]) -> bytes:
    """Canonical bytes (sorted keys, no spaces): what gets signed and stored."""
    return json.dumps(stmt, sort_keys=True, separators=(",", ":")).encode()


def check_subject(payload: bytes, digest: str) -> dict[str, Any]:
    """The decoded statement, if it is a provenance statement naming ``digest``; else Refused."""
    hint = rebuild_hint(digest)
    try:
        stmt = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(
            f"artifact {digest}: its signed statement is not JSON ({exc})", hint=hint
        ) from exc
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise Refused(
            f"artifact {digest}: its signed payload is not an in-toto v1 statement", hint=hint
        )
    if stmt.get("predicateType") != PREDICATE_TYPE:
        raise Refused(
            f"artifact {digest}: its statement is not SLSA provenance v1 "
            f"(predicateType {stmt.get('predicateType')!r})",
            hint=hint,
        )
    if _hex(digest) not in subject_digests(stmt):
        raise Refused(
            f"artifact {digest}: its signed provenance describes another artifact "
            f"({', '.join(sorted(subject_digests(stmt))) or 'no subject'})",
            hint=hint,
        )
    return stmt


def subject_digests(stmt: Mapping[str, Any]) -> set[str]:
    """The sha256 hex digests a statement's subjects name (malformed entries ignored)."""
    found: set[str] = set()
    subjects = stmt.get("subject")
    if not isinstance(subjects, Sequence):
        return found
    for subject in subjects:
        digests = subject.get("digest") if isinstance(subject, Mapping) else None
        value = digests.get("sha256") if isinstance(digests, Mapping) else None
        if isinstance(value, str):
            found.add(value)
    return found


def rebuild_hint(digest: str) -> str:
    return (
        "rebuild it with `conveyor build SERVICE` and deploy the new digest; never deploy "
        f"{digest} as it is"
    )


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
