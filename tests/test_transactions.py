"""questline.infra.db.run_in_transaction on the real database: a deadlock costs a retry,
not a failed request, and is logged as what it is."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import WalletBalance
from questline.errors import Conflict
from questline.infra import db
from tests import factories as f


def two_users() -> tuple[int, int]:
    """Two users, each with an empty gold wallet row for add_gold to lock and update."""
    with db.transaction() as session:
        users = f.add_user(session).user_id, f.add_user(session).user_id
        session.add_all(WalletBalance(user_id=u, item="gold", balance=0) for u in users)
        return users


def add_gold(session: Session, user_id: int) -> None:
    session.execute(
        text("UPDATE wallets SET balance = balance + 1 WHERE user_id = :u AND item = 'gold'"),
        {"u": user_id},
    )


def gold(session: Session, user_id: int) -> int:
    return session.get_one(WalletBalance, (user_id, "gold")).balance


def test_a_deadlock_is_retried_and_logged_as_a_deadlock(caplog: pytest.LogCaptureFixture) -> None:
    a, b = two_users()
    both_hold_one = threading.Barrier(2, timeout=60)
    results: dict[str, Any] = {}

    def crosswise(first: int, second: int, name: str) -> None:
        attempts = 0

        def work(session: Session) -> int:
            nonlocal attempts
            attempts += 1
            add_gold(session, first)
            if attempts == 1:
                both_hold_one.wait()  # each holds one row and now asks for the other's
            add_gold(session, second)
            return attempts

        try:
            results[name] = db.run_in_transaction(work)
        except Exception as exc:  # asserted on below
            results[name] = exc

    threads = [
        threading.Thread(target=crosswise, args=(a, b, "ab")),
        threading.Thread(target=crosswise, args=(b, a, "ba")),
    ]
    with caplog.at_level(logging.WARNING, logger="questline.infra.db"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)  # a hang detector; PostgreSQL breaks the cycle within a second
    assert not any(t.is_alive() for t in threads)
    assert sorted(results.values()) == [1, 2], results  # one of them ran twice
    with db.transaction() as session:
        assert gold(session, a) == 2
        assert gold(session, b) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("deadlock in ") and "retrying" in m for m in messages), messages
    assert not any("unavailable" in m for m in messages), messages


def test_other_errors_are_not_retried() -> None:
    calls = 0

    def work(session: Session) -> None:
        nonlocal calls
        calls += 1
        session.execute(text("INSERT INTO users (user_id) VALUES (NULL)"))

    with pytest.raises(IntegrityError):
        db.run_in_transaction(work)
    assert calls == 1


def test_kept_errors_commit_their_changes_and_others_roll_back() -> None:
    a, _ = two_users()

    def work(session: Session) -> None:
        add_gold(session, a)
        raise Conflict("changes kept")

    with pytest.raises(Conflict):
        db.run_in_transaction(work, keep=(Conflict,))
    with pytest.raises(Conflict):
        db.run_in_transaction(work)  # not kept: rolled back
    with db.transaction() as session:
        assert gold(session, a) == 1


def test_a_missing_table_is_not_transient_but_a_busy_file_is() -> None:
    # An unmigrated SQLite file raises OperationalError for a missing table: retrying
    # never cures it (a worker must dead-letter, the API must say `db upgrade`).
    import sqlite3

    from sqlalchemy.exc import OperationalError

    missing = OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table: users"))
    busy = OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))
    assert not db.is_transient(missing)
    assert db.is_transient(busy)
