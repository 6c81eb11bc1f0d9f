"""What a release freezes about its migrations (``MigrateSpec``) and the database timeouts.

Frozen into the release plan so a rollback or a resumed release runs exactly what was
reviewed, never what the working tree holds today.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from conveyor.core.migrations.files import Migration


@dataclass(frozen=True)
class Horizon:
    """How far back a rollback may reach: the ``releases`` newest before the current one,
    and any that stopped running less than ``age`` seconds ago."""

    releases: int = 1
    age: float = 0.0


@dataclass(frozen=True)
class MigrateSpec:
    """A release's ``migrate:`` step and the migrations its artifact holds.

    ``run`` is None on a rollback: old code may not know newer revisions, and an expand is
    compatible with it by construction, so a rollback never migrates.
    """

    database: str
    run: str | tuple[str, ...] | None = None
    undo: str | tuple[str, ...] | None = None
    lock_timeout: float = 5.0
    statement_timeout: float = 60.0
    timeout: float = 600.0
    horizon: Horizon = field(default_factory=Horizon)
    migrations: tuple[Migration, ...] = ()
    lint_note: str | None = None  # why migrations were not linted when the release was made

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for m in self.migrations for name in m.names)

    def find(self, name: str) -> Migration | None:
        return next((m for m in self.migrations if name in m.names), None)

    def returning(self) -> MigrateSpec:
        return replace(self, run=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "run": _command_json(self.run),
            "undo": _command_json(self.undo),
            "lock_timeout": self.lock_timeout,
            "statement_timeout": self.statement_timeout,
            "timeout": self.timeout,
            "horizon": {"releases": self.horizon.releases, "age": self.horizon.age},
            "migrations": [m.to_json() for m in self.migrations],
            "lint_note": self.lint_note,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MigrateSpec:
        horizon = data.get("horizon") or {}
        return cls(
            database=str(data["database"]),
            run=_command(data.get("run")),
            undo=_command(data.get("undo")),
            lock_timeout=float(data.get("lock_timeout", 5.0)),
            statement_timeout=float(data.get("statement_timeout", 60.0)),
            timeout=float(data.get("timeout", 600.0)),
            horizon=Horizon(int(horizon.get("releases", 1)), float(horizon.get("age", 0.0))),
            migrations=tuple(Migration.from_json(m) for m in data.get("migrations") or ()),
            lint_note=data.get("lint_note"),
        )


def _command_json(command: str | tuple[str, ...] | None) -> str | list[str] | None:
    return command if command is None or isinstance(command, str) else list(command)


def _command(value: object) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise ValueError(f"a command is text or a list, not {type(value).__name__}")


def pg_options(lock_timeout: float, statement_timeout: float) -> str:
    """libpq ``options`` that make every statement of the session give up in time."""
    return (
        f"-c lock_timeout={pg_timeout(lock_timeout)} "
        f"-c statement_timeout={pg_timeout(statement_timeout)}"
    )


def pg_timeout(seconds: float) -> str:
    """A duration as PostgreSQL settings take it (``5000ms``); never 0, which means "none"."""
    return f"{max(1, round(seconds * 1000))}ms"
