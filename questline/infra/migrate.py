"""Run Alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from questline.config import get_settings


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
