"""The wallet repository on real PostgreSQL: credits by source key, never twice."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import LedgerEntry, User
from models.base import utcnow
from questline.wallet import repository as wallet
from questline.wallet.repository import Credit


@pytest.fixture
def user_id(session: Session) -> int:
    user = User(user_name="walleter", password_hash="x")
    session.add(user)
    session.flush()
    return user.user_id


def test_a_new_user_shows_gold_and_diamond_at_zero(session: Session, user_id: int) -> None:
    assert wallet.balances(session, user_id) == {"gold": 0, "diamond": 0}


def test_credits_add_up_per_item(session: Session, user_id: int) -> None:
    applied = wallet.credit(
        session,
        [
            Credit(user_id, "gold", 100, "user_reward:1"),
            Credit(user_id, "chest_epic", 1, "user_reward:1"),
            Credit(user_id, "gold", 5, "user_reward:2"),
        ],
        now=utcnow(),
    )
    assert len(applied) == 3
    assert wallet.balances(session, user_id) == {"gold": 105, "diamond": 0, "chest_epic": 1}


def test_a_source_is_credited_once_however_often_it_is_applied(
    session: Session, user_id: int
) -> None:
    credit = Credit(user_id, "diamond", 10, "user_reward:7")
    assert wallet.credit(session, [credit], now=utcnow()) == [credit]
    assert wallet.credit(session, [credit, credit], now=utcnow()) == []
    assert wallet.balances(session, user_id)["diamond"] == 10
    entries = session.scalar(select(func.count()).select_from(LedgerEntry))
    assert entries == 1


def test_a_balance_cannot_go_below_zero(session: Session, user_id: int) -> None:
    wallet.credit(session, [Credit(user_id, "gold", 3, "user_reward:1")], now=utcnow())
    with pytest.raises(IntegrityError):
        session.execute(text("UPDATE wallets SET balance = balance - 4 WHERE item = 'gold'"))


def test_balances_of_several_users(session: Session, user_id: int) -> None:
    other = User(user_name="other", password_hash="x")
    session.add(other)
    session.flush()
    wallet.credit(session, [Credit(other.user_id, "coins", 2, "grant:1")], now=utcnow())
    assert wallet.balances_of(session, [user_id, other.user_id]) == {
        user_id: {"gold": 0, "diamond": 0},
        other.user_id: {"gold": 0, "diamond": 0, "coins": 2},
    }
