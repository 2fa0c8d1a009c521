"""The `questline` command as an operator runs it: a real process, no terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.base import utcnow
from questline.infra import db
from questline.quests import repository
from tests import factories as f
from tests import support
from tests.test_operations import head_revision

QUESTLINE = str(Path(sys.executable).parent / "questline")


def questline(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command with no terminal: standard input closed, output captured."""
    environment = support.child_env(**env)
    environment.pop("QUESTLINE_ADMIN_PASSWORD", None)
    return subprocess.run(
        [QUESTLINE, *args],
        env=environment,
        cwd=support.ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_create_admin_without_a_terminal_or_password_says_what_to_set() -> None:
    done = questline("create-admin", "boss")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "QUESTLINE_ADMIN_PASSWORD" in lines[0]
    from questline.users.repository import get_by_name

    with db.transaction() as session:
        assert get_by_name(session, "boss") is None


def test_create_admin_help_names_the_password_variable() -> None:
    done = questline("create-admin", "--help")
    assert done.returncode == 0
    assert "QUESTLINE_ADMIN_PASSWORD" in done.stdout


def test_serve_help_shows_what_each_option_does_and_its_default() -> None:
    done = questline("serve", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "(default: 127.0.0.1)" in text
    assert "(default: 8000)" in text
    assert "address to listen on" in text


def test_version() -> None:
    done = questline("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"questline {version('questline')}"


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"{support.TEST_DB}_cli"
    admin = sa.create_engine(f"{support.PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield f"{support.PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_db_upgrade_says_what_it_did(empty_database: str) -> None:
    head = head_revision()
    first = questline("db", "upgrade", QUESTLINE_DATABASE_URL=empty_database)
    assert first.returncode == 0, first.stderr
    assert f"upgraded the database from an empty schema to {head}" in first.stdout
    assert "already" not in first.stdout

    again = questline("db", "upgrade", QUESTLINE_DATABASE_URL=empty_database)
    assert again.returncode == 0, again.stderr
    assert f"already at the latest migration ({head})" in again.stdout
    assert "upgraded" not in again.stdout


def test_replay_tells_an_unknown_id_from_a_processed_sign_in() -> None:
    unknown = questline("replay", "99999")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "no sign-in or event 99999"

    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        [sign_in_id] = f.add_sign_ins(session, user_id)
        f.keep_from_sweeper(session, [sign_in_id])
        repository.mark_processed(session, [sign_in_id], now=utcnow())
    processed = questline("replay", str(sign_in_id))
    assert processed.returncode == 1
    assert f"sign-in {sign_in_id} is already processed" in processed.stderr


def test_events_dead_lists_dead_letters_alone() -> None:
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        dead, pending = f.add_sign_ins(session, user_id, 2)
        f.keep_from_sweeper(session, [dead, pending])
        repository.record_failure(
            session, [dead], error="RuntimeError: poison", max_attempts=1, now=utcnow()
        )

    listed = questline("events", "--dead")
    assert listed.returncode == 0, listed.stderr
    ids = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert ids == [str(dead)]
    assert "RuntimeError: poison" in listed.stdout

    as_json = questline("events", "--dead", "--json")
    assert [r["sign_in_id"] for r in json.loads(as_json.stdout)] == [dead]
    everything = questline("events", "--json")
    assert {r["sign_in_id"] for r in json.loads(everything.stdout)} == {dead, pending}
