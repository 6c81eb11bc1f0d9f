"""The pure migration rules: classification, declarations, undos, the contract rule, barriers,
and the rollout's migrate step."""

from __future__ import annotations

import pytest

from conveyor.core.migrations import (
    Contracted,
    Declaration,
    Horizon,
    MigrateSpec,
    Migration,
    ReleaseFacts,
    classify_alembic,
    classify_sql,
    contract_blockers,
    declaration,
    effective,
    held_releases,
    pg_options,
    read_migrations,
    review,
    rollback_barrier,
)
from conveyor.core.rollout import decide
from conveyor.core.sql import split_statements
from conveyor.core.state import (
    MigrationRun,
    Observations,
    Phase,
    RolloutSpec,
    RolloutStatus,
    RunMigration,
    StrategySpec,
    Triggers,
    Wait,
)

# --- statements ---------------------------------------------------------------------------


def test_statements_are_split_outside_comments_quotes_and_dollar_bodies() -> None:
    sql = (
        "-- a comment; not a statement\n"
        "SELECT 'a;b', \"odd;name\" FROM t;\n"
        "/* block; /* nested; */ still */ CREATE FUNCTION f() RETURNS int AS $fn$\n"
        "  SELECT 1; $fn$ LANGUAGE sql;\n"
        "\n"
        "ALTER TABLE t ADD COLUMN x int"
    )
    found = [(s.line, s.text) for s in split_statements(sql)]
    assert found == [
        (2, "SELECT 'a;b', \"odd;name\" FROM t"),
        (3, "CREATE FUNCTION f() RETURNS int AS $fn$ SELECT 1; $fn$ LANGUAGE sql"),
        (6, "ALTER TABLE t ADD COLUMN x int"),
    ]


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("CREATE TABLE orders (id int)", "expand"),
        ("CREATE TABLE IF NOT EXISTS orders (id int)", "expand"),
        ("CREATE INDEX CONCURRENTLY i ON orders (a)", "expand"),
        ("CREATE UNIQUE INDEX i ON orders (a)", "expand"),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", "expand"),
        (
            "CREATE OR REPLACE TRIGGER t BEFORE INSERT ON o FOR EACH ROW EXECUTE FUNCTION f()",
            "expand",
        ),
        ("ALTER TABLE orders ADD COLUMN note text", "expand"),
        ("ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text DEFAULT ''", "expand"),
        ("ALTER TABLE orders ADD COLUMN n int NOT NULL DEFAULT 0", "expand"),
        ("ALTER TABLE orders ALTER COLUMN note DROP NOT NULL", "expand"),
        ("ALTER TABLE orders ALTER COLUMN note SET DEFAULT 'x'", "expand"),
        ("ALTER TABLE orders DROP CONSTRAINT c", "expand"),
        ("ALTER TYPE mood ADD VALUE 'meh'", "expand"),
        ("ALTER TABLE orders ADD COLUMN note text NOT NULL", "contract"),
        ("ALTER TABLE orders DROP COLUMN note", "contract"),
        ("ALTER TABLE orders RENAME COLUMN a TO b", "contract"),
        ("ALTER TABLE orders RENAME TO purchases", "contract"),
        ("ALTER TABLE orders ALTER COLUMN a TYPE bigint", "contract"),
        ("ALTER TABLE orders ALTER COLUMN a SET NOT NULL", "contract"),
        ("ALTER TABLE orders ALTER COLUMN a DROP DEFAULT", "contract"),
        ("ALTER TABLE orders ADD CONSTRAINT c CHECK (a > 0) NOT VALID", "contract"),
        ("ALTER TABLE orders VALIDATE CONSTRAINT c", "contract"),
        ("ALTER TABLE orders ADD COLUMN a int, DROP COLUMN b", "contract"),
        ("DROP TABLE orders", "contract"),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", "contract"),
        ("TRUNCATE orders", "contract"),
        ("UPDATE orders SET a = 1 WHERE a IS NULL", "neutral"),
        ("SET lock_timeout = '1s'", "neutral"),
        ("BEGIN", "neutral"),
        ("COMMENT ON TABLE orders IS 'x'", "neutral"),
        ("ALTER TABLE orders SET (fillfactor = 70)", "neutral"),
        ("DO $$ BEGIN END $$", "unknown"),
        ("CLUSTER orders USING i", "unknown"),
        ("", "neutral"),
    ],
)
def test_a_statement_expands_contracts_or_neither(sql: str, kind: str) -> None:
    assert classify_sql(sql).kind == kind


