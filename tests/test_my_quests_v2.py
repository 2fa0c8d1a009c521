"""GET /me/quests, v2 fields, over real HTTP: progress of the period holding now in the
player's zone, the next reset, streaks, the bundle, the oldest claimable reward's expiry,
and the statuses locked, upcoming, done_for_period and ended.

Quests are created over HTTP; the player's state rows are written directly, as the worker
writes them (a period row per (quest, period key), the lifetime row with completions and,
for streaks, the qualifying day indexes = date.toordinal()), so that each view is checked
against numbers worked out by hand here, not by the engine."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from models import QuestPeriodProgress, UserQuestProgress, UserReward
from questline.infra import db
from tests import factories as f

KATHMANDU = ZoneInfo("Asia/Kathmandu")  # +05:45 all year: no DST to make a test flaky


@pytest.fixture
def admin() -> dict[str, str]:
    with db.transaction() as session:
        return f.bearer(f.add_user(session, role="admin").user_id, role="admin")


def new_quest(client: httpx.Client, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("reward_id", 1)
    r = client.post("/quests", headers=admin, json=body)
    assert r.status_code == 201, r.text
    quest: dict[str, Any] = r.json()
    return quest


def player(timezone: str = "UTC") -> tuple[int, dict[str, str]]:
    with db.transaction() as session:
        user = f.add_user(session, timezone=timezone)
        return user.user_id, f.bearer(user.user_id)


def store(*rows: Any) -> None:
    with db.transaction() as session:
        session.add_all(rows)


def my_quests(client: httpx.Client, headers: dict[str, str]) -> dict[int, dict[str, Any]]:
    r = client.get("/me/quests", headers=headers)
    assert r.status_code == 200, r.text
    return {q["quest_id"]: q for q in r.json()}


def instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def far_reset(zone: ZoneInfo) -> tuple[time, date, datetime]:
    """A daily reset time about 12 hours from now in `zone` (so no reset falls inside the
    test), the local date of the period holding now, and the next reset instant (UTC)."""
    local = datetime.now(zone)
    reset = time((local + timedelta(hours=12)).hour)
    period_day = (local.replace(tzinfo=None) - timedelta(hours=reset.hour)).date()
    next_reset = datetime.combine(period_day + timedelta(days=1), reset, zone).astimezone(UTC)
    return reset, period_day, next_reset


def test_a_daily_quest_shows_this_period_in_the_player_s_zone(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    reset, today, next_reset = far_reset(KATHMANDU)
    quest = new_quest(
        client,
        admin,
        name="daily-wins",
        trigger={"event": "match_won"},
        measure="sum",
        target=5,
        period="day",
        reset_at=reset.strftime("%H:%M"),
        timezone="user",
    )
    qid = quest["quest_id"]
    user_id, headers = player("Asia/Kathmandu")
    yesterday = (today - timedelta(days=1)).isoformat()
    store(
        UserQuestProgress(user_id=user_id, quest_id=qid, completions=1),
        # Yesterday's period completed once; today's holds 2.5 of 5.
        QuestPeriodProgress(
            user_id=user_id, quest_id=qid, period_key=yesterday, progress=0, completions=1
        ),
        QuestPeriodProgress(
            user_id=user_id,
            quest_id=qid,
            period_key=today.isoformat(),
            progress=Decimal("2.5"),
            completions=0,
        ),
    )

    seen = my_quests(client, headers)[qid]
    assert instant(seen.pop("period_ends_at")) == next_reset
    assert seen == {
        "quest_id": qid,
        "name": "daily-wins",
        "streak": 5,
        "duplication": None,
        "auto_claim": False,
        "reward": {"reward_item": "diamond", "reward_qty": 10},
        "curr_streak": 2.5,
        "completions": 1,
        "claimed": 0,
        "claimable": 0,
        "status": "in_progress",
        "target": 5,
        "measure": "sum",
        "period": "day",
        "progress": 2.5,
        "completions_this_period": 0,
        "best_streak": 0,
        "rewards": [{"item": "diamond", "qty": 10}],
        "expires_at": None,
    }

    # The same quest for a player in UTC: another period, another reset instant, and
    # nothing done in it.
    _, in_utc = player("UTC")
    reset_utc = datetime.combine(datetime.now(UTC).date(), reset, UTC)
    while reset_utc <= datetime.now(UTC):
        reset_utc += timedelta(days=1)
    other = my_quests(client, in_utc)[qid]
    assert instant(other["period_ends_at"]) == reset_utc
    assert (other["progress"], other["completions"], other["status"]) == (0, 0, "not_started")


def test_a_quest_done_for_this_period_says_so(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    reset, today, _ = far_reset(KATHMANDU)
    items = [{"item": "coins", "qty": 5}, {"item": "gem", "qty": 1}]
    bundle = client.post(
        "/rewards", headers=admin, json={"reward_name": "Daily", "items": items}
    ).json()
    quest = new_quest(
        client,
        admin,
        name="daily-login",
        reward_id=bundle["reward_id"],
        auto_claim=True,
        target=1,
        period="day",
        reset_at=reset.strftime("%H:%M"),
        timezone="Asia/Kathmandu",  # the quest's zone, whatever the player's
    )
    qid = quest["quest_id"]
    user_id, headers = player("America/New_York")
    now = datetime.now(UTC)
    store(
        UserQuestProgress(user_id=user_id, quest_id=qid, completions=3),
        QuestPeriodProgress(
            user_id=user_id, quest_id=qid, period_key=today.isoformat(), progress=0, completions=1
        ),
        *[
            UserReward(
                user_id=user_id,
                quest_id=qid,
                completion_no=n,
                reward_item="coins",
                reward_qty=5,
                items=bundle["items"],
                status="claimed",
                earned_at=now,
                claimed_at=now,
            )
            for n in (1, 2, 3)
        ],
    )
    seen = my_quests(client, headers)[qid]
    assert (seen["status"], seen["completions_this_period"], seen["completions"]) == (
        "done_for_period",
        1,
        3,
    )
    assert (seen["claimed"], seen["claimable"]) == (3, 0)
    assert seen["rewards"] == [{"item": "coins", "qty": 5}, {"item": "gem", "qty": 1}]
    assert seen["reward"] == {"reward_item": "coins", "reward_qty": 5}


def test_a_streak_shows_its_live_run_and_its_best(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    streak = new_quest(
        client,
        admin,
        name="login-streak",
        measure="consecutive",
        period="day",
        timezone="UTC",
        target=7,
        duplication=None,
    )
    done_today = new_quest(
        client,
        admin,
        name="streak-today",
        measure="consecutive",
        period="day",
        timezone="UTC",
        target=3,
    )
    user_id, headers = player("Asia/Kathmandu")
    today = datetime.now(UTC).date().toordinal()
    store(
        # A run of 4 days long ago, and a live run of 2 (yesterday and the day before).
        UserQuestProgress(
            user_id=user_id,
            quest_id=streak["quest_id"],
            streak_periods=[today - 10, today - 9, today - 8, today - 7, today - 2, today - 1],
            best_streak=4,
        ),
        # Today counts already: 4 days in a row, one completion (at day 3).
        UserQuestProgress(
            user_id=user_id,
            quest_id=done_today["quest_id"],
            completions=1,
            streak_completions=1,
            streak_periods=[today - 3, today - 2, today - 1, today],
            best_streak=4,
        ),
    )
    quests = my_quests(client, headers)
    live = quests[streak["quest_id"]]
    midnight = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), time(), UTC)
    assert (live["curr_streak"], live["progress"], live["best_streak"]) == (2, 2, 4)
    assert (live["status"], live["completions"]) == ("in_progress", 0)
    assert instant(live["period_ends_at"]) == midnight
    today_done = quests[done_today["quest_id"]]
    assert (today_done["curr_streak"], today_done["best_streak"]) == (4 % 3, 4)
    assert today_done["status"] == "done_for_period"


def test_a_chain_is_locked_until_its_first_step_is_done(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    first = new_quest(client, admin, name="tutorial", target=1, duplication=1)
    second = new_quest(
        client, admin, name="first-ranked", target=1, requires=[first["quest_id"], 1]
    )
    newcomer, new_headers = player()
    veteran, old_headers = player()
    store(
        UserQuestProgress(user_id=veteran, quest_id=first["quest_id"], completions=1),
        UserQuestProgress(user_id=veteran, quest_id=1, completions=2),
    )
    mine = my_quests(client, new_headers)
    assert (mine[first["quest_id"]]["status"], mine[second["quest_id"]]["status"]) == (
        "not_started",
        "locked",
    )
    theirs = my_quests(client, old_headers)
    assert (theirs[first["quest_id"]]["status"], theirs[second["quest_id"]]["status"]) == (
        "completed",
        "not_started",
    )
    # A requirement the catalog no longer shows still locks (and unlocks) the chain.
    client.patch(f"/quests/{first['quest_id']}", headers=admin, json={"active": False})
    assert my_quests(client, new_headers)[second["quest_id"]]["status"] == "locked"
    assert my_quests(client, old_headers)[second["quest_id"]]["status"] == "not_started"
    assert newcomer != veteran


def test_windows_upcoming_ended_and_a_reward_still_to_claim(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    def at(delta: timedelta) -> str:
        return (now + delta).isoformat()

    upcoming = new_quest(
        client,
        admin,
        name="next-season",
        target=1,
        starts_at=at(timedelta(days=1)),
        ends_at=at(timedelta(days=30)),
    )
    ended = new_quest(
        client,
        admin,
        name="last-season",
        target=1,
        starts_at=at(-timedelta(days=30)),
        ends_at=at(-timedelta(hours=1)),
    )
    running = new_quest(client, admin, name="this-season", target=1, ends_at=at(timedelta(days=1)))
    user_id, headers = player()
    lucky, lucky_headers = player()
    store(
        UserQuestProgress(user_id=lucky, quest_id=ended["quest_id"], completions=1),
        UserReward(
            user_id=lucky,
            quest_id=ended["quest_id"],
            completion_no=1,
            reward_item="diamond",
            reward_qty=10,
            items=[{"item": "diamond", "qty": 10}],
            status="not_claimed",
            earned_at=now - timedelta(days=2),
        ),
    )
    mine = my_quests(client, headers)
    assert mine[upcoming["quest_id"]]["status"] == "upcoming"
    assert mine[ended["quest_id"]]["status"] == "ended"
    assert mine[running["quest_id"]]["status"] == "not_started"
    # Ended, but a reward waits: the player must see it.
    assert my_quests(client, lucky_headers)[ended["quest_id"]]["status"] == "claimable"
    assert user_id != lucky


def test_claimable_counts_only_unexpired_rewards_and_shows_the_next_expiry(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    quest = new_quest(client, admin, name="timed", target=1, claim_within_seconds=7200)
    qid = quest["quest_id"]
    user_id, headers = player()
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        (1, "not_claimed", now - timedelta(minutes=1)),  # expired: neither claimable nor next
        (2, "not_claimed", now + timedelta(hours=1)),  # the next a claim takes
        (3, "not_claimed", now + timedelta(hours=2)),
        (4, "claimed", None),
    ]
    store(
        UserQuestProgress(user_id=user_id, quest_id=qid, completions=4),
        *[
            UserReward(
                user_id=user_id,
                quest_id=qid,
                completion_no=n,
                reward_item="diamond",
                reward_qty=10,
                items=[{"item": "diamond", "qty": 10}],
                status=status,
                earned_at=now,
                expires_at=expires_at,
                claimed_at=now if status == "claimed" else None,
            )
            for n, status, expires_at in rows
        ],
    )
    seen = my_quests(client, headers)[qid]
    assert (seen["claimable"], seen["claimed"], seen["status"]) == (2, 1, "claimable")
    assert instant(seen["expires_at"]) == now + timedelta(hours=1)
    # Nothing waiting: no expiry to show.
    assert my_quests(client, headers)[1]["expires_at"] is None
