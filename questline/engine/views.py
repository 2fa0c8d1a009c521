"""What a player sees of a quest at a given moment, in their current zone. Pure: `now` is
an argument, so a view is the same whoever computes it and whenever."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from questline.engine.definitions import Measure, PeriodKind, QuestDef
from questline.engine.periods import quest_period
from questline.engine.state import QuestState
from questline.engine.streaks import live_run, position


class QuestStatus(StrEnum):
    """A quest's status in /me/quests (v1's four plus v2's four)."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    CLAIMABLE = "claimable"
    COMPLETED = "completed"
    LOCKED = "locked"
    UPCOMING = "upcoming"
    DONE_FOR_PERIOD = "done_for_period"
    ENDED = "ended"


@dataclass(frozen=True)
class QuestProgressView:
    """The numbers /me/quests shows for one quest.

    `progress`: this period's (count/sum) or curr_streak (consecutive).
    `completions_this_period`: period "none" shows lifetime completions; a consecutive
    quest shows 1 when the current period completed a multiple of target in its run.
    `period_ends_at`: the next reset (UTC), None for period "none".
    `curr_streak`: = progress for count/sum (v1); the live run's length mod target for
    consecutive. `best_streak`: the longest run (consecutive), 0 for count/sum.
    """

    progress: Decimal
    completions_this_period: int
    period_ends_at: datetime | None
    curr_streak: Decimal
    best_streak: int


def quest_view(
    quest: QuestDef, state: QuestState, *, now: datetime, user_tz: str
) -> QuestProgressView:
    """The quest as the player sees it at `now`, counting periods in `user_tz` for quests
    whose zone is "user"."""
    period = quest_period(quest, now, user_tz)
    if quest.measure is not Measure.CONSECUTIVE:
        this_period = state.period(period.key)
        completions = state.completions if quest.period is PeriodKind.NONE else (
            this_period.completions
        )
        return QuestProgressView(
            progress=this_period.progress,
            completions_this_period=completions,
            period_ends_at=period.ends_at,
            curr_streak=this_period.progress,
            best_streak=0,
        )
    run = live_run(state.streak_periods, quest.grace_periods, period.index)
    curr_streak = Decimal(run.length % quest.target if run is not None else 0)
    place = position(state.streak_periods, period.index, quest.grace_periods)
    completed_now = 1 if place > 0 and place % quest.target == 0 else 0
    return QuestProgressView(
        progress=curr_streak,
        completions_this_period=completed_now,
        period_ends_at=period.ends_at,
        curr_streak=curr_streak,
        best_streak=state.best_streak,
    )


def quest_status(
    quest: QuestDef,
    state: QuestState,
    *,
    now: datetime,
    user_tz: str,
    claimable: int,
    unlocked: bool,
) -> QuestStatus:
    """The quest's status at `now`. `claimable` counts rewards waiting (unexpired);
    `unlocked` is `requirements_met(quest, states)`.

    Precedence, first that applies: claimable, completed, ended, locked, upcoming,
    done_for_period, not_started, in_progress. So a reward waiting is never hidden, a
    quest done for good says so even after it ends, and a locked quest says what to do
    before it says when it starts.
    """
    if claimable > 0:
        return QuestStatus.CLAIMABLE
    if quest.duplication is not None and state.completions >= quest.duplication:
        return QuestStatus.COMPLETED
    if quest.ends_at is not None and now >= quest.ends_at:
        return QuestStatus.ENDED
    if not unlocked:
        return QuestStatus.LOCKED
    if quest.starts_at is not None and now < quest.starts_at:
        return QuestStatus.UPCOMING
    view = quest_view(quest, state, now=now, user_tz=user_tz)
    if quest.measure is Measure.CONSECUTIVE:
        period = quest_period(quest, now, user_tz)
        if period.index in state.streak_periods:
            return QuestStatus.DONE_FOR_PERIOD  # today (this week...) already counts
        alive = live_run(state.streak_periods, quest.grace_periods, period.index)
        return QuestStatus.IN_PROGRESS if alive is not None else QuestStatus.NOT_STARTED
    cap = quest.max_per_period
    if quest.period is not PeriodKind.NONE and cap is not None and (
        view.completions_this_period >= cap
    ):
        return QuestStatus.DONE_FOR_PERIOD
    if view.progress == 0 and view.completions_this_period == 0:
        return QuestStatus.NOT_STARTED
    return QuestStatus.IN_PROGRESS

