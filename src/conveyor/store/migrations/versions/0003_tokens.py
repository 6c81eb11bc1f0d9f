"""API tokens: who may call the server, as what, where.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

A token is stored as the sha256 of its secret (the secret is shown once, when it is
created), with the identity it stands for, a role and the environments it is scoped to.
Revocation and expiry are columns, not deletions: the ledger names token ids, and a
revoked token must stay explainable.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("identity", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("environments", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Double, nullable=True),
        sa.Column("revoked_at", sa.Double, nullable=True),
        sa.Column("last_used_at", sa.Double, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("tokens")
