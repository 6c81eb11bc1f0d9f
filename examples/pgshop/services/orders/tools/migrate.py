"""Applies the service's SQL migrations with psql, each once, in name order.

``up`` applies every ``migrations/NNNN_*.sql`` not yet recorded in ``schema_migrations``;
``undo`` runs the undo file Conveyor names (``CONVEYOR_UNDO_FILE``, for the migration
``CONVEYOR_MIGRATION``) and forgets that migration, so a later ``up`` applies it again.

Each statement runs on its own (psql's autocommit), so ``CREATE INDEX CONCURRENTLY`` works;
the files use ``IF [NOT] EXISTS`` so that one interrupted half way can run again. The
timeouts are not set here: Conveyor puts ``lock_timeout`` and ``statement_timeout`` into the
database URL and PGOPTIONS, and psql honours both. Stdlib only: it runs under any python3.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
TRACK = "CREATE TABLE IF NOT EXISTS schema_migrations (id text PRIMARY KEY, at timestamptz)"


def psql(*args: str) -> str:
    command = ["psql", os.environ["DATABASE_URL"], "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, check=False)
    sys.stdout.write(done.stdout if "-f" in args else "")
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        sys.exit(done.returncode)
    return done.stdout


def up() -> None:
    psql("-c", TRACK)
    applied = set(psql("-c", "SELECT id FROM schema_migrations").split())
    files = sorted(
        p
        for p in (HERE / "migrations").glob("*.sql")
        if not p.name.endswith((".undo.sql", ".down.sql"))
    )
    for path in files:
        name = path.name.removesuffix(".sql")
        if name in applied:
            continue
        print(f"applying {name}", flush=True)
        psql("-f", str(path))
        psql("-c", f"INSERT INTO schema_migrations VALUES ('{name}', now())")
    print(f"schema at {files[-1].stem if files else 'nothing'}")


def undo() -> None:
    name, undo_file = os.environ["CONVEYOR_MIGRATION"], os.environ["CONVEYOR_UNDO_FILE"]
    print(f"undoing {name} with {undo_file}", flush=True)
    psql("-f", str(HERE / undo_file))
    psql("-c", TRACK)
    psql("-c", f"DELETE FROM schema_migrations WHERE id = '{name}'")


if __name__ == "__main__":
    {"up": up, "undo": undo}[sys.argv[1] if len(sys.argv) > 1 else "up"]()
