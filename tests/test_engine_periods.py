"""Quest periods in time zones (questline.engine.periods), no database.

Every expected value below was worked out by hand from the zone rules:
- America/New_York: EST -05:00, EDT -04:00. 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC);
  2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC).
- Europe/London: GMT +00:00, BST +01:00. 2026-03-29 01:00 GMT -> 02:00 BST (01:00 UTC);
  2026-10-25 02:00 BST -> 01:00 GMT (01:00 UTC).
- Australia/Lord_Howe: +10:30 standard, +11:00 summer (a 30-minute shift).
  2026-04-05 02:00 +11 -> 01:30 +10:30 (04-04 15:00 UTC);
  2026-10-04 02:00 +10:30 -> 02:30 +11 (10-03 15:30 UTC).
- Asia/Kathmandu: +05:45 all year.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from questline.engine import PeriodKind, Weekday, period_of, reset_instant, zone

DAY, WEEK, MONTH, NONE = PeriodKind.DAY, PeriodKind.WEEK, PeriodKind.MONTH, PeriodKind.NONE
NY, LONDON, LORD_HOWE, KATHMANDU = (
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
)
MON, WED, SUN = Weekday.MONDAY, Weekday.WEDNESDAY, Weekday.SUNDAY
US = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
        ) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# (zone, kind, reset_at, week starts on, event instant) -> (key, starts_at, ends_at)
CASES = [
    # New York, reset 00:00: the spring-forward day lasts 23 h, the fall-back day 25 h.
    pytest.param(NY, DAY, "00:00", MON, utc(2026, 3, 8, 12),
                 "2026-03-08", utc(2026, 3, 8, 5), utc(2026, 3, 9, 4), id="ny-spring-day"),
    pytest.param(NY, DAY, "00:00", MON, utc(2026, 3, 8, 5) - US,
                 "2026-03-07", utc(2026, 3, 7, 5), utc(2026, 3, 8, 5), id="ny-spring-1us-before"),
    pytest.param(NY, DAY, "00:00", MON, utc(2026, 3, 8, 5),
                 "2026-03-08", utc(2026, 3, 8, 5), utc(2026, 3, 9, 4), id="ny-spring-at-reset"),
    pytest.param(NY, DAY, "00:00", MON, utc(2026, 11, 1, 5, 30),
                 "2026-11-01", utc(2026, 11, 1, 4), utc(2026, 11, 2, 5), id="ny-fall-day"),
    pytest.param(NY, DAY, "00:00", MON, utc(2026, 11, 2, 5) - US,
                 "2026-11-01", utc(2026, 11, 1, 4), utc(2026, 11, 2, 5), id="ny-fall-last-us"),
    pytest.param(NY, DAY, "00:00", MON, utc(2026, 11, 2, 5),
                 "2026-11-02", utc(2026, 11, 2, 5), utc(2026, 11, 3, 5), id="ny-fall-next-day"),
    # New York, reset 02:30: on 2026-03-08 02:30 never happens; the day starts at 03:00 EDT.
    pytest.param(NY, DAY, "02:30", MON, utc(2026, 3, 8, 7) - US,
                 "2026-03-07", utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), id="ny-gap-before"),
    pytest.param(NY, DAY, "02:30", MON, utc(2026, 3, 8, 7),
                 "2026-03-08", utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30), id="ny-gap-reset"),
    pytest.param(NY, DAY, "02:30", MON, utc(2026, 11, 1, 7, 29),
                 "2026-10-31", utc(2026, 10, 31, 6, 30), utc(2026, 11, 1, 7, 30),
                 id="ny-0230-fall-25h"),
    pytest.param(NY, DAY, "02:30", MON, utc(2026, 11, 1, 7, 30),
                 "2026-11-01", utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30),
                 id="ny-0230-fall-after"),
    # New York, reset 01:30: on 2026-11-01 01:30 happens twice; the first (EDT) counts.
    pytest.param(NY, DAY, "01:30", MON, utc(2026, 11, 1, 5, 20),  # 01:20 EDT
                 "2026-10-31", utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30),
                 id="ny-ambiguous-before-first"),
    pytest.param(NY, DAY, "01:30", MON, utc(2026, 11, 1, 5, 30),  # 01:30 EDT
                 "2026-11-01", utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30),
                 id="ny-ambiguous-first"),
    pytest.param(NY, DAY, "01:30", MON, utc(2026, 11, 1, 6, 10),  # 01:10 EST, second pass
                 "2026-11-01", utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30),
                 id="ny-ambiguous-second-pass-before-wall-reset"),
    pytest.param(NY, DAY, "01:30", MON, utc(2026, 11, 1, 6, 40),  # 01:40 EST
                 "2026-11-01", utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30),
                 id="ny-ambiguous-second-pass-after"),
    # London.
    pytest.param(LONDON, DAY, "00:00", MON, utc(2026, 3, 29, 0, 30),
                 "2026-03-29", utc(2026, 3, 29), utc(2026, 3, 29, 23), id="london-spring-23h"),
    pytest.param(LONDON, DAY, "00:00", MON, utc(2026, 3, 29, 23),  # 00:00 BST
                 "2026-03-30", utc(2026, 3, 29, 23), utc(2026, 3, 30, 23), id="london-after"),
    pytest.param(LONDON, DAY, "00:00", MON, utc(2026, 10, 25, 0, 30),
                 "2026-10-25", utc(2026, 10, 24, 23), utc(2026, 10, 26), id="london-fall-25h"),
    pytest.param(LONDON, DAY, "00:00", MON, utc(2026, 10, 24, 23) - US,
                 "2026-10-24", utc(2026, 10, 23, 23), utc(2026, 10, 24, 23),
                 id="london-fall-eve"),
    pytest.param(LONDON, DAY, "01:30", MON, utc(2026, 3, 29, 1),  # 01:30 GMT never happens
                 "2026-03-29", utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30),
                 id="london-gap-reset"),
    pytest.param(LONDON, DAY, "01:30", MON, utc(2026, 3, 29, 1) - US,
                 "2026-03-28", utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1),
                 id="london-gap-before"),
    # Lord Howe: 30-minute shifts.
    pytest.param(LORD_HOWE, DAY, "00:00", MON, utc(2026, 4, 5, 12),
                 "2026-04-05", utc(2026, 4, 4, 13), utc(2026, 4, 5, 13, 30), id="lh-april-24h30"),
    pytest.param(LORD_HOWE, DAY, "00:00", MON, utc(2026, 4, 4, 13) - US,
                 "2026-04-04", utc(2026, 4, 3, 13), utc(2026, 4, 4, 13), id="lh-april-eve"),
    pytest.param(LORD_HOWE, DAY, "00:00", MON, utc(2026, 10, 4, 10),
                 "2026-10-04", utc(2026, 10, 3, 13, 30), utc(2026, 10, 4, 13), id="lh-oct-23h30"),
    pytest.param(LORD_HOWE, DAY, "02:15", MON, utc(2026, 10, 3, 15, 30),  # 02:15 skipped
                 "2026-10-04", utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15),
                 id="lh-gap-reset"),
    pytest.param(LORD_HOWE, DAY, "02:15", MON, utc(2026, 10, 3, 15, 30) - US,
                 "2026-10-03", utc(2026, 10, 2, 15, 45), utc(2026, 10, 3, 15, 30),
                 id="lh-gap-before"),
    pytest.param(LORD_HOWE, DAY, "01:45", MON, utc(2026, 4, 4, 14, 45),  # 01:45 +11, first
                 "2026-04-05", utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15),
                 id="lh-ambiguous-first"),
    pytest.param(LORD_HOWE, DAY, "01:45", MON, utc(2026, 4, 4, 15, 5),  # 01:35 +10:30
                 "2026-04-05", utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15),
                 id="lh-ambiguous-second-pass"),
    pytest.param(LORD_HOWE, DAY, "01:45", MON, utc(2026, 4, 4, 14, 45) - US,
                 "2026-04-04", utc(2026, 4, 3, 14, 45), utc(2026, 4, 4, 14, 45),
                 id="lh-ambiguous-before"),
    # Kathmandu, +05:45: 04:00 local is 22:15 UTC the day before.
    pytest.param(KATHMANDU, DAY, "04:00", MON, utc(2026, 6, 10, 22, 15),
                 "2026-06-11", utc(2026, 6, 10, 22, 15), utc(2026, 6, 11, 22, 15),
                 id="ktm-at-reset"),
    pytest.param(KATHMANDU, DAY, "04:00", MON, utc(2026, 6, 10, 22, 15) - US,
                 "2026-06-10", utc(2026, 6, 9, 22, 15), utc(2026, 6, 10, 22, 15),
                 id="ktm-1us-before"),
    # Weeks. 2026-03-08 is a Sunday, 2026-03-02 a Monday, 2026-03-04 and -11 Wednesdays.
    pytest.param("UTC", WEEK, "00:00", MON, utc(2026, 3, 8, 12),
                 "2026-03-02", utc(2026, 3, 2), utc(2026, 3, 9), id="week-monday"),
    pytest.param("UTC", WEEK, "00:00", SUN, utc(2026, 3, 8, 12),
                 "2026-03-08", utc(2026, 3, 8), utc(2026, 3, 15), id="week-sunday"),
    pytest.param("UTC", WEEK, "00:00", SUN, utc(2026, 3, 8) - US,
                 "2026-03-01", utc(2026, 3, 1), utc(2026, 3, 8), id="week-sunday-eve"),
    pytest.param("UTC", WEEK, "06:00", WED, utc(2026, 3, 11, 6) - US,
                 "2026-03-04", utc(2026, 3, 4, 6), utc(2026, 3, 11, 6), id="week-wed-before"),
    pytest.param("UTC", WEEK, "06:00", WED, utc(2026, 3, 11, 6),
                 "2026-03-11", utc(2026, 3, 11, 6), utc(2026, 3, 18, 6), id="week-wed-reset"),
    pytest.param(NY, WEEK, "00:00", MON, utc(2026, 3, 8, 12),
                 "2026-03-02", utc(2026, 3, 2, 5), utc(2026, 3, 9, 4), id="week-ny-167h"),
    pytest.param(KATHMANDU, WEEK, "04:00", MON, utc(2026, 3, 8, 21, 15),  # Mon 03:00 local
                 "2026-03-02", utc(2026, 3, 1, 22, 15), utc(2026, 3, 8, 22, 15),
                 id="week-ktm-monday-before-reset"),
    # Months.
    pytest.param("UTC", MONTH, "00:00", MON, utc(2026, 1, 31, 23, 59, 59),
                 "2026-01", utc(2026, 1, 1), utc(2026, 2, 1), id="month-jan-31"),
    pytest.param("UTC", MONTH, "00:00", MON, utc(2026, 2, 1),
                 "2026-02", utc(2026, 2, 1), utc(2026, 3, 1), id="month-feb"),
    pytest.param("UTC", MONTH, "00:00", MON, utc(2026, 12, 31, 23, 30),
                 "2026-12", utc(2026, 12, 1), utc(2027, 1, 1), id="month-december"),
    pytest.param("UTC", MONTH, "00:00", MON, utc(2027, 1, 1),
                 "2027-01", utc(2027, 1, 1), utc(2027, 2, 1), id="month-next-january"),
    pytest.param(NY, MONTH, "00:00", MON, utc(2026, 3, 15),
                 "2026-03", utc(2026, 3, 1, 5), utc(2026, 4, 1, 4), id="month-ny-march"),
    pytest.param("UTC", MONTH, "04:00", MON, utc(2026, 3, 1, 3),
                 "2026-02", utc(2026, 2, 1, 4), utc(2026, 3, 1, 4), id="month-before-reset"),
    # Leap day.
    pytest.param("UTC", DAY, "00:00", MON, utc(2028, 2, 29, 12),
                 "2028-02-29", utc(2028, 2, 29), utc(2028, 3, 1), id="leap-day"),
    pytest.param("UTC", MONTH, "00:00", MON, utc(2028, 2, 29, 23, 59, 59),
                 "2028-02", utc(2028, 2, 1), utc(2028, 3, 1), id="leap-february"),
    pytest.param("UTC", DAY, "04:00", MON, utc(2028, 3, 1, 3),
                 "2028-02-29", utc(2028, 2, 29, 4), utc(2028, 3, 1, 4), id="leap-day-reset-0400"),
]


@pytest.mark.parametrize(
    ("tz", "kind", "reset", "week_start", "at", "key", "starts_at", "ends_at"), CASES
)
def test_the_period_of_an_instant(
    tz: str,
    kind: PeriodKind,
    reset: str,
    week_start: Weekday,
    at: datetime,
    key: str,
    starts_at: datetime,
    ends_at: datetime,
) -> None:
    period = period_of(kind, at, zone(tz), time.fromisoformat(reset), week_start)
    assert (period.key, period.starts_at, period.ends_at) == (key, starts_at, ends_at)


# (zone, reset_at, local date) -> hours the day lasts, on and around transition days.
DAY_LENGTHS = [
    (NY, "00:00", date(2026, 3, 8), 23),
    (NY, "00:00", date(2026, 11, 1), 25),
    (NY, "02:30", date(2026, 3, 7), 23.5),  # ends at the jump, 30 min early
    (NY, "02:30", date(2026, 3, 8), 23.5),  # starts at the jump, 30 min late
    (NY, "01:30", date(2026, 11, 1), 25),
    (NY, "00:00", date(2026, 3, 9), 24),
    (LONDON, "00:00", date(2026, 3, 29), 23),
    (LONDON, "00:00", date(2026, 10, 25), 25),
    (LORD_HOWE, "00:00", date(2026, 4, 5), 24.5),
    (LORD_HOWE, "00:00", date(2026, 10, 4), 23.5),
    (KATHMANDU, "04:00", date(2026, 6, 10), 24),
]


@pytest.mark.parametrize(("tz", "reset", "day", "hours"), DAY_LENGTHS)
def test_transition_days_are_as_long_as_the_clocks_say(
    tz: str, reset: str, day: date, hours: float
) -> None:
    start = reset_instant(day, time.fromisoformat(reset), zone(tz))
    period = period_of(DAY, start, zone(tz), time.fromisoformat(reset), MON)
    assert period.key == day.isoformat()
    assert period.starts_at is not None
    assert period.ends_at is not None
    assert period.ends_at - period.starts_at == timedelta(hours=hours)


def test_indexes_count_periods_one_by_one() -> None:
    def index(kind: PeriodKind, at: datetime, tz: str = "UTC") -> int:
        return period_of(kind, at, zone(tz), time(0, 0), MON).index

    assert index(DAY, utc(2028, 3, 1)) == index(DAY, utc(2028, 2, 29)) + 1
    assert index(DAY, utc(2028, 2, 29)) == date(2028, 2, 29).toordinal()
    assert index(DAY, utc(2026, 3, 9, 12), NY) == index(DAY, utc(2026, 3, 8, 12), NY) + 1
    assert index(WEEK, utc(2026, 3, 9)) == index(WEEK, utc(2026, 3, 8)) + 1
    assert index(WEEK, utc(2026, 3, 2)) == index(WEEK, utc(2026, 3, 8, 23))
    assert index(MONTH, utc(2026, 3, 15)) == 2026 * 12 + 2
    assert index(MONTH, utc(2026, 12, 31)) == 24323
    assert index(MONTH, utc(2027, 1, 1)) == 24324


def test_period_none_is_one_endless_period() -> None:
    period = period_of(NONE, utc(2026, 3, 8), zone(NY), time(4, 0), MON)
    assert (period.key, period.index, period.starts_at, period.ends_at) == ("", 0, None, None)


RESET_INSTANTS = [
    (NY, date(2026, 3, 8), "02:30", utc(2026, 3, 8, 7)),  # skipped: when the clocks land
    (NY, date(2026, 3, 8), "02:00", utc(2026, 3, 8, 7)),  # skipped: the first missing minute
    (NY, date(2026, 3, 8), "03:00", utc(2026, 3, 8, 7)),  # the first minute after the gap
    (NY, date(2026, 11, 1), "01:30", utc(2026, 11, 1, 5, 30)),  # twice: the first
    (NY, date(2026, 11, 1), "01:00", utc(2026, 11, 1, 5)),
    (LORD_HOWE, date(2026, 10, 4), "02:15", utc(2026, 10, 3, 15, 30)),
    (LORD_HOWE, date(2026, 4, 5), "01:45", utc(2026, 4, 4, 14, 45)),
    (KATHMANDU, date(2026, 6, 11), "04:00", utc(2026, 6, 10, 22, 15)),
]


@pytest.mark.parametrize(("tz", "day", "reset", "instant"), RESET_INSTANTS)
def test_reset_instants_at_gaps_and_repeats(
    tz: str, day: date, reset: str, instant: datetime
) -> None:
    assert reset_instant(day, time.fromisoformat(reset), zone(tz)) == instant


ZONES = [NY, LONDON, LORD_HOWE, KATHMANDU, "UTC", "Pacific/Chatham", "America/Santiago"]


@settings(max_examples=300, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    kind=st.sampled_from([DAY, WEEK, MONTH]),
    reset=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    week_start=st.sampled_from(list(Weekday)),
    at=st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC)),
)
def test_every_instant_lies_in_exactly_one_period_and_periods_follow_each_other(
    tz: str, kind: PeriodKind, reset: time, week_start: Weekday, at: datetime
) -> None:
    period = period_of(kind, at, zone(tz), reset, week_start)
    assert period.starts_at is not None
    assert period.ends_at is not None
    assert period.starts_at <= at < period.ends_at
    same = period_of(kind, period.starts_at, zone(tz), reset, week_start)
    last = period_of(kind, period.ends_at - US, zone(tz), reset, week_start)
    nxt = period_of(kind, period.ends_at, zone(tz), reset, week_start)
    assert same == period == last
    assert (nxt.index, nxt.starts_at) == (period.index + 1, period.ends_at)
    # The period starts when the local clocks show its first day at reset_at, or, when
    # they skip that time, at the first instant after the skip (a later wall time).
    local_start = period.starts_at.astimezone(zone(tz))
    wanted = datetime.combine(date.fromisoformat(period.key + ("-01" if kind is MONTH else "")),
                              reset)
    assert local_start.replace(tzinfo=None) >= wanted
    if local_start.replace(tzinfo=None) > wanted:
        before = (period.starts_at - US).astimezone(zone(tz)).replace(tzinfo=None)
        assert before < wanted  # the clocks jumped over the reset time


def test_a_reset_time_that_says_fold_1_is_read_like_any_other() -> None:
    # 02:44 does not exist in New York on 2027-03-14: the period starts when the clocks
    # land at 03:00 EDT (07:00 UTC), whatever fold the reset time carries.
    expected = datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    for fold in (0, 1):
        assert reset_instant(date(2027, 3, 14), time(2, 44, fold=fold), zone(NY)) == expected