def test_the_worst_statement_decides_and_is_named_with_its_line() -> None:
    inferred = classify_sql(
        "CREATE TABLE a (id int);\nUPDATE a SET id = 1;\nALTER TABLE a DROP COLUMN id;\n"
    )
    assert inferred.kind == "contract"
    [deciding] = inferred.deciding
    assert deciding.describe() == "line 3: ALTER TABLE a DROP COLUMN id (drops a column)"
    assert inferred.tables == ("a",)


ALEMBIC = '''"""add email"""
revision = "3c4d"
down_revision: str | None = "1a2b"

def upgrade():
    op.add_column("users", sa.Column("email", sa.Text(), nullable=True))
    op.create_index(op.f("ix_users_email"), "users", ["email"])
{extra}
def downgrade():
    {down}
'''


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ("", "expand"),
        ('    op.drop_column("users", "name")\n', "contract"),
        ('    op.alter_column("users", "name", nullable=False)\n', "contract"),
        ('    op.alter_column("users", "name", new_column_name="full_name")\n', "contract"),
        ('    op.execute("ALTER TABLE users DROP COLUMN name")\n', "contract"),
        ('    op.execute("""\n        UPDATE users SET email = name\n    """)\n', "expand"),
        ("    op.execute(sql)\n", "unknown"),
        ('    op.add_column("users", sa.Column("x", sa.Text(), nullable=False))\n', "contract"),
        ('    op.create_foreign_key("fk", "users", "teams", ["team"], ["id"])\n', "contract"),
    ],
)
def test_alembic_revisions_are_read_by_their_op_calls(extra: str, kind: str) -> None:
    assert classify_alembic(ALEMBIC.format(extra=extra, down="pass")).kind == kind


def test_an_alembic_undo_is_a_downgrade_that_does_something() -> None:
    files = {"v/3c4d_email.py": ALEMBIC.format(extra="", down="pass")}
    [m] = read_migrations(files)
    assert (m.id, m.aliases, m.kind, m.undo) == ("3c4d_email", ("3c4d",), "expand", None)
    files = {"v/3c4d_email.py": ALEMBIC.format(extra="", down='op.drop_column("users", "email")')}
    assert read_migrations(files)[0].undo == "downgrade()"


# --- declarations, undos, the gate's review ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("m/0002_add.sql", "ALTER TABLE t ADD x int;", Declaration()),
        ("m/0002_add.sql", "-- conveyor: expand\n", Declaration("expand", (), 1)),
        ("m/0002_add.sql", "--conveyor:EXPAND", Declaration("expand", (), 1)),
        (
            "m/0003_drop.sql",
            "-- why\n-- conveyor: contract after 0002_add, 0001\n",
            Declaration("contract", ("0002_add", "0001"), 2),
        ),
        ("m/0002_expand_add.sql", "", Declaration(by_name="expand")),
        ("m/0003.contract.sql", "", Declaration(by_name="contract")),
        ("v/ab12_x.py", "# conveyor: contract\n", Declaration("contract", (), 1)),
        ("m/0002_expanded_view.sql", "", Declaration()),
    ],
)
def test_a_migration_declares_its_class_by_comment_or_name(
    path: str, text: str, expected: Declaration
) -> None:
    assert declaration(path, text) == expected


@pytest.mark.parametrize(
    ("declared", "inferred", "kind"),
    [
        (None, "expand", "expand"),
        ("expand", "contract", "contract"),
        ("contract", "expand", "contract"),
        ("expand", "neutral", "expand"),
        (None, "unknown", "unknown"),
        ("expand", "unknown", "expand"),
    ],
)
def test_whichever_says_contract_wins(declared: str | None, inferred: str, kind: str) -> None:
    assert effective(declared, inferred) == kind  # type: ignore[arg-type]


SEQUENCE = {
    "m/0001_create.sql": "CREATE TABLE orders (id int, customer text);",
    "m/0001_create.undo.sql": "DROP TABLE orders;",
    "m/0002_expand_email.sql": "ALTER TABLE orders ADD COLUMN email text;",
    "m/0002_expand_email.down.sql": "ALTER TABLE orders DROP COLUMN email;",
    "m/0002_other.sql": "-- conveyor: expand\nCREATE TABLE audit (id int);",
    "m/0002_other.undo.sql": "DROP TABLE audit;",
    "m/0003_drop_customer.sql": "ALTER TABLE orders DROP COLUMN customer;",
}


def test_migrations_are_ordered_paired_with_their_undo_and_contracts_with_their_expands() -> None:
    found = read_migrations(SEQUENCE)
    assert [(m.id, m.kind, m.undo) for m in found] == [
        ("0001_create", "expand", "m/0001_create.undo.sql"),
        ("0002_expand_email", "expand", "m/0002_expand_email.down.sql"),
        ("0002_other", "expand", "m/0002_other.undo.sql"),
        ("0003_drop_customer", "contract", None),
    ]
    # Inferred: the earlier expands of the tables it touches (not 0002_other's audit).
    assert found[-1].after == ("0001_create", "0002_expand_email")
    declared = {
        **SEQUENCE,
        "m/0003_drop_customer.sql": "-- conveyor: contract after 0002_expand_email\n"
        + SEQUENCE["m/0003_drop_customer.sql"],
    }
    assert read_migrations(declared)[-1].after == ("0002_expand_email",)


