"""`questline recompute` on PostgreSQL: progress rebuilt from applied inputs with today's
definitions, differences printed, --apply restores state and grants missing rewards,
never revokes one."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, select

from models import Event, LedgerEntry, UserQuestProgress, UserReward
from questline.commands import cli
from questline.infra import db
from questline.quests.rules import apply_inputs
from questline.wallet.repository import balances
from tests import factories as f
from tests import support
from tests.factories import GameEvent

QUESTLINE = str(Path(sys.executable).with_name("questline"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def day(d: int) -> int:
    return date(2026, 3, d).toordinal()


class Catalog:
    """Three quests of different shapes, created directly in the catalog tables."""

    def __init__(self) -> None:
        with db.transaction() as s:
            # Two wins complete it, again and again.
            self.count = f.add_v2_quest(s, target=2, trigger={"event": "match_won"}).quest_id
            # Two wins a day, once a day.
            self.daily = f.add_v2_quest(
                s,
                target=2,
                trigger={"event": "match_won"},
                period="day",
                timezone="UTC",
                max_per_period=1,
            ).quest_id
            # Logins on two days in a row, paid at once with a bundle.
            self.streak = f.add_v2_quest(
                s,
                target=2,
                trigger={"event": "daily_login"},
                measure="consecutive",
                period="day",
                timezone="UTC",
                auto_claim=True,
                items=(("gem", 1), ("gold", 2)),
            ).quest_id


def play(user_id: int, events: list[GameEvent]) -> None:
    """Store the events and apply them, as a worker would."""
    with db.transaction() as s:
        ids = f.add_events(s, user_id, events)
    with db.transaction() as s:
        apply_inputs(s, event_ids=ids, wait=True)
    with db.transaction() as s:
        assert s.scalar(
            select(sa.func.count()).where(Event.event_id.in_(ids), Event.processed_at.is_(None))
        ) == 0


def new_user() -> int:
    with db.transaction() as s:
        return f.add_user(s).user_id


def recompute(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main(["recompute", *args])
    return code, capsys.readouterr().out.splitlines()


WINS = [
    GameEvent("match_won", at("2026-03-02T09:00")),
    GameEvent("match_won", at("2026-03-02T10:00")),  # daily: done for 03-02
    GameEvent("match_won", at("2026-03-02T11:00")),  # daily: over the cap
    GameEvent("match_won", at("2026-03-03T09:00")),
    GameEvent("match_won", at("2026-03-03T10:00")),  # daily: done for 03-03
]
LOGINS = [GameEvent("daily_login", at(f"2026-03-0{d}T08:00")) for d in (2, 3, 4)]


def test_recompute_shows_a_corrupted_state_restores_it_and_grants_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    quests = Catalog()
    user = new_user()
    play(user, WINS + LOGINS)
    with db.transaction() as s:
        assert f.progress(s, user, quests.count) == (1, 2)
        assert f.periods(s, user, quests.daily) == {"2026-03-02": (0, 1), "2026-03-03": (0, 1)}
        assert balances(s, user) == {"gold": 2, "diamond": 0, "gem": 1}
    assert recompute(capsys, "--user", str(user)) == (0, ["no differences (1 user checked)"])

    # Corruption: a lost completion and its reward, a lost period, a lost streak day and
    # the streak's reward with its credit.
    with db.transaction() as s:
        s.execute(
            sa.text(
                "UPDATE user_quest_progress SET completions = 1 "
                "WHERE user_id = :u AND quest_id = :q"
            ),
            {"u": user, "q": quests.count},
        )
        s.execute(
            sa.text(
                "UPDATE user_quest_periods SET progress = 0 "
                "WHERE user_id = :u AND quest_id = :q"
            ),
            {"u": user, "q": quests.count},
        )
        s.execute(
            delete(UserReward).where(
                UserReward.user_id == user,
                UserReward.quest_id == quests.count,
                UserReward.completion_no == 2,
            )
        )
        s.execute(
            sa.text(
                "DELETE FROM user_quest_periods "
                "WHERE user_id = :u AND quest_id = :q AND period_key = '2026-03-03'"
            ),
            {"u": user, "q": quests.daily},
        )
        row = s.get_one(UserQuestProgress, (user, quests.streak))
        row.streak_periods, row.best_streak = [day(2), day(3)], 2
        s.execute(delete(UserReward).where(UserReward.quest_id == quests.streak))
        s.execute(delete(LedgerEntry).where(LedgerEntry.user_id == user))
        s.execute(sa.text("UPDATE wallets SET balance = 0 WHERE user_id = :u"), {"u": user})

    expected = [
        f"user {user} quest {quests.count}: completions 1 -> 2; "
        "period 'none': progress 0 -> 1; rewards to grant: completion 2",
        f"user {user} quest {quests.daily}: period '2026-03-03': completions 0 -> 1",
        f"user {user} quest {quests.streak}: streak periods +2026-03-04; best streak 2 -> 3; "
        "rewards to grant: completion 1",
        "3 quest state(s) differ (1 user checked); --apply writes them",
    ]
    assert recompute(capsys, "--user", str(user)) == (0, expected)
    with db.transaction() as s:  # a dry run changes nothing
        assert f.progress(s, user, quests.count) == (0, 1)
        assert len(f.rewards(s, user, quests.count)) == 1

    code, out = recompute(capsys, "--user", str(user), "--apply")
    assert (code, out[:3]) == (0, expected[:3])
    assert out[3] == "3 quest state(s) rewritten, 2 reward(s) granted (1 user checked)"

    with db.transaction() as s:
        assert f.progress(s, user, quests.count) == (1, 2)
        count_rewards = f.rewards(s, user, quests.count)
        assert [(r.completion_no, r.status) for r in count_rewards] == [
            (1, "not_claimed"),
            (2, "not_claimed"),
        ]
        assert f.periods(s, user, quests.daily) == {"2026-03-02": (0, 1), "2026-03-03": (0, 1)}
        streak = s.get_one(UserQuestProgress, (user, quests.streak), populate_existing=True)
        assert (streak.streak_periods, streak.best_streak, streak.completions) == (
            [day(2), day(3), day(4)],
            3,
            1,
        )
        [streak_reward] = f.rewards(s, user, quests.streak)
        assert streak_reward.status == "claimed"
        assert balances(s, user) == {"gold": 2, "diamond": 0, "gem": 1}
        sources = set(s.scalars(select(LedgerEntry.source).where(LedgerEntry.user_id == user)))
        assert sources == {f"user_reward:{streak_reward.user_reward_id}"}
        granted = [e for e in f.events(s, user) if e.data.get("recomputed")]
        assert sorted((e.type, e.quest_id) for e in granted) == sorted(
            [
                ("quest_completed", quests.count),
                ("reward_earned", quests.count),
                ("quest_completed", quests.streak),
                ("reward_earned", quests.streak),
                ("reward_claimed", quests.streak),
            ]
        )

    assert recompute(capsys, "--user", str(user)) == (0, ["no differences (1 user checked)"])
    assert recompute(capsys, "--user", str(user), "--apply") == (
        0,
        ["no differences (1 user checked)"],
    )


def test_recompute_never_revokes_and_later_completions_go_on_numbering(
    capsys: pytest.CaptureFixture[str],
) -> None:
    quests = Catalog()
    user, other = new_user(), new_user()
    play(user, WINS[:2])  # one completion of the count quest
    play(other, WINS)
    # Rewards an older definition granted: completions 1..3 are held.
    with db.transaction() as s:
        s.execute(
            sa.text(
                "UPDATE user_quest_progress SET completions = 3 "
                "WHERE user_id = :u AND quest_id = :q"
            ),
            {"u": user, "q": quests.count},
        )
        for number in (2, 3):
            s.add(
                UserReward(
                    user_id=user,
                    quest_id=quests.count,
                    completion_no=number,
                    reward_item="gold",
                    reward_qty=5,
                    items=[{"item": "gold", "qty": 5}],
                    status="not_claimed",
                )
            )

    kept = (
        f"user {user} quest {quests.count}: history earns 1 completions, rewards are held "
        "up to 3: kept (rewards are never revoked)"
    )
    code, out = recompute(capsys, "--quest", str(quests.count), "--apply")
    summary = "1 quest state(s) rewritten, 0 reward(s) granted (2 users checked)"
    assert (code, out) == (0, [kept, summary])
    with db.transaction() as s:
        assert f.progress(s, user, quests.count) == (0, 3)
        assert [r.completion_no for r in f.rewards(s, user, quests.count)] == [1, 2, 3]

    play(user, WINS[3:])  # two more wins complete it a 4th time, not a 2nd
    with db.transaction() as s:
        assert [r.completion_no for r in f.rewards(s, user, quests.count)] == [1, 2, 3, 4]
        assert f.progress(s, user, quests.count) == (0, 4)


def test_recompute_refuses_unknown_users_and_quests(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli.main(["recompute", "--user", "999999"]) == 2
    assert "user 999999 does not exist" in capsys.readouterr().err
    assert cli.main(["recompute", "--quest", "999999"]) == 2
    assert "quest 999999 is not an active quest" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["recompute", "--user", "1", "--all"])  # one scope at a time


def test_the_recompute_command_runs_as_installed() -> None:
    quests = Catalog()
    user = new_user()
    play(user, LOGINS[:2])
    with db.transaction() as s:
        s.execute(
            sa.text("UPDATE user_quest_progress SET best_streak = 0 WHERE user_id = :u"),
            {"u": user},
        )
    done = subprocess.run(
        [QUESTLINE, "recompute", "--all"],
        env=support.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"user {user} quest {quests.streak}: best streak 0 -> 2",
        "1 quest state(s) differ (1 user checked); --apply writes them",
    ]
