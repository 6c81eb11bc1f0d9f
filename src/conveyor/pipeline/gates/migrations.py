"""``gate: migration-safety``: Conveyor finds the migrations, squawk and Conveyor judge them.

The built-in review (``review_migrations``, named ``squawk`` in the evidence) does three
things: it lints the SQL with the real squawk binary (raw ``.sql`` files, and Alembic
revisions rendered offline by ``alembic upgrade --sql``: ``alembic_sql.py``), keeping each
finding's file, line, rule, message and squawk's suggested fix (``squawk.py`` says which
rules block); it classifies each migration expand or contract and checks the class against
what the migration declares; and it requires every expand to come with its undo
(``core.migrations``). Django migrations are found and listed, but not rendered (that needs
their database): they count as not checked.

Other checkers plug in beside it (``register_migration_checker`` or the
``conveyor.migration_checkers`` entry point group); all run and the worst verdict wins. No
migrations passes; migrations nothing could check are ``skipped`` with the reason, never
passed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

from conveyor.config.gates import LOCK
from conveyor.core.migrations import is_undo
from conveyor.errors import ConveyorError, GateUnavailable
from conveyor.pipeline.gates.evidence import (
    MAX_FINDINGS,
    GateEvidence,
    GateRequest,
    crashed,
    valid,
)
from conveyor.pipeline.gates.files import allowed, files_under, shown
from conveyor.pipeline.gates.plugins import load, plugins
from conveyor.pipeline.gates.review import BUILTIN, review_migrations

CHECKER_GROUP = "conveyor.migration_checkers"
MIGRATION_PATHS = ("migrations/",)
NO_CHECKER = "no migration-safety checker is installed"
_checkers: dict[str, MigrationChecker] = {}


class MigrationChecker(Protocol):
    """Judges the migration files ``migration-safety`` found (paths relative to the workdir).

    Its evidence's ``gate`` and ``checked`` are filled in by Conveyor; ``result``, ``summary``,
    ``findings`` and ``details`` are the checker's verdict.
    """

    def __call__(self, request: GateRequest, migrations: tuple[str, ...], /) -> GateEvidence: ...


def is_migration(path: Path) -> bool:
    """``*.sql``; ``*.py`` in a ``versions/`` folder (Alembic); ``NNNN_*.py`` in ``migrations/``
    (Django). Alembic's ``env.py``, packages' ``__init__.py`` and the undo of a SQL migration
    (``NAME.undo.sql``, ``NAME.down.sql``) are not migrations."""
    if path.suffix == ".sql":
        return not is_undo(path.name)
    if path.suffix != ".py" or path.name == "__init__.py":
        return False
    folder = path.parent.name
    return folder == "versions" or (folder == "migrations" and path.name[:1].isdigit())


def migration_safety(request: GateRequest) -> GateEvidence:
    """No migrations passes; migrations nothing could check are skipped, never passed."""
    paths = request.paths or MIGRATION_PATHS
    found = [p for p in files_under(request.workdir, paths) if is_migration(p)]
    migrations = tuple(sorted(shown(p, request.workdir) for p in found))
    where = ", ".join(paths)
    if not migrations:
        return GateEvidence("migration-safety", "success", f"no migrations under {where}")
    checkers: list[tuple[str, MigrationChecker]] = [(BUILTIN, review_migrations)]
    checkers += migration_checkers()
    verdicts = [
        (name, _excused(_ask(name, check, request, migrations), request.allow))
        for name, check in checkers
    ]
    return _combined(verdicts, migrations)


def _ask(
    name: str, check: MigrationChecker, request: GateRequest, migrations: tuple[str, ...]
) -> GateEvidence:
    try:
        verdict: object = check(request, migrations)
    except GateUnavailable:
        raise
    except Exception as error:  # a third-party checker's bug fails the gate, not the run
        return crashed("migration-safety", f"migration checker {name!r}", error)
    return valid("migration-safety", verdict, f"migration checker {name!r}")


def _combined(
    verdicts: list[tuple[str, GateEvidence]], migrations: tuple[str, ...]
) -> GateEvidence:
    """Worst verdict wins: any failure fails, else any skip skips; findings are all kept."""
    results = {v.result for _, v in verdicts}
    result = next(r for r in ("failure", "skipped", "success") if r in results)
    if len(verdicts) == 1:
        name, only = verdicts[0]
        summary, details = only.summary, {"checker": name, **only.details}
    else:
        summary = "; ".join(f"{name}: {v.summary}" for name, v in verdicts)
        details = {f"{name}.{k}": val for name, v in verdicts for k, val in v.details.items()}
        details["checker"] = ", ".join(name for name, _ in verdicts)
    findings = sorted(
        (f for _, v in verdicts for f in v.findings), key=lambda f: (f.file, f.line, f.detector)
    )
    return GateEvidence(
        "migration-safety",
        result,
        summary,
        checked=migrations,
        findings=tuple(findings[:MAX_FINDINGS]),
        allowed=sum(v.allowed for _, v in verdicts),
        details=details,
    )


def _excused(evidence: GateEvidence, allow: Sequence[str]) -> GateEvidence:
    """``allow`` excuses findings in matching files; a failure made only of them passes
    (warnings never fail, so a failure whose remaining findings are warnings passes too)."""
    kept = tuple(f for f in evidence.findings if not allowed(f.file, allow))
    excused = len(evidence.findings) - len(kept)
    if not excused:
        return evidence
    result = evidence.result
    if result == "failure" and not any(f.level == "error" for f in kept):
        # It failed for its findings (a crash has none), all excused; what it could not
        # check still keeps it from passing.
        result = "skipped" if evidence.details.get("unchecked") else "success"
    summary = f"{evidence.summary} ({excused} findings in allowed paths)"
    return dataclasses.replace(
        evidence, result=result, summary=summary, findings=kept, allowed=excused
    )


def register_migration_checker(check: MigrationChecker, *, name: str | None = None) -> str:
    """Add a checker for ``migration-safety``; returns the name its evidence will carry."""
    shown = name or f"{getattr(check, '__module__', '?')}.{getattr(check, '__qualname__', '?')}"
    with LOCK:
        if shown in _checkers:
            raise ConveyorError(f"migration checker {shown!r} is already registered")
        _checkers[shown] = check
    return shown


def unregister_migration_checker(name: str) -> None:
    with LOCK:
        _checkers.pop(name, None)


def migration_checkers() -> list[tuple[str, MigrationChecker]]:
    """Checkers registered from code, then entry points (loaded here, once)."""
    with LOCK:
        found: list[tuple[str, MigrationChecker]] = list(_checkers.items())
        for name, point in plugins(CHECKER_GROUP).items():
            if name not in _checkers:
                found.append((name, cast(MigrationChecker, load(CHECKER_GROUP, point))))
        return found
