"""Release plans, and artifacts that serve several services.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06

* ``releases.plan``: the typed, frozen ``ReleasePlan`` each release is run and judged by
  (``core/plan.py``). Releases written before it get a plan built from what they stored:
  the rollout spec and instance template in ``spec``, the config, the digest, the count.
  What they never stored stays empty and is said so: no frozen analysis templates (an
  analysis step of a release in progress during the upgrade fails as an error, which rolls
  it back — the safe side), no notifications, and ``router`` unknown (``null``: the
  controller uses the environment's router from the config, as before).
* ``artifact_services``: every service a digest was built for. One codebase run as ``web``
  and ``worker`` builds to the same bytes; the digest is recorded once, the services many
  times, each with its own provenance. Backfilled from ``artifacts.service``.

Only additions: a server of the previous version keeps working on this schema during an
upgrade overlap (it reads ``spec``, which new releases still write).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from conveyor.store.legacy import json_object, legacy_plan

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("releases", sa.Column("plan", sa.JSON, nullable=True))
    op.create_table(
        "artifact_services",
        sa.Column(
            "digest",
            sa.String(71),
            sa.ForeignKey("artifacts.digest", name="fk_artifact_services_digest"),
            primary_key=True,
        ),
        sa.Column("service", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("provenance", sa.JSON, nullable=False),
    )
    op.create_index("ix_artifact_services_service", "artifact_services", ["service", "created_at"])

    conn = op.get_bind()
    artifacts = sa.table(
        "artifacts",
        sa.column("digest"),
        sa.column("service"),
        sa.column("created_at"),
        sa.column("actor"),
        sa.column("commit"),
        sa.column("metadata", sa.JSON),
    )
    services = sa.table(
        "artifact_services",
        sa.column("digest"),
        sa.column("service"),
        sa.column("created_at"),
        sa.column("actor"),
        sa.column("provenance", sa.JSON),
    )
    commits: dict[str, str | None] = {}
    for row in conn.execute(sa.select(artifacts)).mappings():
        commits[row["digest"]] = row["commit"]
        provenance = json_object(row["metadata"]).get("provenance") or {}
        conn.execute(
            sa.insert(services).values(
                digest=row["digest"],
                service=row["service"],
                created_at=row["created_at"],
                actor=row["actor"],
                provenance=provenance,
            )
        )

    releases = sa.table(
        "releases",
        sa.column("id"),
        sa.column("service"),
        sa.column("env"),
        sa.column("artifact_digest"),
        sa.column("config", sa.JSON),
        sa.column("instances"),
        sa.column("spec", sa.JSON),
        sa.column("stable_release_id"),
        sa.column("plan", sa.JSON),
    )
    for row in conn.execute(sa.select(releases)).mappings():
        plan = legacy_plan(dict(row), commits.get(row["artifact_digest"]))
        conn.execute(sa.update(releases).where(releases.c.id == row["id"]).values(plan=plan))


def downgrade() -> None:
    op.drop_index("ix_artifact_services_service", "artifact_services")
    op.drop_table("artifact_services")
    op.drop_column("releases", "plan")
