"""Signed checkpoints of the ledger's hash chain.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-20

* ``ledger_checkpoints``: one row per checkpoint the server signed -- a DSSE envelope
  (``envelope``) over the statement "the chain's link ``seq`` had hash ``hash`` at time
  ``at``", signed by ``key``. The hash chain alone shows an *edited* row, but anyone who can
  write the database can recompute every later hash and the head; a signed checkpoint is a
  witness they cannot recompute without the server's key. ``seq``, ``hash``, ``at`` and
  ``key`` repeat what the envelope says, for querying only: verification trusts the
  signature, never these columns. ``reason`` says why it was signed (``start``,
  ``interval``, ``events``, or the security-relevant event that asked for it).

Only additions: a server of the previous version keeps working on this schema during an
upgrade overlap (it never reads or writes checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("key", sa.String(71), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("envelope", sa.JSON, nullable=False),
    )
    op.create_index("ix_ledger_checkpoints_seq", "ledger_checkpoints", ["seq"])


def downgrade() -> None:
    op.drop_index("ix_ledger_checkpoints_seq", "ledger_checkpoints")
    op.drop_table("ledger_checkpoints")
