"""Migrations at release time: what an artifact holds, when a contract may run, the way back.

A deploy of a service with ``migrate:`` reads the migrations out of the artifact it is about
to run (the verified bytes, not the working tree), classifies them (``core.migrations``),
lints its SQL with squawk when the server has it (evidence for the approval page; blocking
is the gate's job), and freezes all of it into the release's plan. Then it refuses:

* a new expand without its undo (the way back must exist before the way in);
* code built before an expand whose contract already ran in this environment (its schema
  is gone: the same rule refuses a rollback to such a release, ``check_rollback``);
* a contract while any environment runs, is rolling out, or keeps as a rollback target
  within the horizon a release built before the expand it completes — naming each one.

``undo`` runs an expand's undo on purpose (``conveyor migrate undo``): admins only, with a
reason, never while the environment runs code built with that expand, and on the ledger
with its output; the releases built with it are no longer safe to roll back to until a
deploy applies it again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conveyor.application.caller import Caller
from conveyor.artifacts.store import ArtifactStore
from conveyor.config.loader import LoadedProject
from conveyor.config.migrations import MigrateConfig
from conveyor.config.source import read_yaml
from conveyor.controller.migrations import (
    HISTORY,
    release_facts,
    run_migration,
    schema_history,
)
from conveyor.core.migrations import (
    Held,
    Horizon,
    Lint,
    MigrateSpec,
    Migration,
    contract_blockers,
    held_releases,
    read_migrations,
    rollback_barrier,
    undo_candidates,
)
from conveyor.core.plan import ReleasePlan
from conveyor.errors import ConfigError, ConfigProblem, Conflict, ConveyorError, NotFound, Refused
from conveyor.pipeline.gates import squawk
from conveyor.pipeline.gates.alembic_sql import is_alembic
from conveyor.pipeline.gates.files import files_under, shown
from conveyor.pipeline.gates.migrations import is_migration
from conveyor.store.records import NewEvent, ReleaseRecord
from conveyor.store.repository import Store

ALEMBIC_LINT = "Alembic revisions are linted by the migration-safety gate (rendered offline)"


@dataclass
class Migrations:
    store: Store
    artifacts: ArtifactStore
    clock: Callable[[], float]

    # --- deploy -------------------------------------------------------------------------

    def frozen(self, project: LoadedProject, plan: ReleasePlan) -> ReleasePlan:
        """``plan`` with the service's ``migrate:`` step and the artifact's migrations."""
        config = project.config.service(plan.service).migrate
        if config is None:
            return plan
        if config.database not in plan.config and config.database not in plan.secrets:
            raise _database_missing(project, plan, config)
        root = self.artifacts.unpack(plan.artifact)
        migrations, note = inspect(root, config.paths)
        run, undo = config.run, config.undo
        return plan.evolve(
            migrate=MigrateSpec(
                database=config.database,
                run=run if isinstance(run, str) else tuple(run),
                undo=undo if undo is None or isinstance(undo, str) else tuple(undo),
                lock_timeout=float(config.lock_timeout),
                statement_timeout=float(config.statement_timeout),
                timeout=float(config.timeout),
                horizon=Horizon(
                    config.rollback_horizon.releases, float(config.rollback_horizon.age)
                ),
                migrations=migrations,
                lint_note=note,
            )
        )

    def check(self, caller: Caller, plan: ReleasePlan, stable: ReleaseRecord | None) -> None:
        """Refuse a release whose migrations would break code that runs, or may run again."""
        now = self.clock()
        spec = plan.migrate
        if spec is None or spec.run is None:
            return
        unmet: list[str] = []
        hints: list[str] = []
        before = stable.plan.migrate.names if stable and stable.plan.migrate else frozenset()
        for m in spec.migrations:
            if m.kind == "expand" and m.undo is None and not m.names & before:
                unmet.append(f"the expand {m.file} has no undo")
                hints.append(f"add {_undo_hint(m)} (an expand must come with its undo)")
        history = schema_history(self.store, plan.service, plan.env)
        gone = rollback_barrier(spec.names, history.contracted, {})
        if gone is not None:
            unmet.append(f"the schema of {plan.env} moved on: {gone}")
            hints.append("deploy a build made after that expand")
        contracts = [
            m for m in spec.migrations if m.kind == "contract" and m.id not in history.contracts
        ]
        blockers = contract_blockers(contracts, spec.migrations, self.held(plan.service, now))
        if blockers:
            named = ", ".join(dict.fromkeys(b.contract.id for b in blockers))
            unmet.append(
                f"the contract {named} would break code that runs or may run again: "
                + "; ".join(b.describe() for b in blockers)
            )
            expands = ", ".join(dict.fromkeys(b.expand for b in blockers))
            hints.append(
                f"ship a release built with {expands} to every environment first, and let it "
                f"replace the older ones as rollback targets (services.{plan.service}.migrate."
                "rollback_horizon); then deploy this again"
            )
        if not unmet:
            return
        self.store.append_events(
            [
                NewEvent(
                    "release.refused",
                    {
                        "artifact": plan.artifact,
                        "unmet": unmet,
                        "hint": "; ".join(hints),
                        "held": [
                            {"release": b.held.release.name, "why": b.held.why, "lacks": b.expand}
                            for b in blockers
                        ],
                    },
                    service=plan.service,
                    env=plan.env,
                )
            ],
            actor=caller.actor,
        )
        raise Refused(
            f"{plan.service} may not be released to {plan.env}: " + "; ".join(unmet),
            hint="; ".join(hints),
        )

    def held(self, service: str, now: float) -> list[Held]:
        """Every release of ``service``, in every environment, that old code lives in."""
        held: list[Held] = []
        envs = sorted({r.env for r in self.store.latest_per_service_env() if r.service == service})
        for env in envs:
            history = self.store.releases(service, env, limit=HISTORY)
            horizon = _horizon(history)
            held += held_releases([release_facts(r) for r in history], horizon, now)
        return held

    # --- rollback -----------------------------------------------------------------------

    def check_rollback(self, caller: Caller, target: ReleaseRecord) -> None:
        """Refuse a rollback to code whose schema is gone (a rollback never migrates)."""
        history = schema_history(self.store, target.service, target.env)
        names = target.plan.migrate.names if target.plan.migrate else None
        reason = rollback_barrier(names, history.contracted, history.undone)
        if reason is None:
            return
        message = f"r{target.revision} of {target.service} in {target.env} is no longer safe to "
        message += f"roll back to: {reason}"
        self.store.append_events(
            [
                NewEvent(
                    "release.refused",
                    {"rollback_to": target.revision, "unmet": [message]},
                    service=target.service,
                    env=target.env,
                )
            ],
            actor=caller.actor,
        )
        raise Refused(
            message,
            hint=f"roll back to a later release (`conveyor history {target.service} --env "
            f"{target.env}`), or deploy a fix forward",
        )

    # --- status -------------------------------------------------------------------------

    def status(self, service: str, env: str) -> dict[str, Any]:
        """What one environment's schema holds and what that means for rollbacks and
        contracts (``conveyor migrate status``): the running release's migrations, each with
        whether its contract ran or its expand was undone; every recent release with whether
        a rollback to it is still safe; and the releases that hold a contract back."""
        releases = self.store.releases(service, env, limit=HISTORY)
        history = schema_history(self.store, service, env)
        running = next((r for r in releases if r.phase.value == "succeeded"), None)
        spec = running.plan.migrate if running is not None else None
        contracts = history.contracts
        migrations = [
            {
                **m.to_json(),
                "state": "undone"
                if m.id in history.undone
                else "contracted"
                if m.id in contracts
                else "applied",
                **({"undone_by": history.undone[m.id]} if m.id in history.undone else {}),
            }
            for m in (spec.migrations if spec is not None else ())
        ]
        targets = []
        for r in releases:
            if r.phase.value != "succeeded" or r is running:
                continue
            names = r.plan.migrate.names if r.plan.migrate else None
            barrier = rollback_barrier(names, history.contracted, history.undone)
            targets.append(
                {
                    "release_id": r.id,
                    "revision": r.revision,
                    "name": r.name,
                    "safe": barrier is None,
                    **({"why": barrier} if barrier else {}),
                }
            )
        horizon = _horizon(releases)
        held = held_releases([release_facts(r) for r in releases], horizon, self.clock())
        return {
            "service": service,
            "env": env,
            "running": running.name if running is not None else None,
            "migrate": spec is not None,
            "migrations": migrations,
            "contracted": [
                {"contract": c.contract, "expands": list(c.expands), "by": c.by}
                for c in history.contracted
            ],
            "undone": dict(history.undone),
            "rollback_targets": targets,
            "holding_contracts": [
                {"name": h.release.name, "revision": h.release.revision, "why": h.why} for h in held
            ],
            "horizon": {"releases": horizon.releases, "age": horizon.age},
        }

    # --- undo ---------------------------------------------------------------------------

    async def undo(
        self, caller: Caller, service: str, env: str, name: str, reason: str
    ) -> dict[str, Any]:
        """Run the undo of the expand ``name`` against ``env``'s database, on purpose."""
        if not reason.strip():
            raise Refused("undoing a migration needs a reason", hint='--reason "why it is undone"')
        releases = self.store.releases(service, env, limit=HISTORY)
        shipped, migration = _shipped(releases, name, service, env)
        spec = shipped.plan.migrate
        assert spec is not None
        if migration.kind != "expand" or migration.undo is None:
            raise Refused(
                f"{migration.id} is a {migration.kind} migration"
                + ("" if migration.kind != "expand" else " without an undo")
                + ": only an expand that ships its undo can be undone",
                hint="a contract is not undone: the way back from it is a new expand",
            )
        if spec.undo is None:
            raise Refused(
                f"{shipped.name} has no undo command (services.{service}.migrate.undo)",
                hint="declare migrate.undo in conveyor.yaml and deploy a release with it",
            )
        for r in releases:
            uses = r.plan.migrate is not None and bool(migration.names & r.plan.migrate.names)
            if r.phase.in_progress:
                raise Conflict(
                    f"{r.name} is rolling out",
                    hint=f"wait for it (`conveyor status --env {env}`), then undo",
                )
            if r.phase.value == "succeeded":
                if uses:
                    raise Conflict(
                        f"{r.name} runs in {env} and was built with {migration.id}: its code may "
                        "use what that expand added",
                        hint=f"roll back to a release built before it first (`conveyor rollback "
                        f"{service} --env {env} --to N`), then undo",
                    )
                break
        if migration.id in schema_history(self.store, service, env).undone:
            raise Conflict(
                f"{migration.id} was already undone in {env} and not applied since",
                hint="nothing to undo",
            )
        root = self.artifacts.unpack(shipped.artifact_digest)
        run = await run_migration(
            shipped,
            root,
            command=spec.undo,
            extra={
                "CONVEYOR_MIGRATION": migration.id,
                "CONVEYOR_MIGRATION_FILE": migration.file,
                "CONVEYOR_UNDO_FILE": "" if migration.undo.endswith("()") else migration.undo,
            },
        )
        unsafe = [
            {"release_id": r.id, "revision": r.revision, "name": r.name}
            for r in releases
            if r.phase.value == "succeeded"
            and r.plan.migrate is not None
            and migration.names & r.plan.migrate.names
        ]
        details = {
            "migration": migration.id,
            "file": migration.file,
            "undo": migration.undo,
            "from": shipped.name,
            "reason": reason,
            "seconds": round(run.seconds, 3),
            "exit_code": run.exit_code,
            "result": run.detail,
            "output": run.output,
            "lock_timeout": spec.lock_timeout,
            "statement_timeout": spec.statement_timeout,
            **({"no_longer_safe": unsafe} if run.ok else {}),
        }
        kind = "migration.undone" if run.ok else "migration.undo_failed"
        [event] = self.store.append_events(
            [NewEvent(kind, details, service=service, env=env)], actor=caller.actor
        )
        return {**details, "ok": run.ok, "event": event.seq}


