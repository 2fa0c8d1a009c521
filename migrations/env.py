"""Alembic environment: the database comes from QUESTLINE_DATABASE_URL (or the embedded file)."""

from __future__ import annotations

from alembic import context

from models import Base
from questline.infra.db import make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = make_engine(url) if url else None
    assert engine is not None, "sqlalchemy.url is not set"
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection: object) -> None:
    if connection.dialect.name == "sqlite":  # type: ignore[attr-defined]
        # Rebuilding a table that others reference (batch mode) needs foreign keys off;
        # the pragma only takes effect outside a transaction, so it goes to the driver
        # before Alembic begins one. The engine is disposed after the migration.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[attr-defined]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # type: ignore[attr-defined]
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
