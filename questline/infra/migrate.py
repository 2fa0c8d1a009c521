"""Alembic migrations run from code (no alembic.ini needed), and the schema's revision
compared with the newest migration this code ships."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util.exc import CommandError
from sqlalchemy import Connection

import migrations
from questline.config import get_settings
from questline.infra.db import is_missing_schema_error

UPGRADE_HINT = "run `questline db upgrade`"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url or get_settings().sqlalchemy_url)
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply migrations to the configured database (creating the SQLite folder if needed)."""
    settings = get_settings()
    if url is None and settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


@lru_cache
def _scripts() -> ScriptDirectory:
    # The migrations shipped with this code never change while it runs: read them once.
    # Reading scripts needs no database, so no URL is looked up for it.
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    """The newest migration this code ships (what `questline db upgrade` goes to)."""
    head = _scripts().get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    """The database's revision (its alembic_version row); None when never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def database_revision(url: str | None = None) -> str | None:
    """The revision of the configured database (or `url`) on a connection of its own;
    None before the first migration, or while the embedded file does not exist."""
    from questline.infra.db import make_engine

    settings = get_settings()
    if url is None and settings.database_url is None:
        if not (settings.data_dir / "questline.db").exists():
            return None  # looking must not create the file
    engine = make_engine(url or settings.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class SchemaState:
    """Where the database's schema stands against the code's migrations."""

    current: str | None
    head: str
    known: bool  # the current revision is one of this code's migrations

    @property
    def ready(self) -> bool:
        """The schema has every table and column this code uses.

        A revision this code does not know was written by newer code during a rolling
        upgrade; migrations only add, so the older code still finds what it needs."""
        return self.current == self.head or (self.current is not None and not self.known)

    @property
    def problem(self) -> str:
        """What is wrong and what to do about it, for logs and 503 answers; "" if ready."""
        if self.ready:
            return ""
        if self.current is None:
            return f"the database has no schema (no migration applied): {UPGRADE_HINT}"
        return (
            f"the database schema is at migration {self.current}, this code needs "
            f"{self.head}: {UPGRADE_HINT}"
        )


def schema_state(connection: Connection) -> SchemaState:
    """The database's revision against the newest migration; two small catalog reads."""
    current = current_revision(connection)
    known = True
    if current is not None:
        try:
            known = _scripts().get_revision(current) is not None
        except (CommandError, ResolutionError):  # not a revision of ours
            known = False
    return SchemaState(current=current, head=head_revision(), known=known)


def check_schema() -> SchemaState:
    """schema_state() on a connection of the application's engine."""
    from questline.infra.db import get_engine

    with get_engine().connect() as connection:
        return schema_state(connection)


__all__ = ["is_missing_schema_error"]
