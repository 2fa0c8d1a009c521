"""A v1 database holding data upgrades to v2 with every number intact (PostgreSQL and SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from questline.infra import migrate
from tests import support

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def v1_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database migrated to v1's last revision."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'v1.db'}"
    else:
        name = f"{support.TEST_DB}_migration"
        admin = sa.create_engine(f"{support.PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        admin.dispose()
        url = f"{support.PG_SERVER}/{name}"
    migrate.upgrade(url, "0002")
    return url


def _stamp(engine: sa.Engine, value: datetime) -> object:
    # v1 stored naive UTC on SQLite and timestamptz on PostgreSQL.
    return value.replace(tzinfo=None) if engine.dialect.name == "sqlite" else value


def _fill_v1(engine: sa.Engine) -> None:
    """Three players as v1 leaves them: alice claimed both rewards of quest 1 and has one
    more sign-in; bob has one claimable reward; carol was banned with a stray balance."""
    t = lambda minutes: _stamp(engine, T0 + timedelta(minutes=minutes))  # noqa: E731
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rewards (reward_id, reward_name, reward_item, reward_qty) "
                "VALUES (2, 'Gold Pile', 'gold', 50)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO quests (quest_id, reward_id, name, description, auto_claim, streak, "
                "duplication, active, created_at, updated_at) VALUES "
                "(2, 2, 'daily-gold', '', true, 1, 5, true, :t, :t)"
            ),
            {"t": t(0)},
        )
        users = [
            (1, "alice", 0, 20, "not_new"),
            (2, "bob", 100, 0, "not_new"),
            (3, "carol", 7, 0, "banned"),
        ]
        for user_id, name, gold, diamond, status in users:
            conn.execute(
                sa.text(
                    "INSERT INTO users (user_id, user_name, password_hash, gold, diamond, status, "
                    "role, created_at) VALUES (:u, :n, 'x', :g, :d, :s, 'player', :t)"
                ),
                {"u": user_id, "n": name, "g": gold, "d": diamond, "s": status, "t": t(0)},
            )
        progress = [(1, 1, 1, 2), (1, 2, 0, 0), (2, 1, 0, 1), (2, 2, 0, 2)]
        for user_id, quest_id, curr_streak, completions in progress:
            conn.execute(
                sa.text(
                    "INSERT INTO user_quest_progress (user_id, quest_id, curr_streak, completions, "
                    "updated_at) VALUES (:u, :q, :c, :n, :t)"
                ),
                {"u": user_id, "q": quest_id, "c": curr_streak, "n": completions, "t": t(1)},
            )
        rewards = [
            (1, 1, 1, "diamond", 10, "claimed"),
            (1, 1, 2, "diamond", 10, "claimed"),
            (2, 1, 1, "diamond", 10, "not_claimed"),
            (2, 2, 1, "gold", 50, "claimed"),
            (2, 2, 2, "gold", 50, "claimed"),
        ]
        for user_id, quest_id, completion_no, item, qty, status in rewards:
            conn.execute(
                sa.text(
                    "INSERT INTO user_rewards (user_id, quest_id, completion_no, reward_item, "
                    "reward_qty, status, earned_at, claimed_at) "
                    "VALUES (:u, :q, :c, :i, :n, :s, :t, :ct)"
                ),
                {
                    "u": user_id,
                    "q": quest_id,
                    "c": completion_no,
                    "i": item,
                    "n": qty,
                    "s": status,
                    "t": t(2),
                    "ct": t(3) if status == "claimed" else None,
                },
            )
        for minutes, processed in ((10, True), (11, False)):
            conn.execute(
                sa.text(
                    "INSERT INTO events (user_id, type, data, created_at, processed_at, attempts) "
                    "VALUES (1, 'sign_in', '{\"via\": \"login\"}', :t, :p, 0)"
                ),
                {"t": t(minutes), "p": t(minutes) if processed else None},
            )
        conn.execute(
            sa.text(
                "INSERT INTO events (user_id, type, quest_id, data, created_at, attempts) "
                "VALUES (1, 'quest_progress', 1, '{\"curr_streak\": 1}', :t, 0)"
            ),
            {"t": t(10)},
        )


def _rows(conn: sa.Connection, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in conn.execute(sa.text(sql)).all()]


def test_v1_data_survives_the_upgrade(v1_database: str) -> None:
    engine = sa.create_engine(v1_database)
    _fill_v1(engine)
    migrate.upgrade(v1_database)
    from models.base import Amount

    with engine.connect() as conn:
        wallets = _rows(conn, "SELECT user_id, item, balance FROM wallets ORDER BY 1, 2")
        assert wallets == [(1, "diamond", 20), (2, "gold", 100), (3, "gold", 7)]
        # The ledger explains every balance: one entry per credited reward, the rest as one
        # v1 remainder (bob's gold beyond his two claimed rewards, carol's stray gold).
        ledger = _rows(
            conn, "SELECT user_id, item, qty, source FROM wallet_ledger ORDER BY 1, 2, 4"
        )
        assert ledger == [
            (1, "diamond", 10, "user_reward:1"),
            (1, "diamond", 10, "user_reward:2"),
            (2, "gold", 50, "user_reward:4"),
            (2, "gold", 50, "user_reward:5"),
            (3, "gold", 7, "v1-balance:3"),
        ]
        periods = conn.execute(
            sa.text(
                "SELECT user_id, quest_id, period_key, progress, completions "
                "FROM user_quest_periods ORDER BY 1, 2"
            )
        ).all()
        as_numbers = [
            (u, q, k, Amount().process_result_value(p, engine.dialect), c)
            for u, q, k, p, c in periods
        ]
        assert as_numbers == [
            (1, 1, "", Decimal(1), 2),
            (1, 2, "", Decimal(0), 0),
            (2, 1, "", Decimal(0), 1),
            (2, 2, "", Decimal(0), 2),
        ]
        lifetime = _rows(
            conn,
            "SELECT user_id, quest_id, completions, best_streak, streak_completions "
            "FROM user_quest_progress ORDER BY 1, 2",
        )
        assert lifetime == [(1, 1, 2, 0, 0), (1, 2, 0, 0, 0), (2, 1, 1, 0, 0), (2, 2, 2, 0, 0)]
        statuses = _rows(
            conn,
            "SELECT user_id, quest_id, completion_no, status FROM user_rewards ORDER BY 1, 2, 3",
        )
        assert statuses == [
            (1, 1, 1, "claimed"),
            (1, 1, 2, "claimed"),
            (2, 1, 1, "not_claimed"),
            (2, 2, 1, "claimed"),
            (2, 2, 2, "claimed"),
        ]
        users = _rows(conn, "SELECT user_id, user_name, status, timezone FROM users ORDER BY 1")
        assert users == [
            (1, "alice", "not_new", "UTC"),
            (2, "bob", "not_new", "UTC"),
            (3, "carol", "banned", "UTC"),
        ]
        quests = _rows(
            conn,
            "SELECT quest_id, streak, duplication, auto_claim, measure, period, reset_at, "
            "timezone, max_per_period, grace_periods FROM quests ORDER BY 1",
        )
        assert [(q[0], q[1], q[2], bool(q[3])) + q[4:] for q in quests] == [
            (1, 3, 2, False, "count", "none", "00:00", "user", None, 0),
            (2, 1, 5, True, "count", "none", "00:00", "user", None, 0),
        ]
        inputs = _rows(
            conn,
            "SELECT event_id, tz, processed_at IS NULL FROM events "
            "WHERE occurred_at IS NOT NULL ORDER BY 1",
        )
        assert [(i[0], i[1], bool(i[2])) for i in inputs] == [(1, "UTC", False), (2, "UTC", True)]
        same_time = conn.execute(
            sa.text("SELECT COUNT(*) FROM events WHERE occurred_at = created_at")
        ).scalar_one()
        assert same_time == 2

    # JSON columns and the case-insensitive name index, read through the models.
    from sqlalchemy.orm import Session

    from models import Quest, Reward, User, UserReward

    with Session(engine) as session:
        assert session.get(Reward, 1).items == [{"item": "diamond", "qty": 10}]  # type: ignore[union-attr]
        assert session.get(Reward, 2).items == [{"item": "gold", "qty": 50}]  # type: ignore[union-attr]
        quest = session.get(Quest, 1)
        assert quest is not None
        assert quest.trigger == {"event": "sign_in"}
        assert quest.requires == []
        reward = session.scalars(sa.select(UserReward).where(UserReward.user_reward_id == 4)).one()
        assert reward.items == [{"item": "gold", "qty": 50}]
        # v1's CHECKs on items and event types are gone; the others hold.
        session.execute(
            sa.text(
                "INSERT INTO rewards (reward_id, reward_name, reward_item, reward_qty, items) "
                "VALUES (3, 'Chest', 'chest_epic', 1, '[{\"item\": \"chest_epic\", \"qty\": 1}]')"
            )
        )
        session.execute(
            sa.text(
                "INSERT INTO events (user_id, type, data, created_at) "
                "VALUES (1, 'match_won', '{}', :t)"
            ),
            {"t": _stamp(engine, T0)},
        )
        with pytest.raises(sa.exc.IntegrityError), session.begin_nested():
            session.execute(sa.text("UPDATE wallets SET balance = -1 WHERE user_id = 1"))
        with pytest.raises(sa.exc.IntegrityError), session.begin_nested():
            session.execute(sa.text("UPDATE quests SET duplication = 0 WHERE quest_id = 1"))
        session.add(User(user_name="ALICE", password_hash="x"))
        with pytest.raises(sa.exc.IntegrityError):
            session.flush()
    engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_models_match_the_migrated_schema(dialect: str, tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from models import Base

    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'head.db'}"
    else:
        url = support.DATABASE_URL  # migrated to head by the session fixture
    migrate.upgrade(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    # SQLite cannot reflect the expression index on lower(user_name); it is there (see above).
    diffs = [d for d in diffs if "uq_users_user_name_lower" not in str(d)]
    assert diffs == []