def _rules(files: dict[str, str]) -> list[tuple[str, str, str]]:
    found = read_migrations(files)
    said = {path: declaration(path, text) for path, text in files.items()}
    return [(p.file, p.rule, p.level) for p in review(found, said)]


def test_the_review_refuses_an_expand_without_undo_and_a_mislabelled_contract() -> None:
    assert _rules(SEQUENCE) == []
    no_undo = {k: v for k, v in SEQUENCE.items() if k != "m/0002_other.undo.sql"}
    assert _rules(no_undo) == [("m/0002_other.sql", "conveyor-expand-without-undo", "error")]
    lying = {**SEQUENCE, "m/0002_other.sql": "-- conveyor: expand\nDROP TABLE audit;"}
    assert ("m/0002_other.sql", "conveyor-expand-contracts", "error") in _rules(lying)
    unclear = {**SEQUENCE, "m/0004_do.sql": "DO $$ BEGIN END $$;"}
    assert _rules(unclear) == [("m/0004_do.sql", "conveyor-unclassified", "error")]
    typo = {**SEQUENCE, "m/0003_drop_customer.sql": "-- conveyor: contract after 0002_emial\n"}
    assert ("m/0003_drop_customer.sql", "conveyor-unknown-expand", "error") in _rules(typo)
    conflict = {"m/0005_contract_x.sql": "-- conveyor: expand\nCREATE TABLE x (a int);"}
    assert ("m/0005_contract_x.sql", "conveyor-declaration-conflict", "error") in _rules(conflict)


def test_a_spec_survives_json_and_a_rollback_drops_its_command() -> None:
    spec = MigrateSpec(
        database="DATABASE_URL",
        run="alembic upgrade head",
        undo=("python3", "undo.py"),
        horizon=Horizon(2, 3600.0),
        migrations=read_migrations(SEQUENCE),
    )
    assert MigrateSpec.from_json(spec.to_json()) == spec
    assert spec.returning().run is None and spec.returning().migrations == spec.migrations
    assert pg_options(1.5, 60) == "-c lock_timeout=1500ms -c statement_timeout=60000ms"


# --- the contract rule --------------------------------------------------------------------

E = frozenset({"0001_create", "0002_expand_email"})
OLD = frozenset({"0001_create"})


def facts(
    revision: int,
    migrations: frozenset[str] | None,
    *,
    env: str = "production",
    phase: str = "succeeded",
    finished: float | None = None,
    in_progress: bool = False,
) -> ReleaseFacts:
    return ReleaseFacts(
        revision,
        f"orders/{env} r{revision}",
        env,
        revision,
        phase,
        finished if finished is not None else float(revision * 100),
        migrations,
        in_progress,
    )


@pytest.mark.parametrize(
    ("history", "horizon", "held"),
    [
        ([], Horizon(), []),
        ([facts(1, OLD)], Horizon(), [(1, "runs there")]),
        (
            [facts(3, E), facts(2, E), facts(1, OLD)],
            Horizon(1),
            [(3, "runs"), (2, "is a rollback")],
        ),
        (
            [facts(3, E), facts(2, E), facts(1, OLD)],
            Horizon(2),
            [(3, "runs"), (2, "is"), (1, "is")],
        ),
        ([facts(3, E), facts(2, E), facts(1, OLD)], Horizon(0), [(3, "runs")]),
        # r2 stopped running at 300 (when r3 finished); now is 350: within an age of 60s.
        ([facts(3, E), facts(2, OLD), facts(1, OLD)], Horizon(0, 60), [(3, "runs"), (2, "is")]),
        (
            [
                facts(4, E, phase="progressing", in_progress=True),
                facts(3, OLD, phase="rolled_back"),
                facts(2, OLD),
            ],
            Horizon(0),
            [(4, "is rolling out"), (2, "runs")],
        ),
    ],
)
def test_old_code_lives_in_the_running_release_and_the_rollback_targets_within_the_horizon(
    history: list[ReleaseFacts], horizon: Horizon, held: list[tuple[int, str]]
) -> None:
    found = held_releases(history, horizon, now=350.0)
    assert [
        (h.release.revision, h.why[: len(why)]) for h, (_, why) in zip(found, held, strict=True)
    ] == held


