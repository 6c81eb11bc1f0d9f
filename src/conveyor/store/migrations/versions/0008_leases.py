"""Leases: which server drives each environment, and the fencing epoch of its tenure.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

One row per environment that a server has ever driven. ``epoch`` only grows: it is bumped
at each takeover, and every controller write for the environment checks it in the same
transaction, so a server that lost the lease (paused, cut off) cannot write any more. See
``core/leases.py`` and docs/high-availability.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("env", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("acquired_at", sa.Double, nullable=False),
        sa.Column("renewed_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
