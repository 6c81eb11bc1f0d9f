"""Running a release's ``migrate:`` command, and what the ledger says the schema went through.

The command runs once per release, before any new instance starts (``core.rollout.migrate``
decides when), in the release's unpacked artifact, with the release's config and secrets
and as its ``run_as`` user, like an instance would. Two things are added so that a migration
can never hold writers hostage: PostgreSQL's ``lock_timeout`` and ``statement_timeout``, in
``PGOPTIONS`` and in the ``options`` of the URL the ``database:`` key holds (libpq reads
both, and the URL's wins, so both carry them). A migration queued behind a long
transaction then gives up after ``lock_timeout`` instead of making every writer queue
behind it, and the release fails before any traffic moves.

Output is evidence: masked (secret values, the URL's password) and kept to its tail.

The ledger is the schema's history (``schema_history``): ``schema.contracted`` when a
release's contract ran (written with its ``migration.succeeded``, naming the releases that
are no longer safe to roll back to), ``migration.undone`` when an expand was undone on
purpose, and ``migration.succeeded`` listing what each release applied.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from conveyor.core.masking import Masker
from conveyor.core.migrations import (
    Contracted,
    MigrateSpec,
    Migration,
    ReleaseFacts,
    pg_options,
    pg_timeout,
)
from conveyor.core.state import MigrationRun, Phase
from conveyor.run_as import (
    UnknownUser,
    current,
    home_of,
    login_environment,
    lookup,
    needs_switch,
    switch_problem,
)
from conveyor.runtime.local.environment import (
    DEFAULT_PATH,
    INHERITED,
    Unusable,
    argv,
    environment_problem,
    read_secrets,
)
from conveyor.runtime.local.task import run_task
from conveyor.store.records import EventRecord, NewEvent, ReleaseRecord
from conveyor.store.repository import Store

LEDGER_OUTPUT = 4000
"""Characters of a migration's output kept on the ledger (its end)."""
HISTORY = 200
SCHEMA_EVENTS = ("schema.contracted", "migration.undone", "migration.succeeded")


async def run_migration(
    release: ReleaseRecord,
    artifact_dir: Path,
    *,
    command: str | tuple[str, ...] | None = None,
    extra: Mapping[str, str] | None = None,
    server_env: Mapping[str, str] | None = None,
) -> MigrationRun:
    """Run the release's ``migrate.run`` (or ``command``) once; a failure is a result."""
    spec = release.plan.migrate
    assert spec is not None, "a release without migrate: has nothing to run"
    command = command if command is not None else spec.run
    if command is None:
        return MigrationRun(False, None, 0.0, "", "nothing to run: no migrate command")
    base = os.environ if server_env is None else server_env
    try:
        env, hidden, user = migration_environment(release, spec, base, extra or {})
    except Unusable as exc:
        why, hint = exc.args
        return MigrationRun(False, None, 0.0, "", f"could not start: {why} ({hint})")
    result = await run_task(
        argv(command), cwd=artifact_dir, env=env, timeout=spec.timeout, user=user
    )
    output = Masker(hidden)(result.output)[-LEDGER_OUTPUT:]
    if result.problem is not None:
        detail = f"could not start: {result.problem}"
        return MigrationRun(False, None, result.seconds, output, detail)
    if result.timed_out:
        detail = f"stopped after its timeout of {spec.timeout:g}s"
        return MigrationRun(False, None, result.seconds, output, detail)
    code = result.exit_code
    return MigrationRun(code == 0, code, result.seconds, output, f"exit {code}")


def migration_environment(
    release: ReleaseRecord,
    spec: MigrateSpec,
    base: Mapping[str, str],
    extra: Mapping[str, str],
) -> tuple[dict[str, str], list[str], Any]:
    """The command's environment, the values to mask in its output, and its user."""
    plan = release.plan
    user = _user(plan.instance.run_as)
    env = {name: base[name] for name in INHERITED if name in base}
    if user is not None:
        env.update(login_environment(user, home_of(user)))
    env.setdefault("PATH", DEFAULT_PATH)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(plan.config)
    problem = environment_problem(plan.config)
    if problem is not None:
        raise Unusable(problem, "fix the release's config and deploy again")
    secrets = read_secrets(plan.secrets, base)
    env.update(secrets)
    url = env.get(spec.database)
    if not url:
        raise Unusable(
            f"migrate.database names {spec.database}, which this release's config does not set",
            f"set {spec.database} (the database URL) in services.{plan.service}.config or as "
            "a secret, and deploy again",
        )
    options = pg_options(spec.lock_timeout, spec.statement_timeout)
    env[spec.database] = with_options(url, options)
    env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {options}".strip()
    env.update(
        {
            "CONVEYOR_SERVICE": release.service,
            "CONVEYOR_ENV": release.env,
            "CONVEYOR_REVISION": str(release.revision),
            "CONVEYOR_ARTIFACT": release.artifact_digest,
            "CONVEYOR_LOCK_TIMEOUT": pg_timeout(spec.lock_timeout),
            "CONVEYOR_STATEMENT_TIMEOUT": pg_timeout(spec.statement_timeout),
            **extra,
        }
    )
    hidden = [*secrets.values(), *_password(url)]
    return env, hidden, user