def test_a_contract_is_blocked_by_every_release_lacking_its_expand() -> None:
    migrations = read_migrations(SEQUENCE)
    contract = migrations[-1]
    held = held_releases([facts(2, E), facts(1, OLD)], Horizon(1), 1000.0)
    held += held_releases([facts(5, OLD, env="staging")], Horizon(1), 1000.0)
    held += held_releases([facts(7, None, env="dev")], Horizon(1), 1000.0)
    blockers = contract_blockers([contract], migrations, held)
    assert [b.describe() for b in blockers] == [
        "orders/production r1 is a rollback target there (within the rollback horizon): "
        "built before 0002_expand_email",
        "orders/staging r5 runs there: built before 0002_expand_email",
        "orders/dev r7 runs there: built before 0001_create, 0002_expand_email "
        "(it records no migrations)",
    ]
    moved_on = held_releases([facts(3, E), facts(2, E)], Horizon(1), 1000.0)
    assert contract_blockers([contract], migrations, moved_on) == []


@pytest.mark.parametrize(
    ("migrations", "contracted", "undone", "barred"),
    [
        (OLD, [], {}, None),
        (
            OLD,
            [Contracted("0003", ("0002_expand_email",), "orders/production r4")],
            {},
            "ran the contract 0003",
        ),
        (E, [Contracted("0003", ("0002_expand_email",), "orders/production r4")], {}, None),
        (
            None,
            [Contracted("0003", ("0002_expand_email",), "r4")],
            {},
            "built before 0002_expand_email",
        ),
        (E, [], {"0002_expand_email": "alice"}, "was undone by alice"),
        (OLD, [], {"0002_expand_email": "alice"}, None),
    ],
)
def test_a_release_is_barred_once_its_schema_is_gone(
    migrations: frozenset[str] | None,
    contracted: list[Contracted],
    undone: dict[str, str],
    barred: str | None,
) -> None:
    reason = rollback_barrier(migrations, contracted, undone)
    assert (reason is None) if barred is None else (reason is not None and barred in reason)


# --- the rollout's migrate step -----------------------------------------------------------

SPEC = RolloutSpec(
    release_id=2,
    revision=2,
    version="t-new",
    desired=1,
    strategy=StrategySpec(kind="rolling"),
    progress_deadline=30.0,
    triggers=Triggers(),
    stable_version="t-old",
    stable_revision=1,
    stable_desired=1,
    migrate=True,
)
OK = MigrationRun(True, 0, 1.25, "applying 0002\n", "exit 0")
STUCK = MigrationRun(False, 3, 1.5, "ERROR: canceling statement due to lock timeout", "exit 3")


def test_the_migration_runs_once_before_any_instance_starts() -> None:
    status = RolloutStatus(weights={"t-old": 100})
    first = decide(SPEC, status, Observations(), 10.0)
    assert isinstance(first.action, Wait) and first.status.migration == "running"
    assert [e.kind for e in first.events] == ["migration.started"]
    second = decide(SPEC, first.status, Observations(), 10.1)
    assert isinstance(second.action, RunMigration) and second.events == ()
    third = decide(SPEC, first.status, Observations(migration=OK), 12.0)
    assert third.status.migration == "succeeded" and third.status.phase is Phase.PENDING
    assert [(e.kind, e.details["seconds"]) for e in third.events] == [("migration.succeeded", 1.25)]
    fourth = decide(SPEC, third.status, Observations(), 12.1)
    assert fourth.status.phase is Phase.PROGRESSING  # only now does the rollout start
    assert [e.kind for e in fourth.events] == ["rollout.started"]


def test_a_failed_migration_fails_the_release_with_users_where_they_were() -> None:
    running = RolloutStatus(weights={"t-old": 100}, migration="running")
    failed = decide(SPEC, running, Observations(migration=STUCK), 20.0)
    assert failed.status.phase is Phase.FAILED and failed.status.done
    assert failed.status.weights == {"t-old": 100}
    assert failed.status.abort is not None and failed.status.abort.reason == "migration-failed"
    assert [e.kind for e in failed.events] == ["migration.failed", "release.failed"]
    assert "lock timeout" in failed.events[0].details["output"]
    assert "no traffic moved" in failed.status.message


def test_a_release_without_migrate_or_a_rollback_starts_at_once() -> None:
    plain = decide(
        RolloutSpec(**{**SPEC.__dict__, "migrate": False}), RolloutStatus(), Observations(), 1.0
    )
    assert plain.status.phase is Phase.PROGRESSING


def test_a_migration_record_survives_json() -> None:
    status = RolloutStatus(migration="succeeded")
    assert RolloutStatus.from_json(status.to_json()) == status
    assert RolloutSpec.from_json(SPEC.to_json()) == SPEC
    assert isinstance(Migration.from_json(read_migrations(SEQUENCE)[0].to_json()), Migration)
