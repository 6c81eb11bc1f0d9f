"""``gate: migration-safety`` with the real squawk binary and real Alembic rendering.

The pgshop example's first draft of its expand (a required column, a plain index) is refused
with squawk's rule, message and suggested fix at the right file and line; the rewrite passes;
an expand without its undo is refused; an Alembic project is rendered offline and judged the
same way. Everything runs through the pipeline runner, as ``conveyor run`` does.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from conveyor.pipeline import JobResult, PipelineSpec, run_pipeline
from conveyor.pipeline.gates.squawk import find_squawk

from .support import EXAMPLE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        find_squawk(os.environ) is None, reason="needs squawk: pip install squawk-cli"
    ),
]
PATHS = ["services/orders/migrations"]


def gate(root: Path, paths: list[str] = PATHS, allow: list[str] | None = None) -> JobResult:
    job: dict[str, object] = {"gate": "migration-safety", "paths": paths}
    if allow:
        job["allow"] = allow
    spec = PipelineSpec.model_validate({"jobs": {"m": job}})
    result = run_pipeline(spec, root, environ={"PATH": os.environ["PATH"]}, kill_grace=0.5)
    return result.job("m")


def example(tmp_path: Path, *steps: str) -> Path:
    root = tmp_path / "pgshop"
    shutil.copytree(EXAMPLE, root)
    for name in steps:
        shutil.copytree(root / "steps" / name, root / "services/orders", dirs_exist_ok=True)
    return root


def test_the_unsafe_expand_is_refused_with_squawk_s_rule_message_and_fix(tmp_path: Path) -> None:
    job = gate(example(tmp_path, "2-unsafe"))
    assert job.result == "failure"
    assert job.gate is not None
    errors = {
        (f.file.rsplit("/", 1)[-1], f.line, f.detector)
        for f in job.gate.findings
        if f.level == "error"
    }
    assert errors == {
        ("0002_expand_customer_email.sql", 1, "conveyor-expand-contracts"),
        ("0002_expand_customer_email.sql", 5, "adding-required-field"),
        ("0002_expand_customer_email.sql", 6, "require-concurrent-index-creation"),
    }
    required = next(f for f in job.gate.findings if f.detector == "adding-required-field")
    assert "NOT NULL" in required.message
    assert required.help == "Make the field nullable or add a non-VOLATILE DEFAULT"
    assert required.statement == "ALTER TABLE orders ADD COLUMN customer_email text NOT NULL;"
    index = next(f for f in job.gate.findings if f.detector == "require-concurrent-index-creation")
    assert index.help == "Use `concurrently` to avoid blocking writes."
    # Warnings are recorded, and the timeout rules say Conveyor sets the timeouts itself.
    timeout = next(f for f in job.gate.findings if f.detector == "require-lock-timeout")
    assert timeout.level == "warning" and "Conveyor's migrate: step sets" in (timeout.help or "")
    assert job.gate.details["squawk"].startswith("squawk ")
    assert "0002_expand_customer_email.sql:5: adding-required-field" in job.log


def test_the_safe_rewrite_passes_and_the_contract_is_classified(tmp_path: Path) -> None:
    job = gate(example(tmp_path, "2-expand"))
    assert job.result == "success", job.gate
    assert job.gate is not None
    assert [f.level for f in job.gate.findings] == ["warning"] * len(job.gate.findings)
    notes = job.gate.details
    assert notes["class services/orders/migrations/0002_expand_customer_email.sql"] == (
        "expand (declared expand, statements say expand); "
        "undo: services/orders/migrations/0002_expand_customer_email.undo.sql"
    )
    contract = gate(example(tmp_path / "c", "2-expand", "3-contract"))
    assert contract.result == "success"
    assert contract.gate is not None
    drop = next(f for f in contract.gate.findings if f.detector == "ban-drop-column")
    assert drop.level == "warning" and "allowed in a contract" in (drop.help or "")
    assert contract.gate.details[
        "class services/orders/migrations/0003_contract_drop_customer.sql"
    ] == (
        "contract (declared contract, statements say contract); "
        "completes 0002_expand_customer_email"
    )


def test_an_expand_without_its_undo_is_refused(tmp_path: Path) -> None:
    root = example(tmp_path, "2-expand")
    (root / "services/orders/migrations/0002_expand_customer_email.undo.sql").unlink()
    job = gate(root)
    assert job.result == "failure"
    assert job.gate is not None
    [missing] = [f for f in job.gate.findings if f.detector == "conveyor-expand-without-undo"]
    assert missing.file == "services/orders/migrations/0002_expand_customer_email.sql"
    assert missing.help is not None
    assert "0002_expand_customer_email.undo.sql beside it" in missing.help
    excused = gate(root, allow=["services/orders/migrations/0002_*"])
    assert excused.result == "success" and excused.gate is not None and excused.gate.allowed


ALEMBIC_ENV = """
from alembic import context

