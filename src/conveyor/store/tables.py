"""The schema, as SQLAlchemy Core tables, mirroring the Alembic migrations.

Core rather than the ORM: the store turns rows into frozen records immediately, so identity
maps, lazy loading and sessions would only add ways to touch the database by accident. The
migrations in ``migrations/versions`` are the source of truth for the database; these tables
are what queries are written against, and a test checks that the two agree.

No table names a schema, so the same code works in whatever schema the connection's
``search_path`` selects (tests run each case in a fresh PostgreSQL schema). Times are epoch
seconds stored as double precision, which round-trips a Python float exactly on both engines
-- the ledger hashes ``at``, so it must come back bit-for-bit.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

DIGEST = sa.String(71)  # "sha256:" + 64 hex
HASH = sa.String(64)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("digest", DIGEST, primary_key=True),
    sa.Column("service", sa.String(200), nullable=False),
    sa.Column("commit", sa.String(64), nullable=True),
    sa.Column("branch", sa.Text, nullable=True),
    sa.Column("dirty", sa.Boolean, nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("build_command", sa.Text, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Index("ix_artifacts_service_created", "service", "created_at"),
)

releases = sa.Table(
    "releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("service", sa.String(200), nullable=False),
    sa.Column("env", sa.String(200), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column(
        "artifact_digest",
        DIGEST,
        sa.ForeignKey("artifacts.digest", name="fk_releases_artifact_digest"),
        nullable=False,
    ),
    sa.Column("template", sa.String(200), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("config_version", sa.String(200), nullable=False),
    sa.Column("instances", sa.Integer, nullable=False),
    sa.Column("strategy", sa.JSON, nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("status", sa.JSON, nullable=False),
    sa.Column("phase", sa.String(64), nullable=False),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column(
        "stable_release_id",
        sa.Integer,
        sa.ForeignKey("releases.id", name="fk_releases_stable_release_id"),
        nullable=True,
    ),
    sa.Column("rollback_of", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("status_version", sa.Integer, nullable=False),
    sa.UniqueConstraint("service", "env", "revision", name="uq_releases_service_env_revision"),
    sa.Index("ix_releases_done", "done"),
    sa.Index("ix_releases_service_env_phase", "service", "env", "phase"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(200), nullable=False),
    sa.Column("service", sa.String(200), nullable=True),
    sa.Column("env", sa.String(200), nullable=True),
    sa.Column("release_id", sa.Integer, nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("prev_hash", HASH, nullable=False),
    sa.Column("hash", HASH, nullable=False),
    sa.Index("ix_events_release", "release_id", "seq"),
    sa.Index("ix_events_service_env", "service", "env", "seq"),
)

# A single row (id = 1) holding the chain's tip. Every write transaction locks it first, which
# serialises appenders on PostgreSQL (SELECT ... FOR UPDATE) and gives verification a second
# witness: truncating the tail of ``events`` leaves the head pointing past the end.
ledger_head = sa.Table(
    "ledger_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", HASH, nullable=False),
)

addresses = sa.Table(
    "addresses",
    metadata,
    sa.Column("service", sa.String(200), primary_key=True),
    sa.Column("env", sa.String(200), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("preview_port", sa.Integer, nullable=False),
    sa.Column("pinned", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)
