"""Delivery insight: incidents, and the indexes DORA's questions need.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

An incident is opened by a person (``conveyor incident open``) or by an alert (the
Alertmanager receiver, keyed by the alert's fingerprint) and names the release that was
running when it started: that is how an incident counts against a deployment in DORA's
change failure rate. The row is the current state; every transition is also a ledger event.

``ix_releases_env_created`` answers "the releases of production in the last 90 days" by
index on both engines, whatever the number of services; ``ix_events_kind`` finds events of
a kind (open emergency reviews on every status, the access policy in force, incidents)
without reading the whole ledger. ``releases.finished_at`` is when a release reached its
outcome (the moment of its terminal event; ``updated_at`` moves on when the row is touched
later), so DORA reads it from the release row instead of the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(200), nullable=True),
        sa.Column("service", sa.String(200), nullable=True),
        sa.Column("env", sa.String(200), nullable=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(64), nullable=True),
        sa.Column("opened_at", sa.Double, nullable=False),
        sa.Column("opened_by", sa.String(200), nullable=False),
        sa.Column("resolved_at", sa.Double, nullable=True),
        sa.Column("resolved_by", sa.String(200), nullable=True),
        sa.Column("release_id", sa.Integer, nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_incidents_fingerprint", "incidents", ["fingerprint", "resolved_at"])
    op.create_index("ix_incidents_opened", "incidents", ["opened_at"])
    op.create_index("ix_releases_env_created", "releases", ["env", "created_at"])
    op.add_column("releases", sa.Column("finished_at", sa.Double, nullable=True))
    # Releases that ended before this column: their terminal event says when.
    op.execute(
        "UPDATE releases SET finished_at = (SELECT MIN(events.at) FROM events "
        "WHERE events.release_id = releases.id AND events.kind IN "
        "('release.succeeded', 'release.rolled_back', 'release.failed', "
        "'release.cancelled', 'release.rejected', 'release.expired'))"
    )
    op.create_index("ix_events_kind", "events", ["kind", "seq"])


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("finished_at")
    op.drop_index("ix_events_kind", table_name="events")
    op.drop_index("ix_releases_env_created", table_name="releases")
    op.drop_index("ix_incidents_opened", table_name="incidents")
    op.drop_index("ix_incidents_fingerprint", table_name="incidents")
    op.drop_table("incidents")