def inspect(root: Path, paths: list[str]) -> tuple[tuple[Migration, ...], str | None]:
    """The migrations under ``paths`` of an unpacked artifact, classified and (SQL) linted."""
    found = [p for p in files_under(root, paths) if p.exists()]
    names = {shown(p, root): p for p in found}
    wanted = {
        name
        for name, path in names.items()
        if is_migration(path) and (name.endswith(".sql") or is_alembic(name))
    }
    undos = {u for name in wanted for u in undo_candidates(name) if u in names}
    texts = {n: names[n].read_text(encoding="utf-8", errors="replace") for n in wanted | undos}
    migrations = read_migrations(texts)
    binary = squawk.find_squawk(os.environ)
    sql = [m.file for m in migrations if m.file.endswith(".sql")]
    if binary is None:
        return migrations, "squawk is not installed on the server: not linted here"
    try:
        findings = squawk.lint(binary, [Path(n) for n in sql], cwd=root)
    except squawk.SquawkFailed as exc:
        return migrations, f"squawk failed: {exc}"
    by_file: dict[str, list[Lint]] = {}
    kinds = {m.file: m.kind for m in migrations}
    for f in findings:
        level = squawk.level(f, kinds.get(f.file, "unknown"))
        lint = Lint(f.line, f.rule, level, f.message, squawk.note(f, kinds.get(f.file, "unknown")))
        by_file.setdefault(f.file, []).append(lint)
    linted = tuple(
        replace(m, lint=tuple(by_file.get(m.file, ()))) if m.file.endswith(".sql") else m
        for m in migrations
    )
    alembic = any(m.file.endswith(".py") for m in migrations)
    return linted, ALEMBIC_LINT if alembic else None


