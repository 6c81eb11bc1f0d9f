"""Indexes that answer the organization-wide reads from the index alone.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Measured with bench/insight_scale.py (500 services x 3 environments, 63,000 releases):

* ``ix_releases_dora`` replaces ``ix_releases_env_created`` (its first two columns are the
  same, so every query that used it still can) and carries the lean columns DORA reads of a
  period, so a period's ~14k releases are read from the index without visiting the rows,
  which carry whole plans (SQLite: 87 -> 42 ms for that read).
* ``ix_releases_heads`` replaces ``ix_releases_service_env_phase`` (same leading columns)
  and adds the revision, so "the newest (succeeded) release of every service and
  environment" -- two reads of every status request -- is an index-only scan instead of a
  scan of the table (PostgreSQL: 73 -> 22 ms; SQLite: 113 -> 25 ms).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DORA_COLUMNS = [
    "env",
    "created_at",
    "phase",
    "service",
    "revision",
    "rollback_of",
    "finished_at",
    "artifact_digest",
    "reason",
]


def upgrade() -> None:
    op.create_index("ix_releases_dora", "releases", DORA_COLUMNS)
    op.drop_index("ix_releases_env_created", table_name="releases")
    op.create_index("ix_releases_heads", "releases", ["service", "env", "phase", "revision"])
    op.drop_index("ix_releases_service_env_phase", table_name="releases")


def downgrade() -> None:
    op.create_index("ix_releases_service_env_phase", "releases", ["service", "env", "phase"])
    op.drop_index("ix_releases_heads", table_name="releases")
    op.create_index("ix_releases_env_created", "releases", ["env", "created_at"])
    op.drop_index("ix_releases_dora", table_name="releases")
