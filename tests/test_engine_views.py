"""What a player sees (questline.engine.quest_view, quest_status) at a given `now`.

Expected values are worked out by hand; `now` and the player's zone are arguments.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from questline.engine import (
    Measure,
    PeriodKind,
    PeriodState,
    QuestDef,
    QuestProgressView,
    QuestState,
    QuestStatus,
    RewardItem,
    quest_status,
    quest_view,
)

NOW = datetime(2026, 6, 10, 23, 30, tzinfo=UTC)  # Wednesday; 05:15 Thursday in Kathmandu
TODAY = date(2026, 6, 10).toordinal()
THIS_WEEK = date(2026, 6, 8).toordinal() // 7
SEED = QuestDef(quest_id=1, target=3, duplication=2, rewards=(RewardItem("diamond", 10),))


def quest(**fields: Any) -> QuestDef:
    fields.setdefault("target", 3)
    return QuestDef(quest_id=1, rewards=(RewardItem("gold", 1),), **fields)


def streak(target: int = 7, grace: int = 0, **fields: Any) -> QuestDef:
    return quest(measure=Measure.CONSECUTIVE, period=PeriodKind.DAY, target=target,
                 grace_periods=grace, **fields)


def qualified(*days_ago: int, best: int = 0) -> QuestState:
    """A streak state whose qualifying days are `days_ago` before 2026-06-10."""
    return QuestState(best_streak=best, streak_periods=tuple(sorted(TODAY - d for d in days_ago)))


def view(progress: int | str, done: int, ends: datetime | None, curr: int | str,
         best: int = 0) -> QuestProgressView:
    return QuestProgressView(Decimal(progress), done, ends, Decimal(curr), best)


DAILY = quest(period=PeriodKind.DAY, max_per_period=1)
DAILY_STATE = QuestState(completions=3, periods={
    "2026-06-11": PeriodState(Decimal(2), 1), "2026-06-10": PeriodState(Decimal(1), 0)
})

VIEWS = [
    pytest.param(SEED, QuestState(completions=1, periods={"": PeriodState(Decimal(2), 1)}),
                 "UTC", view(2, 1, None, 2), id="seed-lifetime"),
    pytest.param(SEED, QuestState(), "UTC", view(0, 0, None, 0), id="seed-new"),
    # The player's zone now picks the period: Thursday in Kathmandu, Wednesday in UTC.
    pytest.param(DAILY, DAILY_STATE, "Asia/Kathmandu",
                 view(2, 1, datetime(2026, 6, 11, 18, 15, tzinfo=UTC), 2), id="daily-kathmandu"),
    pytest.param(DAILY, DAILY_STATE, "UTC",
                 view(1, 0, datetime(2026, 6, 11, tzinfo=UTC), 1), id="daily-utc"),
    # A quest with its own zone ignores the player's: 19:30 EDT on Wednesday in New York.
    pytest.param(quest(period=PeriodKind.DAY, timezone="America/New_York"), DAILY_STATE,
                 "Asia/Kathmandu", view(1, 0, datetime(2026, 6, 11, 4, tzinfo=UTC), 1),
                 id="quest-zone"),
    pytest.param(quest(measure=Measure.SUM, period=PeriodKind.WEEK, target=10),
                 QuestState(periods={"2026-06-08": PeriodState(Decimal("7.5"), 2)}), "UTC",
                 view("7.5", 2, datetime(2026, 6, 15, tzinfo=UTC), "7.5"), id="weekly-sum"),
    # Streaks: the latest run counts while the next period could still join it.
    pytest.param(streak(grace=1), qualified(1, 2, 3, best=5), "UTC",
                 view(3, 0, datetime(2026, 6, 11, tzinfo=UTC), 3, 5), id="streak-yesterday"),
    pytest.param(streak(grace=1), qualified(2, 3, 4, best=3), "UTC",
                 view(3, 0, datetime(2026, 6, 11, tzinfo=UTC), 3, 3), id="streak-in-grace"),
    pytest.param(streak(grace=1), qualified(3, 4, 5, best=3), "UTC",
                 view(0, 0, datetime(2026, 6, 11, tzinfo=UTC), 0, 3), id="streak-lapsed-grace"),
    pytest.param(streak(grace=0), qualified(2, 3, 4, best=3), "UTC",
                 view(0, 0, datetime(2026, 6, 11, tzinfo=UTC), 0, 3), id="streak-lapsed"),
    pytest.param(streak(), qualified(0, 1, 2), "UTC",
                 view(3, 0, datetime(2026, 6, 11, tzinfo=UTC), 3), id="streak-today"),
    pytest.param(streak(), qualified(*range(7), best=7), "UTC",
                 view(0, 1, datetime(2026, 6, 11, tzinfo=UTC), 0, 7), id="streak-completed-today"),
    pytest.param(streak(), qualified(*range(8), best=8), "UTC",
                 view(1, 0, datetime(2026, 6, 11, tzinfo=UTC), 1, 8), id="streak-eighth-day"),
    pytest.param(streak(), qualified(*range(1, 8), best=7), "UTC",
                 view(0, 0, datetime(2026, 6, 11, tzinfo=UTC), 0, 7), id="streak-yesterday-7"),
    pytest.param(streak(target=2, grace=1), qualified(0, 2, 3, best=3), "UTC",
                 view(1, 0, datetime(2026, 6, 11, tzinfo=UTC), 1, 3), id="streak-grace-3rd"),
    # Week indexes: the Monday's ordinal // 7 (2026-06-08 is this week's Monday).
    pytest.param(quest(measure=Measure.CONSECUTIVE, period=PeriodKind.WEEK, target=4),
                 QuestState(streak_periods=(THIS_WEEK - 1, THIS_WEEK)), "UTC",
                 view(2, 0, datetime(2026, 6, 15, tzinfo=UTC), 2), id="weekly-streak"),
]


@pytest.mark.parametrize(("q", "state", "user_tz", "expected"), VIEWS)
def test_quest_views(q: QuestDef, state: QuestState, user_tz: str,
                     expected: QuestProgressView) -> None:
    assert quest_view(q, state, now=NOW, user_tz=user_tz) == expected


S = QuestStatus
LATER, EARLIER = NOW + timedelta(days=3), NOW - timedelta(days=3)
DONE = QuestState(completions=2, periods={"": PeriodState(Decimal(0), 2)})
ONE = QuestState(completions=1, periods={"": PeriodState(Decimal(0), 1)})
TODAY_CAPPED = QuestState(completions=1, periods={"2026-06-10": PeriodState(Decimal(0), 1)})
YESTERDAY_CAPPED = QuestState(completions=1, periods={"2026-06-09": PeriodState(Decimal(0), 1)})
TODAY_STARTED = QuestState(periods={"2026-06-10": PeriodState(Decimal(1), 0)})

# (quest, state, rewards claimable, requirements met) -> status at NOW (UTC player)
STATUSES = [
    # v1's four, on the seed quest.
    pytest.param(SEED, QuestState(), 0, True, S.NOT_STARTED, id="v1-not-started"),
    pytest.param(SEED, QuestState(periods={"": PeriodState(Decimal(1), 0)}), 0, True,
                 S.IN_PROGRESS, id="v1-in-progress"),
    pytest.param(SEED, ONE, 1, True, S.CLAIMABLE, id="v1-claimable"),
    pytest.param(SEED, ONE, 0, True, S.IN_PROGRESS, id="v1-claimed-once"),
    pytest.param(SEED, DONE, 1, True, S.CLAIMABLE, id="v1-done-claimable"),
    pytest.param(SEED, DONE, 0, True, S.COMPLETED, id="v1-completed"),
    # Locked, upcoming, ended, and what wins over what.
    pytest.param(quest(requires=(9,)), QuestState(), 0, False, S.LOCKED, id="locked"),
    pytest.param(quest(requires=(9,)), ONE, 1, False, S.CLAIMABLE, id="claimable-beats-locked"),
    pytest.param(quest(starts_at=LATER), QuestState(), 0, True, S.UPCOMING, id="upcoming"),
    pytest.param(quest(starts_at=NOW), QuestState(), 0, True, S.NOT_STARTED, id="just-started"),
    pytest.param(quest(starts_at=LATER, requires=(9,)), QuestState(), 0, False, S.LOCKED,
                 id="locked-beats-upcoming"),
    pytest.param(quest(ends_at=EARLIER), ONE, 0, True, S.ENDED, id="ended"),
    pytest.param(quest(ends_at=NOW), QuestState(), 0, True, S.ENDED, id="ended-at-the-instant"),
    pytest.param(quest(ends_at=LATER), QuestState(), 0, True, S.NOT_STARTED, id="not-ended-yet"),
    pytest.param(quest(ends_at=EARLIER), ONE, 1, True, S.CLAIMABLE, id="claimable-after-end"),
    pytest.param(quest(ends_at=EARLIER, duplication=2), DONE, 0, True, S.COMPLETED,
                 id="completed-beats-ended"),
    pytest.param(quest(ends_at=EARLIER, requires=(9,)), QuestState(), 0, False, S.ENDED,
                 id="ended-beats-locked"),
    # Periods: the cap of this period, not of another.
    pytest.param(DAILY, TODAY_CAPPED, 0, True, S.DONE_FOR_PERIOD, id="done-for-today"),
    pytest.param(DAILY, TODAY_CAPPED, 1, True, S.CLAIMABLE, id="claimable-beats-done"),
    pytest.param(DAILY, YESTERDAY_CAPPED, 0, True, S.NOT_STARTED, id="new-day"),
    pytest.param(DAILY, TODAY_STARTED, 0, True, S.IN_PROGRESS, id="started-today"),
    pytest.param(quest(period=PeriodKind.DAY), TODAY_CAPPED, 0, True, S.IN_PROGRESS,
                 id="no-cap-set-in-the-definition"),
    # Streaks: a qualified period is done for the period; a live run is in progress.
    pytest.param(streak(), qualified(0, 1), 0, True, S.DONE_FOR_PERIOD, id="streak-done-today"),
    pytest.param(streak(), qualified(1, 2), 0, True, S.IN_PROGRESS, id="streak-alive"),
    pytest.param(streak(target=2), qualified(1, 2), 0, True, S.IN_PROGRESS,
                 id="streak-alive-at-multiple"),
    pytest.param(streak(), qualified(2, 3), 0, True, S.NOT_STARTED, id="streak-lapsed"),
    pytest.param(streak(grace=1), qualified(2, 3), 0, True, S.IN_PROGRESS, id="streak-grace"),
    pytest.param(streak(), QuestState(), 0, True, S.NOT_STARTED, id="streak-new"),
]


@pytest.mark.parametrize(("q", "state", "claimable", "unlocked", "expected"), STATUSES)
def test_quest_status(q: QuestDef, state: QuestState, claimable: int, unlocked: bool,
                      expected: QuestStatus) -> None:
    status = quest_status(q, state, now=NOW, user_tz="UTC", claimable=claimable,
                          unlocked=unlocked)
    assert status is expected


def test_done_for_period_follows_the_players_zone() -> None:
    # 23:30 UTC Wednesday is already Thursday 05:15 in Kathmandu: a new day, not done.
    assert quest_status(DAILY, TODAY_CAPPED, now=NOW, user_tz="Asia/Kathmandu", claimable=0,
                        unlocked=True) is S.NOT_STARTED
