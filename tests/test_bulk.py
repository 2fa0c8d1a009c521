"""questline.infra.bulk on real PostgreSQL (raw psycopg2 statements and COPY) and on a
migrated SQLite file (SQLAlchemy Core): the same rows in, the same rows out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Base, Event, QuestPeriodProgress, User, WalletBalance
from models.base import utcnow
from questline.infra import bulk, db, migrate

EVENTS = Base.metadata.tables["events"]
PERIODS = Base.metadata.tables["user_quest_periods"]
WALLETS = Base.metadata.tables["wallets"]

# Strings that COPY's text format and SQL quoting must both carry intact.
AWKWARD = [
    "100%s %d %% %(x)s",
    "tab\there",
    "new\nline",
    "back\\slash",
    'quote"s',
    "it's",
    "\\N",
    "ünï cödé ✓",
    "",
]


@pytest.fixture(params=["postgresql", "sqlite"])
def any_session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    if request.param == "postgresql":
        session = request.getfixturevalue("session")
        yield session
        return
    url = f"sqlite:///{tmp_path / 'bulk.db'}"
    migrate.upgrade(url)
    engine = db.make_engine(url)
    with Session(engine) as s:
        yield s
        s.rollback()
    engine.dispose()


def _user(session: Session, name: str) -> int:
    user = User(user_name=name, password_hash="x")
    session.add(user)
    session.flush()
    return user.user_id


def _quest(session: Session) -> int:
    from models import Quest

    return int(session.scalars(select(Quest.quest_id).order_by(Quest.quest_id)).first() or 0)


def test_appended_history_reads_back_exactly(any_session: Session) -> None:
    user, quest = _user(any_session, "appender"), _quest(any_session)
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "user_id": user,
            "quest_id": quest if n % 2 else None,
            "type": "quest_progress",
            "data": {"text": text, "n": n, "nested": {"list": [1, 2.5, None, True]}},
            "created_at": now + timedelta(microseconds=n),
        }
        for n, text in enumerate(AWKWARD)
    ]
    bulk.append_rows(any_session, EVENTS, rows)
    stored = any_session.execute(
        select(Event.quest_id, Event.type, Event.data, Event.created_at, Event.attempts)
        .where(Event.user_id == user)
        .order_by(Event.event_id)
    ).all()
    assert [tuple(r) for r in stored] == [
        (r["quest_id"], r["type"], r["data"], r["created_at"], 0) for r in rows
    ]


def test_insert_skips_conflicts_and_returns_what_it_inserted(any_session: Session) -> None:
    user = _user(any_session, "inserter")
    first = bulk.insert_rows(
        any_session,
        WALLETS,
        [{"user_id": user, "item": item, "balance": 5} for item in ("gold", "it's\tx%s")],
        conflict=("user_id", "item"),
        returning=("item", "balance"),
    )
    assert sorted(first) == [("gold", 5), ("it's\tx%s", 5)]
    again = bulk.insert_rows(
        any_session,
        WALLETS,
        [
            {"user_id": user, "item": "gold", "balance": 1},
            {"user_id": user, "item": "gem", "balance": 2},
        ],
        conflict=("user_id", "item"),
        returning=("item",),
    )
    assert again == [("gem",)]
    bulk.insert_rows(
        any_session,
        WALLETS,
        [{"user_id": user, "item": "gold", "balance": 10}],
        conflict=("user_id", "item"),
        set_on_conflict={"balance": "wallets.balance + excluded.balance"},
    )
    held = dict(
        any_session.execute(
            select(WalletBalance.item, WalletBalance.balance).where(WalletBalance.user_id == user)
        ).all()
    )
    assert held == {"gold": 15, "gem": 2, "it's\tx%s": 5}


def test_select_and_update_by_key(any_session: Session) -> None:
    user, quest = _user(any_session, "updater"), _quest(any_session)
    now = utcnow()
    keys = ["2026-11-29", "2026-W48", ""]
    bulk.insert_rows(
        any_session,
        PERIODS,
        [
            {
                "user_id": user,
                "quest_id": quest,
                "period_key": key,
                "progress": Decimal("1.5"),
                "completions": 0,
                "updated_at": now,
            }
            for key in keys
        ],
    )
    bulk.update_rows(
        any_session,
        PERIODS,
        ("user_id", "quest_id", "period_key"),
        [
            {
                "user_id": user,
                "quest_id": quest,
                "period_key": "2026-W48",
                "progress": Decimal("0.000001"),
                "completions": 3,
                "updated_at": now,
            }
        ],
    )
    wanted = {(user, quest, "2026-W48"), (user, quest, ""), (user, quest, "missing")}
    found = bulk.select_rows(
        any_session,
        PERIODS,
        ("user_id", "quest_id", "period_key"),
        wanted,
        ("period_key", "progress", "completions"),
        for_update=True,
    )
    assert found == [("", Decimal("1.5"), 0), ("2026-W48", Decimal("0.000001"), 3)]
    p = QuestPeriodProgress
    untouched = any_session.scalar(
        select(p.progress).where(p.user_id == user, p.period_key == "2026-11-29")
    )
    assert untouched == Decimal("1.5")


def test_nothing_to_write_sends_nothing(any_session: Session) -> None:
    assert bulk.insert_rows(any_session, WALLETS, [], returning=("item",)) == []
    bulk.append_rows(any_session, EVENTS, [])
    bulk.update_rows(any_session, PERIODS, ("user_id",), [])
    assert bulk.select_rows(any_session, PERIODS, ("user_id",), [], ("user_id",)) == []


def test_driver_errors_surface_as_sqlalchemy_errors(session: Session) -> None:
    # Callers retry DBAPIErrors (deadlocks, dropped connections) and the APIs answer them
    # 503: an error inside a raw statement must look the same as one from SQLAlchemy.
    from sqlalchemy.exc import DBAPIError, IntegrityError

    user = _user(session, "failer")
    row = {"user_id": user, "item": "gold", "balance": -1}  # CHECK balance >= 0
    with pytest.raises(IntegrityError):
        bulk.insert_rows(session, WALLETS, [row])
    session.rollback()
    with pytest.raises(DBAPIError):
        bulk.append_rows(
            session,
            EVENTS,
            [{"user_id": 1, "type": "x", "data": {}, "created_at": None, "attempts": -1}],
        )


def test_left_out_columns_get_the_models_defaults(any_session: Session) -> None:
    user = _user(any_session, "defaulted")
    bulk.append_rows(any_session, EVENTS, [{"user_id": user, "type": "quest_progress"}])
    data, created_at, attempts = any_session.execute(
        select(Event.data, Event.created_at, Event.attempts).where(Event.user_id == user)
    ).one()
    assert (data, attempts) == ({}, 0)
    assert abs((utcnow() - created_at).total_seconds()) < 3600
