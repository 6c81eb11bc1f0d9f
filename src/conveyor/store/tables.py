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

# Every service a digest was built for, each with the provenance signed for it (0002).
artifact_services = sa.Table(
    "artifact_services",
    metadata,
    sa.Column(
        "digest",
        DIGEST,
        sa.ForeignKey("artifacts.digest", name="fk_artifact_services_digest"),
        primary_key=True,
    ),
    sa.Column("service", sa.String(200), primary_key=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("provenance", sa.JSON, nullable=False),
    sa.Index("ix_artifact_services_service", "service", "created_at"),
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
    sa.Column("spec", sa.JSON, nullable=False),  # what servers before plans read
    sa.Column("status", sa.JSON, nullable=False),
    sa.Column("plan", sa.JSON, nullable=True),  # always set since 0002
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
    sa.Column("finished_at", sa.Double, nullable=True),  # 0007: when its phase became terminal
    sa.UniqueConstraint("service", "env", "revision", name="uq_releases_service_env_revision"),
    sa.Index("ix_releases_done", "done"),
    # 0009: the newest (succeeded) release of every pair from the index alone (status)
    sa.Index("ix_releases_heads", "service", "env", "phase", "revision"),
    # 0009: a period's lean columns for DORA, without visiting rows that carry whole plans
    sa.Index(
        "ix_releases_dora",
        "env",
        "created_at",
        "phase",
        "service",
        "revision",
        "rollback_of",
        "finished_at",
        "artifact_digest",
        "reason",
    ),
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
    sa.Index("ix_events_kind", "kind", "seq"),  # 0007
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

# Signed statements "link ``seq`` of the chain had ``hash`` at ``at``" (0004): what makes a
# recomputed chain detectable. The envelope is the evidence; the other columns repeat what it
# says so the newest checkpoint can be found by index, and are never trusted on their own.
ledger_checkpoints = sa.Table(
    "ledger_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", HASH, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("key", DIGEST, nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("envelope", sa.JSON, nullable=False),
    sa.Index("ix_ledger_checkpoints_seq", "seq"),
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

# API tokens (0003): the secret's sha256, never the secret.
tokens = sa.Table(
    "tokens",
    metadata,
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

# Keys the server trusts (0005): pinned, not found in a directory.
trusted_keys = sa.Table(
    "trusted_keys",
    metadata,
    sa.Column("fingerprint", sa.String(71), primary_key=True),
    sa.Column("public_pem", sa.Text, nullable=False),
    sa.Column("added_at", sa.Double, nullable=False),
    sa.Column("added_by", sa.String(200), nullable=False),
    sa.Column("retired_at", sa.Double, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
)

# Incidents (0007): opened by people or alerts, linked to the release running at the time.
incidents = sa.Table(
    "incidents",
    metadata,
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
    sa.Index("ix_incidents_fingerprint", "fingerprint", "resolved_at"),
    sa.Index("ix_incidents_opened", "opened_at"),
)

# Flags changed live (0006): the whole definition, winning over conveyor.yaml until reset.
live_flags = sa.Table(
    "live_flags",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("definition", sa.JSON, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

# Guarded flag rollouts (0006): steps walked like a canary, judged on exposures.
flag_rollouts = sa.Table(
    "flag_rollouts",
    metadata,
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

# Leases (0008): the server driving each environment and its fencing epoch (core/leases.py).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("env", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("acquired_at", sa.Double, nullable=False),
    sa.Column("renewed_at", sa.Double, nullable=False),
)
