"""Quest periods (day, week, month) in a time zone, by wall-clock dates, never by 86,400 s.

A period for the local date D starts at the instant the zone's clocks show D + reset_at.
When that wall time happens twice (clocks fall back) the first occurrence counts; when it
never happens (clocks spring forward over it) the period starts when the clocks land,
at the transition instant. Every instant belongs to exactly one period, and later
instants never fall in earlier periods.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from questline.engine.definitions import USER_ZONE, PeriodKind, QuestDef, Weekday


@dataclass(frozen=True)
class Period:
    """One period of a quest: `key` names it in storage, `index` orders it (next = index + 1).

    For period "none" there is one period: key "", index 0, no bounds.
    `starts_at` and `ends_at` are UTC instants; `ends_at` is the next reset.
    """

    key: str
    index: int
    starts_at: datetime | None
    ends_at: datetime | None


NO_PERIOD = Period(key="", index=0, starts_at=None, ends_at=None)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA zone called `name` ("UTC" included); KeyError if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise KeyError(name) from exc


def quest_zone(quest: QuestDef, user_tz: str) -> ZoneInfo:
    """The zone a quest's periods are counted in: the user's (event's) zone for "user"."""
    return zone(user_tz if quest.timezone == USER_ZONE else quest.timezone)


def quest_period(quest: QuestDef, at: datetime, user_tz: str) -> Period:
    """The period of `quest` that holds the instant `at`, for a user in zone `user_tz`."""
    tz = quest_zone(quest, user_tz)
    return period_of(quest.period, at, tz, quest.reset_at, quest.week_starts_on)


# Pure, so memoized: the quests of a catalog share a few shapes (say, daily at 00:00 in
# the player's zone), and one event is looked up once per shape instead of once per quest.
@lru_cache(maxsize=4096)
def period_of(
    kind: PeriodKind, at: datetime, tz: ZoneInfo, reset_at: time, week_starts_on: Weekday
) -> Period:
    """The period of kind `kind` holding the instant `at` (timezone-aware) in zone `tz`."""
    if kind is PeriodKind.NONE:
        return NO_PERIOD
    at = at.astimezone(UTC)
    wall = at.astimezone(tz).replace(tzinfo=None)
    # The local date the instant belongs to, before DST fix-ups: wall time minus the reset.
    candidate = (wall - timedelta(hours=reset_at.hour, minutes=reset_at.minute)).date()
    first = _first_day(kind, candidate, week_starts_on)
    # Around a DST change the candidate can be one period off (e.g. a second 01:10 after
    # clocks fall back, with a 01:30 reset): step until start <= at < next start.
    starts_at = reset_instant(first, reset_at, tz)
    while at < starts_at:
        first = _step(kind, first, -1)
        starts_at = reset_instant(first, reset_at, tz)
    ends_at = reset_instant(_step(kind, first, 1), reset_at, tz)
    while at >= ends_at:
        first, starts_at = _step(kind, first, 1), ends_at
        ends_at = reset_instant(_step(kind, first, 1), reset_at, tz)
    return Period(_key(kind, first), _index(kind, first), starts_at, ends_at)


def reset_instant(day: date, reset_at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant at which the zone's clocks show `day` `reset_at`.

    Ambiguous (shown twice): the first time. Skipped (clocks jump over it): the instant
    of the jump, i.e. the first instant after the gap.
    """
    # fold=0 explicitly: a `time` that says fold=1 would pick the second reading.
    local = datetime.combine(day, reset_at.replace(fold=0), tzinfo=tz)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant  # fold=0 is the first of two readings when the time is ambiguous
    # In a gap, fold=0 reads the wall time with the offset before the jump and fold=1
    # with the offset after it; the jump lies between the two instants.
    other = local.replace(fold=1).astimezone(UTC)
    return _transition_between(min(instant, other), max(instant, other), tz)


def _transition_between(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The first whole second in (before, after] whose UTC offset is the one at `after`."""
    offset_after = after.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    # Zone transitions happen on whole seconds; bisect on seconds since the epoch.
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(tz).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _first_day(kind: PeriodKind, day: date, week_starts_on: Weekday) -> date:
    if kind is PeriodKind.DAY:
        return day
    if kind is PeriodKind.WEEK:
        return day - timedelta(days=(day.weekday() - week_starts_on.number) % 7)
    return day.replace(day=1)


def _step(kind: PeriodKind, first: date, periods: int) -> date:
    """The first day of the period `periods` periods after (or before) the one at `first`."""
    if kind is PeriodKind.DAY:
        return first + timedelta(days=periods)
    if kind is PeriodKind.WEEK:
        return first + timedelta(weeks=periods)
    months = first.year * 12 + first.month - 1 + periods
    return date(months // 12, months % 12 + 1, 1)


def _key(kind: PeriodKind, first: date) -> str:
    return f"{first.year:04d}-{first.month:02d}" if kind is PeriodKind.MONTH else first.isoformat()


def _index(kind: PeriodKind, first: date) -> int:
    if kind is PeriodKind.DAY:
        return first.toordinal()
    if kind is PeriodKind.WEEK:
        # Week starts are 7 ordinals apart, so consecutive weeks differ by exactly 1.
        return first.toordinal() // 7
    return first.year * 12 + first.month - 1