def migrations_report(plan: ReleasePlan) -> dict[str, Any] | None:
    """What evidence and the approval page show of a release's migrations (pure)."""
    spec = plan.migrate
    if spec is None:
        return None
    return {
        "runs": spec.run is not None,
        "command": spec.run if isinstance(spec.run, str) or spec.run is None else list(spec.run),
        "database": spec.database,
        "lock_timeout": spec.lock_timeout,
        "statement_timeout": spec.statement_timeout,
        "undo_command": spec.undo
        if isinstance(spec.undo, str) or spec.undo is None
        else list(spec.undo),
        "rollback_horizon": {"releases": spec.horizon.releases, "age": spec.horizon.age},
        "lint_note": spec.lint_note,
        "migrations": [
            {
                "id": m.id,
                "file": m.file,
                "class": m.kind,
                "declared": m.declared,
                "inferred": m.inferred,
                "why": list(m.reasons),
                "undo": m.undo,
                "completes": list(m.after),
                "lint": None if m.lint is None else [f.to_json() for f in m.lint],
            }
            for m in spec.migrations
        ],
    }


def _shipped(
    releases: list[ReleaseRecord], name: str, service: str, env: str
) -> tuple[ReleaseRecord, Migration]:
    """The newest release of the environment that ran ``name`` as part of its migrate step."""
    for release in releases:
        spec = release.plan.migrate
        found = spec.find(name) if spec is not None and spec.run is not None else None
        if found is not None and release.status.migration == "succeeded":
            return release, found
    known = sorted({m.id for r in releases if r.plan.migrate for m in r.plan.migrate.migrations})
    raise NotFound(
        f"no release of {service} in {env} applied a migration named {name!r}",
        hint=f"name one of: {', '.join(known) or 'none yet'} (its file name without .sql/.py)",
    )


