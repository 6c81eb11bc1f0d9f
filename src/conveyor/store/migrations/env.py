"""Alembic environment for the state store.

Conveyor runs migrations itself (``conveyor.store.engine.migrate``) and hands Alembic an open
connection inside a transaction it already holds, so the upgrade commits or fails as one unit
with the lock that keeps concurrent openers out. For developers running ``alembic`` by hand
(e.g. to write a new revision), the URL comes from ``-x url=...`` or ``$CONVEYOR_DATABASE_URL``.

No schema is named anywhere: the connection's ``search_path`` decides where tables live.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from conveyor.store.engine import create_engine
from conveyor.store.tables import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "CONVEYOR_DATABASE_URL", ""
    )
    if not url:
        raise SystemExit("pass -x url=<database URL> or set CONVEYOR_DATABASE_URL")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


_main()
