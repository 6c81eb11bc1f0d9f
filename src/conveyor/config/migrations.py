"""A service's ``migrate:`` block: how its schema migrations run as a step of every release.

```yaml
services:
  orders:
    migrate:
      run: "python3 tools/migrate.py up"      # run once per release, before new instances start
      database: DATABASE_URL                   # the config key (or secret) holding the URL
      undo: "python3 tools/migrate.py undo"    # what `conveyor migrate undo` runs
      lock_timeout: 5s                         # every statement gives up waiting for a lock
      statement_timeout: 1m                    # ... and running, after this long
      rollback_horizon: {releases: 1, age: 7d} # how far back rollbacks must stay possible
```

The timeouts are why this is Conveyor's step and not a line in the service's start script:
a migration that waits behind a long transaction holds its place in the lock queue and
every writer queues behind *it*; ``lock_timeout`` makes it give up within the bound instead,
and the release stops before any traffic moves. See docs/migrations.md.
"""

from __future__ import annotations

from pydantic import Field

from conveyor.config.durations import Count, Duration, PositiveDuration
from conveyor.config.fields import Command, ConfigModel, RelativePath
from conveyor.config.names import EnvVar


class RollbackHorizonConfig(ConfigModel):
    """The releases a rollback must still be able to reach; a contract waits for them."""

    releases: Count = Field(
        1,
        ge=0,
        description="The newest releases before the running one that stay rollback targets.",
    )
    age: Duration = Field(
        0.0,
        description="Releases that stopped running less than this long ago stay rollback "
        "targets too (e.g. 7d).",
    )


class MigrateConfig(ConfigModel):
    """Schema migrations as a release step: run once, before new instances start."""

    run: Command = Field(
        description="The migration command, run in the unpacked artifact with the release's "
        "config and secrets (e.g. 'alembic upgrade head'). Rollbacks never run it.",
    )
    database: EnvVar = Field(
        description="The config key or secret holding the database URL; Conveyor adds "
        "lock_timeout and statement_timeout to it (and to PGOPTIONS).",
    )
    paths: list[RelativePath] = Field(
        default_factory=lambda: ["migrations/"],
        description="Where the migrations are in the artifact (include them in build.outputs).",
    )
    undo: Command | None = Field(
        None,
        description="What `conveyor migrate undo` runs to undo one expand migration; it is "
        "told which by CONVEYOR_MIGRATION, CONVEYOR_MIGRATION_FILE and CONVEYOR_UNDO_FILE.",
    )
    lock_timeout: PositiveDuration = Field(
        5.0, description="PostgreSQL lock_timeout for every statement of the migration."
    )
    statement_timeout: PositiveDuration = Field(
        60.0, description="PostgreSQL statement_timeout for every statement of the migration."
    )
    timeout: PositiveDuration = Field(
        600.0, description="The whole command is stopped, and the release fails, after this."
    )
    rollback_horizon: RollbackHorizonConfig = Field(
        default_factory=RollbackHorizonConfig,
        description="A contract migration is refused while a release lacking its expand is "
        "running or a rollback target within this horizon, in any environment.",
    )