def _horizon(history: list[ReleaseRecord]) -> Horizon:
    """The horizon of the newest release that declares one (config of that moment)."""
    for release in history:
        if release.plan.migrate is not None:
            return release.plan.migrate.horizon
    return Horizon()


def _undo_hint(m: Migration) -> str:
    if m.file.endswith(".py"):
        return f"a downgrade() to {m.file}"
    return undo_candidates(m.file)[0]


def _database_missing(
    project: LoadedProject, plan: ReleasePlan, config: MigrateConfig
) -> ConfigError:
    field = ("services", plan.service, "migrate", "database")
    line = _line(project, field)
    return ConfigError(
        [
            ConfigProblem(
                file=str(project.file),
                line=line,
                field=".".join(field),
                message=f"names {config.database}, which the config of {plan.service} in "
                f"{plan.env} does not set",
                hint=f"set {config.database} (the database URL) in services.{plan.service}."
                f"config, environments.{plan.env}.services.{plan.service}.config or as a "
                "secret: {secret: {env: NAME}}",
            )
        ]
    )


def _line(project: LoadedProject, path: tuple[str, ...]) -> int | None:
    try:
        origins = read_yaml(project.file.read_text(encoding="utf-8"), str(project.file)).origins()
    except (OSError, UnicodeDecodeError, ConveyorError):
        return None
    found = origins.get(path)
    return None if found is None else found.line
