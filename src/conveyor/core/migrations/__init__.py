"""Schema migrations, judged purely: expand or contract, the undo, and when a contract may run.

Rollback-first breaks at the database: redeploying the old artifact does not bring back a
dropped column. The way out is the expand/contract discipline, and this module is its rules:

* **Classification.** A migration *expands* the schema (new tables, nullable or defaulted
  columns, indexes, looser constraints: the old code keeps working) or *contracts* it (drops,
  renames, type changes, tighter constraints: the old code may break). Each statement is
  classified (``classify_sql``; Alembic's ``op.*`` calls by ``classify_alembic``) and the
  worst one decides. A migration may also *declare* its class, by a comment
  (``-- conveyor: expand``, ``# conveyor: contract after 0002_add_email``) or by its file
  name (``0002_expand_add_email.sql``); a declaration is checked against the statements
  (``review``), and whichever of the two says "contract" wins, so a mislabelled drop is
  still guarded.
* **The undo.** An expand must ship with its way back: ``NAME.undo.sql`` (or ``.down.sql``)
  beside a SQL migration, a ``downgrade()`` that does something in an Alembic one.
* **No contract while old code runs** (``contract_blockers``): a contract is refused while
  any environment runs, or keeps as a rollback target within the horizon
  (``held_releases``), a release that lacks the expand it completes. Once it ran, releases
  lacking that expand are no longer safe to roll back to (``rollback_barrier``).

The package: ``classify`` (statements), ``files`` (one migration, its declaration and undo),
``review`` (the gate's rules), ``spec`` (what a release freezes), ``contract`` (the horizon
rule). Everything here is data in, data out; what a release knows about its migrations is frozen
into its plan as ``MigrateSpec``. The SQL is cut into statements by ``core.sql``; whether a
statement is *safe* (lock levels, rewrites) is squawk's call, in the gate, not this module's.
"""

from conveyor.core.migrations.classify import (
    KINDS,
    Inferred,
    Kind,
    Verdict,
    alembic_revisions,
    classify_alembic,
    classify_sql,
    has_alembic_undo,
    worst,
)
from conveyor.core.migrations.contract import (
    Blocker,
    Contracted,
    Held,
    ReleaseFacts,
    contract_blockers,
    held_releases,
    rollback_barrier,
)
from conveyor.core.migrations.files import (
    ALEMBIC_UNDO,
    UNDO_SUFFIXES,
    Declaration,
    Lint,
    Migration,
    declaration,
    effective,
    is_undo,
    migration_id,
    ordered,
    read_migrations,
    undo_candidates,
)
from conveyor.core.migrations.review import Problem, review
from conveyor.core.migrations.spec import Horizon, MigrateSpec, pg_options, pg_timeout

__all__ = [
    "ALEMBIC_UNDO",
    "KINDS",
    "UNDO_SUFFIXES",
    "Blocker",
    "Contracted",
    "Declaration",
    "Held",
    "Horizon",
    "Inferred",
    "Kind",
    "Lint",
    "MigrateSpec",
    "Migration",
    "Problem",
    "ReleaseFacts",
    "Verdict",
    "alembic_revisions",
    "classify_alembic",
    "classify_sql",
    "contract_blockers",
    "declaration",
    "effective",
    "has_alembic_undo",
    "held_releases",
    "is_undo",
    "migration_id",
    "ordered",
    "pg_options",
    "pg_timeout",
    "read_migrations",
    "review",
    "rollback_barrier",
    "undo_candidates",
    "worst",
]
