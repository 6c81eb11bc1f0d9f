"""Artifacts: each build's facts, keyed by digest, and the services built to those bytes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from conveyor.errors import Conflict, NotFound, Refused
from conveyor.store import rows
from conveyor.store.base import StoreBase
from conveyor.store.records import ArtifactRecord, NewEvent
from conveyor.store.tables import artifact_services, artifacts

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PREFIX = re.compile(r"[0-9a-f]{7,64}")


class ArtifactsRepo(StoreBase):
    """Record, find and list artifacts; the bytes themselves live in ``artifacts/``."""

    def record_artifact(
        self,
        artifact: ArtifactRecord,
        *,
        actor: str,
        provenance: Mapping[str, Any] | None = None,
    ) -> ArtifactRecord:
        """Remember that ``artifact.digest`` was built for ``artifact.service``.

        The bytes are recorded once, under the first build's facts, and never replaced; each
        further service built to the same bytes is added beside it with its own provenance.
        """
        if not _DIGEST.fullmatch(artifact.digest):
            raise Refused(
                f"'{artifact.digest}' is not an artifact digest",
                hint="artifact digests are 'sha256:' followed by 64 lowercase hex characters",
            )
        with self._writing() as w:
            existing = w.conn.execute(
                sa.select(artifacts).where(artifacts.c.digest == artifact.digest)
            ).one_or_none()
            if existing is None:
                w.conn.execute(
                    sa.insert(artifacts).values(
                        digest=artifact.digest,
                        service=artifact.service,
                        commit=artifact.commit,
                        branch=artifact.branch,
                        dirty=artifact.dirty,
                        created_at=float(artifact.created_at),
                        size=artifact.size,
                        files=artifact.files,
                        build_command=artifact.build_command,
                        outputs=list(artifact.outputs),
                        metadata=rows.json_ready(artifact.metadata),
                        actor=actor,
                    )
                )
            known = _services_of(w.conn, artifact.digest)
            if artifact.service not in known:
                w.conn.execute(
                    sa.insert(artifact_services).values(
                        digest=artifact.digest,
                        service=artifact.service,
                        created_at=w.now,
                        actor=actor,
                        provenance=rows.json_ready(provenance or {}),
                    )
                )
                details: dict[str, Any] = {
                    "digest": artifact.digest,
                    "commit": artifact.commit,
                    "branch": artifact.branch,
                    "dirty": artifact.dirty,
                    "size": artifact.size,
                    "files": artifact.files,
                }
                if known:
                    details["also_built_for"] = known
                w.append(
                    [NewEvent("artifact.built", details, service=artifact.service)], actor=actor
                )
            stored = w.conn.execute(
                sa.select(artifacts).where(artifacts.c.digest == artifact.digest)
            ).one()
            return rows.artifact(stored, _services_of(w.conn, artifact.digest))

    def get_artifact(self, digest_or_prefix: str) -> ArtifactRecord:
        """Look an artifact up by full digest or an unambiguous prefix of >= 7 hex characters."""
        wanted = digest_or_prefix.strip().lower().removeprefix("sha256:")
        if not _PREFIX.fullmatch(wanted):
            raise NotFound(
                f"'{digest_or_prefix}' is not an artifact digest",
                hint="give sha256:<hex> or at least 7 hex characters of the digest",
            )
        with self._reading() as conn:
            found = conn.execute(
                sa.select(artifacts)
                .where(artifacts.c.digest.startswith(f"sha256:{wanted}", autoescape=True))
                .order_by(artifacts.c.digest)
                .limit(5)
            ).all()
            services = _services_of(conn, found[0].digest) if len(found) == 1 else []
        if not found:
            raise NotFound(
                f"no artifact matches '{digest_or_prefix}'",
                hint="list recorded artifacts with `conveyor artifacts`, or build the service",
            )
        if len(found) > 1:
            shown = ", ".join(row.digest[:19] for row in found)
            raise Conflict(
                f"'{digest_or_prefix}' is ambiguous: it matches {shown}",
                hint="give more characters of the digest",
            )
        return rows.artifact(found[0], services)

    def list_artifacts(self, service: str | None = None, limit: int = 50) -> list[ArtifactRecord]:
        """Newest first; for a service, by when it was built for that service."""
        if service is None:
            query = sa.select(artifacts).order_by(artifacts.c.created_at.desc(), artifacts.c.digest)
        else:
            query = (
                sa.select(artifacts)
                .join(artifact_services, artifact_services.c.digest == artifacts.c.digest)
                .where(artifact_services.c.service == service)
                .order_by(artifact_services.c.created_at.desc(), artifacts.c.digest)
            )
        with self._reading() as conn:
            found = conn.execute(query.limit(limit)).all()
            return [rows.artifact(row, _services_of(conn, row.digest)) for row in found]

    def artifact_provenance(self, digest: str, service: str) -> Mapping[str, Any] | None:
        """What was recorded about the build of ``digest`` for ``service`` (None: never)."""
        with self._reading() as conn:
            row = conn.execute(
                sa.select(artifact_services.c.provenance).where(
                    (artifact_services.c.digest == digest)
                    & (artifact_services.c.service == service)
                )
            ).one_or_none()
        return None if row is None else dict(row.provenance)


def _services_of(conn: sa.Connection, digest: str) -> list[str]:
    query = (
        sa.select(artifact_services.c.service)
        .where(artifact_services.c.digest == digest)
        .order_by(artifact_services.c.created_at, artifact_services.c.service)
    )
    return [row.service for row in conn.execute(query)]