def with_options(url: str, options: str) -> str:
    """``url`` with ``options`` added to its libpq ``options`` parameter (PostgreSQL URLs
    only; anything else is left as it is and relies on PGOPTIONS)."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = [value for key, value in query if key == "options"]
    merged = " ".join([*present, options]).strip()
    kept = [(key, value) for key, value in query if key != "options"]
    return urlunsplit(
        parts._replace(query=urlencode([*kept, ("options", merged)], quote_via=quote))
    )


def _password(url: str) -> list[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password] if password else []


def _user(run_as: str | None) -> Any:
    if run_as is None:
        return None
    server = current()
    try:
        user = lookup(run_as)
    except UnknownUser as exc:
        raise Unusable(exc.message, "create the user, or remove run_as and deploy again") from None
    problem = switch_problem(user, server)
    if problem is not None:
        raise Unusable(problem, "start the server as root, or remove run_as")
    return user if needs_switch(user, server) else None


def started_details(release: ReleaseRecord) -> dict[str, Any]:
    """What ``migration.started`` records: the command, where, the bounds, the migrations."""
    spec = release.plan.migrate
    assert spec is not None
    run = spec.run
    return {
        "command": run if isinstance(run, str) or run is None else list(run),
        "database": spec.database,
        "lock_timeout": spec.lock_timeout,
        "statement_timeout": spec.statement_timeout,
        "timeout": spec.timeout,
        "migrations": [{"id": m.id, "class": m.kind} for m in spec.migrations],
    }


# --- the schema's history, from the ledger ------------------------------------------------


@dataclass(frozen=True)
class SchemaHistory:
    """What ran against one environment's database: contracts, and undone expands."""

    contracted: tuple[Contracted, ...]
    undone: Mapping[str, str]  # expand id -> who undid it (not applied again since)

    @property
    def contracts(self) -> frozenset[str]:
        return frozenset(c for event in self.contracted for c in event.contract.split(", "))


def schema_history(store: Store, service: str, env: str) -> SchemaHistory:
    return history_of(list(store.every_event(service=service, env=env, kinds=SCHEMA_EVENTS)))


def history_of(events: Sequence[EventRecord]) -> SchemaHistory:
    """Contracts that ran, and expands undone since they were last applied (pure)."""
    contracted: list[Contracted] = []
    undone: dict[str, str] = {}
    for event in events:  # ledger order
        details = event.details
        if event.kind == "schema.contracted":
            contracted.append(
                Contracted(
                    ", ".join(details.get("contracts", [])),
                    tuple(details.get("expands", [])),
                    str(details.get("by", f"release #{event.release_id}")),
                )
            )
        elif event.kind == "migration.undone":
            undone[str(details.get("migration"))] = event.actor
        elif event.kind == "migration.succeeded":
            for name in details.get("migrations", []):
                undone.pop(str(name), None)
    return SchemaHistory(tuple(contracted), undone)


def release_facts(release: ReleaseRecord) -> ReleaseFacts:
    spec = release.plan.migrate
    return ReleaseFacts(
        release_id=release.id,
        name=release.name,
        env=release.env,
        revision=release.revision,
        phase=release.phase.value,
        finished_at=release.status.finished_at,
        migrations=spec.names if spec is not None else None,
        in_progress=release.phase.in_progress,
    )


def contracted_event(store: Store, release: ReleaseRecord) -> NewEvent | None:
    """After a release's migration succeeded: its contracts that had not run here yet, and
    the releases of this environment no longer safe to roll back to because of them."""
    spec = release.plan.migrate
    if spec is None:
        return None
    done = schema_history(store, release.service, release.env).contracts
    contracts = [m for m in spec.migrations if m.kind == "contract" and m.id not in done]
    if not contracts:
        return None
    expands = sorted({name for c in contracts for name in c.after})
    unsafe = [
        {"release_id": r.id, "revision": r.revision, "name": r.name}
        for r in store.releases(release.service, release.env, limit=HISTORY)
        if r.id != release.id and r.phase == Phase.SUCCEEDED and _lacks(r, expands, spec)
    ]
    return NewEvent(
        "schema.contracted",
        {
            "contracts": [c.id for c in contracts],
            "expands": expands,
            "by": release.name,
            "no_longer_safe": unsafe,
            "why": "a rollback to these would run code built before "
            f"{', '.join(expands) or 'the contract'} against the contracted schema",
        },
    )


def _lacks(release: ReleaseRecord, expands: Sequence[str], spec: MigrateSpec) -> bool:
    theirs = release.plan.migrate
    if theirs is None:
        return True
    wanted: list[Migration | None] = [spec.find(name) for name in expands]
    return any(m is None or not (m.names & theirs.names) for m in wanted) if wanted else False
