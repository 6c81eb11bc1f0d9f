"""Feature flags changed live, and guarded flag rollouts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

``live_flags`` holds a flag's whole definition once someone changed it through the API:
it wins over conveyor.yaml until reset. ``revision`` is the ledger seq of the change that
wrote it, so a write names the revision it started from (optimistic, like releases).
``flag_rollouts`` holds guarded rollouts (steps walked like a canary) and their state.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "live_flags",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "flag_rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("flag", sa.String(100), nullable=False),
        sa.Column("env", sa.String(200), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Index("ix_flag_rollouts_flag_env", "flag", "env"),
    )


def downgrade() -> None:
    op.drop_table("flag_rollouts")
    op.drop_table("live_flags")
