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
fully describe its inputs, and the record must say so rather than hide it. For the same
reason the statement says how the build's workspace was made (``WorkspaceFacts``: an export
of the commit, a copy of a dirty tree, or a plain copy) and what it left out.

Facts cross a trust boundary: the CLI (or a CI job) builds and sends ``BuildFacts.to_json()``,
the server reads them back with ``BuildFacts.from_json`` and signs ``statement(facts)``. So
``from_json`` is strict -- exact types, bounded sizes, sha256 digests only, no unknown fields --
because whatever it lets through ends up signed with the project's key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from conveyor.artifacts.gitinfo import GitInfo
from conveyor.artifacts.strict_json import HINT, Fields
from conveyor.errors import Refused, UsageError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://conveyor.dev/build/service/v1"
BUILDER_ID = "conveyor"

DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
SERVICE_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")
VERSION_PATTERN = re.compile(r"[0-9A-Za-z.+_-]+")
# Ceilings for facts read from the wire: far above any real build, far below harm.
MAX_SERVICE = 128
MAX_COMMAND = 64 * 1024
MAX_PATHS = 1024
MAX_PATH = 4096
MAX_FILES = 10**9
MAX_SIZE = 2**53
MAX_TIME = 2.0**33  # unix seconds, the year 2242
MAX_PIPELINE = 64 * 1024
FACT_FIELDS = frozenset(
    {
        "digest",
        "service",
        "command",
        "outputs",
        "source",
        "source_uri",
        "files",
        "size",
        "started",
        "finished",
        "builder_version",
        "pipeline",
        "workspace",
    }
)

WorkspaceMode = Literal["clean", "dirty", "copy"]
WORKSPACE_MODES: dict[str, WorkspaceMode] = {mode: mode for mode in get_args(WorkspaceMode)}
_LEFT_OUT: dict[str, str] = {
    "clean": "everything not in the commit: uncommitted changes, untracked and ignored files",
    "dirty": "files git ignores, and tracked files deleted from the work tree",
    "copy": "the .git and .conveyor directories",
}


@dataclass(frozen=True)
class WorkspaceFacts:
    """How a build's private copy of the project was made (see ``workspace``).

    ``mode`` is ``clean`` (an export of the commit), ``dirty`` (tracked and untracked,
    not ignored, files as they were on disk) or ``copy`` (no git: every file but ``.git`` and
    ``.conveyor``); ``inputs`` the ``build.inputs`` globs that narrowed it, if any; ``files``
    how many files it held; ``source_date_epoch`` the time every file was dated and the build
    was told (``SOURCE_DATE_EPOCH``).
    """

    mode: WorkspaceMode
    inputs: tuple[str, ...] | None
    files: int
    source_date_epoch: int

    def left_out(self) -> str:
        """What the build could not see, in words, for the signed statement."""
        text = _LEFT_OUT[self.mode]
        if self.inputs is not None:
            text += "; and every file not matching the build inputs"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "inputs": None if self.inputs is None else list(self.inputs),
            "files": self.files,
            "source_date_epoch": self.source_date_epoch,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "workspace") -> WorkspaceFacts:
        fields = Fields(data, where, {"mode", "inputs", "files", "source_date_epoch"})
        text = fields.required_text("mode", max_length=8)
        mode = WORKSPACE_MODES.get(text)
        if mode is None:
            raise UsageError(
                f"'{fields.path('mode')}' must be one of {', '.join(WORKSPACE_MODES)}, "
                f"got {text!r}",
                hint=HINT,
            )
        return cls(
            mode=mode,
            inputs=fields.texts("inputs", max_items=MAX_PATHS, max_length=MAX_PATH, optional=True),
            files=fields.integer("files", low=0, high=MAX_FILES),
            source_date_epoch=fields.integer("source_date_epoch", low=0, high=int(MAX_TIME)),
        )


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
    workspace: WorkspaceFacts | None = None
    """How the build's workspace was made; None for builds from before workspaces."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data; ``from_json`` reads it back to an equal ``BuildFacts``."""
        data: dict[str, Any] = {
            "digest": self.digest,
            "service": self.service,
            "command": self.command,
            "outputs": list(self.outputs),
            "source": self.source.to_json(),
            "source_uri": self.source_uri,
            "files": self.files,
            "size": self.size,
            "started": self.started,
            "finished": self.finished,
            "builder_version": self.builder_version,
        }
        if self.pipeline is not None:
            data["pipeline"] = dict(self.pipeline)
        if self.workspace is not None:
            data["workspace"] = self.workspace.to_json()
        return data

    @classmethod
    def from_json(cls, data: object, where: str = "build") -> BuildFacts:
        """Facts sent by a client: UsageError for a wrong shape, Refused for a non-sha256 digest."""
        fields = Fields(data, where, FACT_FIELDS)
        digest = fields.raw("digest")
        if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
            shown = repr(digest[:80]) if isinstance(digest, str) else "no string"
            raise Refused(
                f"'{fields.path('digest')}' must be a sha256 digest, 'sha256:' and 64 lowercase "
                f"hex digits; got {shown}",
                hint="Conveyor names artifacts only by the sha256 of their archive; "
                "send the digest build_archive reported",
            )
        started = fields.number("started", low=0.0, high=MAX_TIME)
        finished = fields.number("finished", low=0.0, high=MAX_TIME)
        if finished < started:
            raise UsageError(
                f"'{fields.path('finished')}' ({finished}) is before "
                f"'{fields.path('started')}' ({started})",
                hint=HINT,
            )
        outputs = fields.texts("outputs", max_items=MAX_PATHS, max_length=MAX_PATH)
        assert outputs is not None
        workspace = fields.raw("workspace")
        return cls(
            digest=digest,
            service=fields.required_text(
                "service", max_length=MAX_SERVICE, pattern=SERVICE_PATTERN
            ),
            command=fields.required_text("command", max_length=MAX_COMMAND),
            outputs=outputs,
            source=GitInfo.from_json(fields.raw("source"), fields.path("source")),
            source_uri=fields.required_text("source_uri", max_length=MAX_PATH),
            files=fields.integer("files", low=0, high=MAX_FILES),
            size=fields.integer("size", low=0, high=MAX_SIZE),
            started=started,
            finished=finished,
            builder_version=fields.required_text(
                "builder_version", max_length=64, pattern=VERSION_PATTERN
            ),
            pipeline=fields.document("pipeline", max_bytes=MAX_PIPELINE),
            workspace=None
            if workspace is None
            else WorkspaceFacts.from_json(workspace, fields.path("workspace")),
        )


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
    external: dict[str, Any] = {
        "service": facts.service,
        "command": facts.command,
        "outputs": list(facts.outputs),
    }
    if facts.pipeline is not None:
        metadata["invocationId"] = str(facts.pipeline.get("run", ""))
        internal["pipeline"] = dict(facts.pipeline)
    if facts.workspace is not None:
        workspace = facts.workspace
        if workspace.inputs is not None:
            external["inputs"] = list(workspace.inputs)
        internal["workspace"] = {
            "mode": workspace.mode,
            "files": workspace.files,
            "sourceDateEpoch": workspace.source_date_epoch,
            "leftOut": workspace.left_out(),
        }
    stmt: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{facts.service}.tar.gz", "digest": {"sha256": _hex(facts.digest)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
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
