"""What a quest is, as the evaluator reads it: plain frozen values, built by `parse_quest`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from enum import StrEnum

# An event attribute or a condition operand: JSON's string, number or boolean.
AttrValue = str | int | float | bool

USER_ZONE = "user"  # a quest's `timezone` meaning "the zone stamped on each event"


class Measure(StrEnum):
    """How matching events move a quest: +1 each, +value each, or a streak of periods."""

    COUNT = "count"
    SUM = "sum"
    CONSECUTIVE = "consecutive"


class PeriodKind(StrEnum):
    """How often progress starts again."""

    NONE = "none"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class Weekday(StrEnum):
    """A day of the week, numbered as `date.weekday()` numbers it (monday = 0)."""

    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"

    @property
    def number(self) -> int:
        """0 for monday ... 6 for sunday."""
        return _WEEKDAY_NUMBERS[self]


_WEEKDAY_NUMBERS = {day: number for number, day in enumerate(Weekday)}


class Operator(StrEnum):
    """How a `where` condition compares an event attribute with its operand."""

    EQ = "eq"  # written as a bare value in a quest
    IN = "in"
    GTE = "gte"
    LTE = "lte"
    NE = "ne"


@dataclass(frozen=True)
class Condition:
    """One test on one event attribute: `attr` `op` `operand` (a tuple of values for `in`)."""

    attr: str
    op: Operator
    operand: AttrValue | tuple[AttrValue, ...]


@dataclass(frozen=True)
class Trigger:
    """Which events a quest listens to: their type, and conditions that must all hold."""

    event: str = "sign_in"
    where: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class RewardItem:
    """One line of a reward bundle: `qty` of `item` (a wallet item such as gold)."""

    item: str
    qty: int


@dataclass(frozen=True, kw_only=True)
class QuestDef:
    """A quest's rules. Build it with `parse_quest`, which applies the API's defaults.

    The constructor takes values as they are (no defaults that depend on other fields:
    `max_per_period` is None unless given). `timezone` is "user", "UTC" or an IANA name.
    """

    quest_id: int
    target: int
    rewards: tuple[RewardItem, ...]
    trigger: Trigger = field(default_factory=Trigger)
    measure: Measure = Measure.COUNT
    period: PeriodKind = PeriodKind.NONE
    reset_at: time = time(0, 0)
    week_starts_on: Weekday = Weekday.MONDAY
    timezone: str = USER_ZONE
    max_per_period: int | None = None
    duplication: int | None = None
    grace_periods: int = 0
    requires: tuple[int, ...] = ()
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    claim_within_seconds: int | None = None
    auto_claim: bool = False