config = context.config
context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
with context.begin_transaction():
    context.run_migrations()
"""
REVISION = '''"""{doc}"""
{declared}
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down}


def upgrade():
{up}


def downgrade():
{down_body}
'''


def alembic_project(root: Path, second_up: str, second_down: str) -> Path:
    (root / "db/versions").mkdir(parents=True)
    (root / "alembic.ini").write_text(
        "[alembic]\nscript_location = db\nsqlalchemy.url = postgresql+psycopg://render/only\n"
    )
    (root / "db/env.py").write_text(ALEMBIC_ENV)
    (root / "db/script.py.mako").write_text("")
    (root / "db/versions/a1_users.py").write_text(
        REVISION.format(
            doc="users",
            declared="",
            rev="a1",
            down="None",
            up='    op.create_table("users", sa.Column("id", sa.BigInteger(), primary_key=True))',
            down_body='    op.drop_table("users")',
        )
    )
    (root / "db/versions/b2_email.py").write_text(
        REVISION.format(
            doc="email",
            declared="# conveyor: expand",
            rev="b2",
            down='"a1"',
            up=textwrap.indent(second_up, "    "),
            down_body=textwrap.indent(second_down, "    "),
        )
    )
    return root


def test_alembic_revisions_are_rendered_offline_and_judged_as_sql(tmp_path: Path) -> None:
    unsafe = alembic_project(
        tmp_path / "unsafe",
        'op.add_column("users", sa.Column("email", sa.Text(), nullable=False))\n'
        'op.create_index("ix_users_email", "users", ["email"])',
        "pass",
    )
    job = gate(unsafe, ["db"])
    assert job.result == "failure" and job.gate is not None
    found = {(f.file, f.detector) for f in job.gate.findings if f.level == "error"}
    assert found >= {
        ("db/versions/b2_email.py", "adding-required-field"),
        ("db/versions/b2_email.py", "require-concurrent-index-creation"),
        ("db/versions/b2_email.py", "conveyor-expand-contracts"),
    }
    required = next(f for f in job.gate.findings if f.detector == "adding-required-field")
    assert "alembic upgrade --sql" in required.message and required.line == 10  # def upgrade
    assert required.statement == "ALTER TABLE users ADD COLUMN email TEXT NOT NULL;"

    safe = alembic_project(
        tmp_path / "safe",
        'op.add_column("users", sa.Column("email", sa.Text(), nullable=True))\n'
        "with op.get_context().autocommit_block():\n"
        '    op.create_index("ix_users_email", "users", ["email"], postgresql_concurrently=True)',
        "pass",
    )
    job = gate(safe, ["db"])
    assert job.result == "failure" and job.gate is not None  # its downgrade() does nothing
    assert [f.detector for f in job.gate.findings if f.level == "error"] == [
        "conveyor-expand-without-undo"
    ]
    (safe / "db/versions/b2_email.py").write_text(
        (safe / "db/versions/b2_email.py")
        .read_text()
        .replace("    pass", '    op.drop_column("users", "email")')
    )
    job = gate(safe, ["db"])
    assert job.result == "success", job.gate
