"""Trusted keys, pinned in the store rather than "any .pub file in a directory".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

A key is trusted because the server pinned it: when it made the key, or when an admin
added it. A retired key (rotated, or the project-tree key moved out on upgrade) stays
trusted only for artifacts recorded before ``retired_at``: whoever could read the old key
cannot vouch for anything new with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trusted_keys",
        sa.Column("fingerprint", sa.String(71), primary_key=True),
        sa.Column("public_pem", sa.Text, nullable=False),
        sa.Column("added_at", sa.Double, nullable=False),
        sa.Column("added_by", sa.String(200), nullable=False),
        sa.Column("retired_at", sa.Double, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("trusted_keys")
