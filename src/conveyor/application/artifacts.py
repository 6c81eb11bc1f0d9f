"""Receiving what builds produce: the bytes first, then the record, which the server signs.

Builds run where they are asked for (a laptop, a CI job), each in its own workspace. What
they produce reaches the state in two steps, as an image reaches an OCI registry:

1. ``receive_blob``: the archive's bytes, streamed to a temporary file while hashing, kept
   only if they hash to the digest the client named, then stored content-addressed;
2. ``record``: the build's facts (commit, command, outputs, the run it belonged to). The
   server checks them against the stored bytes, signs the provenance statement with its
   own key — the client never holds it — and records the artifact for the service, once
   per (digest, service): the same bytes built for ``web`` and ``worker`` are one artifact
   recorded for two services, each with its own signed provenance.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import __version__
from conveyor.application.caller import Caller
from conveyor.application.project import ProjectSource
from conveyor.artifacts.provenance import BuildFacts
from conveyor.artifacts.signing import Keyring, sign_build
from conveyor.artifacts.store import ArtifactStore
from conveyor.errors import NotFound, Refused, UsageError
from conveyor.layout import Layout
from conveyor.store.records import ArtifactRecord
from conveyor.store.repository import Store

MAX_BLOB = 2 * 1024**3
"""The largest archive accepted, in bytes (an artifact is an application, not a data set)."""
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobReceived:
    digest: str
    size: int
    stored: bool  # False: the store already had these bytes


@dataclass(frozen=True)
class Recorded:
    artifact: ArtifactRecord
    reused: bool  # the digest was already recorded for this service


@dataclass
class Artifacts:
    project: ProjectSource
    store: Store
    artifacts: ArtifactStore
    keyring: Keyring
    layout: Layout
    clock: Callable[[], float]

    async def receive_blob(
        self, caller: Caller, digest: str, chunks: AsyncIterator[bytes], *, limit: int = MAX_BLOB
    ) -> BlobReceived:
        """Keep the streamed bytes under ``digest`` if, and only if, they hash to it."""
        if not _DIGEST.fullmatch(digest):
            raise UsageError(
                f"'{digest}' is not an artifact digest",
                hint="name the blob by its sha256: /api/v1/blobs/sha256:<64 hex>",
            )
        if self.artifacts.exists(digest):
            async for _ in chunks:  # drain the request; the bytes are already here
                pass
            return BlobReceived(digest, self.artifacts.path(digest).stat().st_size, stored=False)
        scratch = self.layout.directory(self.layout.tmp)
        fd, name = tempfile.mkstemp(dir=scratch, prefix="blob-", suffix=".tar.gz")
        path = Path(name)
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise Refused(
                            f"the upload is larger than {limit} bytes",
                            hint="artifacts hold an application's files; leave data sets, "
                            "caches and dependencies' sources out of build.outputs",
                        )
                    hasher.update(chunk)
                    out.write(chunk)
            actual = f"sha256:{hasher.hexdigest()}"
            if actual != digest:
                raise Refused(
                    f"the uploaded bytes hash to {actual}, not {digest}",
                    hint="the archive changed or was cut short on the way; build and push again",
                )
            stored = self.artifacts.put(path)
        finally:
            path.unlink(missing_ok=True)
        if stored != digest:  # pragma: no cover - the store re-hashes what it copies
            raise Refused(f"the stored bytes hash to {stored}, not {digest}")
        return BlobReceived(digest, size, stored=True)

    def record(
        self, caller: Caller, service: str, digest: str, build: Mapping[str, Any]
    ) -> Recorded:
        """Record ``digest`` as built for ``service``, with provenance signed by the server."""
        project = self.project.current()
        spec = project.config.service(service)
        facts = build_facts(build, service=service, digest=digest)
        if not self.artifacts.exists(digest):
            raise NotFound(
                f"the bytes of {digest} were not uploaded",
                hint=f"PUT them to /api/v1/blobs/{digest} first (`conveyor build` does both)",
            )
        self.artifacts.verify(digest)
        if tuple(facts.outputs) != tuple(spec.build.outputs):
            raise Refused(
                f"the build of {service} claims outputs {list(facts.outputs)}, but "
                f"conveyor.yaml declares {list(spec.build.outputs)}",
                hint="build with the same conveyor.yaml the server reads",
            )
        known = self._known_for(digest, service)
        signed = sign_build(self.artifacts, facts, self.keyring)
        record = self.store.record_artifact(
            ArtifactRecord(
                digest=digest,
                service=service,
                commit=facts.source.commit,
                branch=facts.source.branch,
                dirty=facts.source.dirty,
                created_at=self.clock(),
                size=facts.size,
                files=facts.files,
                build_command=facts.command,
                outputs=tuple(facts.outputs),
                metadata={
                    "build_duration": round(max(0.0, facts.finished - facts.started), 3),
                    "builder": {
                        "conveyor": facts.builder_version,
                        "recorded_by": __version__,
                        "python": platform.python_version(),
                    },
                    "provenance": signed,
                    # DORA's lead time: the commits this build contains, with their times
                    **(
                        {"commits": [[sha, at] for sha, at in facts.source.history]}
                        if facts.source.history
                        else {}
                    ),
                    **(
                        {"pipeline_run": str(facts.pipeline.get("run"))}
                        if facts.pipeline is not None
                        else {}
                    ),
                },
            ),
            actor=caller.actor,
            provenance=signed,
        )
        return Recorded(record, reused=known)

    def list(self, service: str | None, limit: int) -> list[ArtifactRecord]:
        return self.store.list_artifacts(service, limit=limit)

    def get(self, ref: str) -> ArtifactRecord:
        return self.store.get_artifact(ref)

    def _known_for(self, digest: str, service: str) -> bool:
        return self.store.artifact_provenance(digest, service) is not None


def build_facts(data: Mapping[str, Any], *, service: str, digest: str) -> BuildFacts:
    """``BuildFacts`` from a client's JSON (checked field by field by ``BuildFacts.from_json``),
    about the artifact and service the request names and no other."""
    facts = BuildFacts.from_json(data)
    if facts.digest != digest or facts.service != service:
        raise UsageError(
            "the build facts describe another artifact or service than the request names",
            hint=f"send the facts of the build of {service} that produced {digest}",
        )
    return facts
