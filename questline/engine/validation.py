"""Reading a quest definition from its JSON form, with messages a quest designer can act on.

`parse_quest` checks one quest on its own; `check_requires` checks the `requires` links
of the whole catalog (unknown quests, cycles). Keys the engine does not use (name,
description, active, reward_id ...) are left alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Literal, TypeGuard, TypeVar, overload
from zoneinfo import available_timezones

from questline.engine.definitions import (
    USER_ZONE,
    AttrValue,
    Condition,
    Measure,
    Operator,
    PeriodKind,
    QuestDef,
    RewardItem,
    Trigger,
    Weekday,
)
from questline.errors import QuestInvalid

EVENT_TYPE_RE = re.compile(r"[a-z0-9_.:-]{1,64}")
ITEM_RE = re.compile(r"[a-z0-9_]{1,32}")
RESET_AT_RE = re.compile(r"(\d{2}):(\d{2})")
HISTORY_TYPES = re.compile(r"quest_.*|reward_.*")  # v1 history names, never gameplay
MAX_CONDITIONS = 16  # an event has at most 16 attributes
MAX_ATTR_NAME = 64
MAX_STRING = 256
MAX_OPTIONS = 100
MAX_REWARD_ITEMS = 10
# Amounts and limits above this are typos, and would not fit the catalog's columns.
MAX_WHOLE = 1_000_000_000
MAX_REQUIRES = 100
_ABSENT = object()
E = TypeVar("E", Measure, PeriodKind, Weekday)


def parse_quest(data: Mapping[str, object]) -> QuestDef:
    """The quest `data` describes (POST /quests fields, v1 and v2), with the API's defaults.

    `quest_id` is read from the data (0 when absent, e.g. a quest not stored yet).
    Raises QuestInvalid(field, message) naming the first problem found.
    """
    quest_id = _whole(data, "quest_id", minimum=0, default=0, maximum=None)
    measure = _choice(data, "measure", Measure, Measure.COUNT)
    period = _choice(data, "period", PeriodKind, PeriodKind.NONE)
    if measure is Measure.CONSECUTIVE and period is PeriodKind.NONE:
        raise QuestInvalid("period", "measure 'consecutive' needs a period (day, week or month)")
    grace_periods = _whole(data, "grace_periods", minimum=0, default=0)
    if grace_periods and measure is not Measure.CONSECUTIVE:
        raise QuestInvalid("grace_periods", "grace_periods only applies to measure 'consecutive'")
    default_cap = None if period is PeriodKind.NONE else 1
    requires = _requires(data.get("requires", []))
    if quest_id in requires:
        raise QuestInvalid("requires", f"requires forms a cycle: {quest_id} -> {quest_id}")
    starts_at = _instant(data, "starts_at")
    ends_at = _instant(data, "ends_at")
    if starts_at is not None and ends_at is not None and starts_at >= ends_at:
        raise QuestInvalid("ends_at", "starts_at must be before ends_at")
    return QuestDef(
        quest_id=quest_id,
        target=_target(data),
        rewards=_rewards(data),
        trigger=_trigger(data.get("trigger", _ABSENT)),
        measure=measure,
        period=period,
        reset_at=_reset_at(data.get("reset_at", "00:00")),
        week_starts_on=_choice(data, "week_starts_on", Weekday, Weekday.MONDAY),
        timezone=_timezone(data.get("timezone", USER_ZONE)),
        max_per_period=_whole(data, "max_per_period", minimum=1, default=default_cap,
                              nullable=True),
        duplication=_whole(data, "duplication", minimum=1, default=None, nullable=True),
        grace_periods=grace_periods,
        requires=requires,
        starts_at=starts_at,
        ends_at=ends_at,
        claim_within_seconds=_whole(data, "claim_within_seconds", minimum=1, default=None,
                                    nullable=True),
        auto_claim=_flag(data, "auto_claim", default=False),
    )


def check_requires(graph: Mapping[int, Sequence[int]]) -> None:
    """Check the catalog's `requires` links: quest id -> the quest ids it requires.

    Raises QuestInvalid naming an unknown quest or a cycle (e.g. "3 -> 5 -> 3", starting
    from the cycle's smallest id).
    """
    for quest_id in sorted(graph):
        for required in graph[quest_id]:
            if required not in graph:
                raise QuestInvalid("requires", f"requires names unknown quest {required}")
    done: set[int] = set()
    for start in sorted(graph):
        cycle = _cycle_from(start, graph, done)
        if cycle:
            smallest = cycle.index(min(cycle))
            ordered = cycle[smallest:] + cycle[:smallest]
            path = " -> ".join(str(q) for q in [*ordered, ordered[0]])
            raise QuestInvalid("requires", f"requires forms a cycle: {path}")


def _cycle_from(start: int, graph: Mapping[int, Sequence[int]], done: set[int]) -> list[int]:
    """A cycle reachable from `start` (its quests in order), or [] if there is none."""
    path: list[int] = []
    on_path: set[int] = set()
    # Iterative depth-first search: each frame is a quest and the requirements left to visit.
    stack: list[tuple[int, list[int]]] = []
    if start not in done:
        stack.append((start, sorted(graph[start])))
        path.append(start)
        on_path.add(start)
    while stack:
        quest_id, pending = stack[-1]
        if not pending:
            stack.pop()
            path.pop()
            on_path.discard(quest_id)
            done.add(quest_id)
            continue
        required = pending.pop(0)
        if required in on_path:
            return path[path.index(required):]
        if required not in done:
            stack.append((required, sorted(graph[required])))
            path.append(required)
            on_path.add(required)
    return []


def _target(data: Mapping[str, object]) -> int:
    target = _whole(data, "target", minimum=1, default=None, nullable=True)
    streak = _whole(data, "streak", minimum=1, default=None, nullable=True)
    if target is not None and streak is not None and target != streak:
        raise QuestInvalid("target", f"target and streak disagree ({target} vs {streak})")
    found = target if target is not None else streak
    if found is None:
        raise QuestInvalid("target", "target is required (v1's streak is accepted too)")
    return found


def _trigger(raw: object) -> Trigger:
    if raw is _ABSENT:
        return Trigger()
    if not isinstance(raw, Mapping):
        raise QuestInvalid("trigger", 'trigger must be an object like {"event": "match_won"}')
    event = raw.get("event")
    if not isinstance(event, str) or not EVENT_TYPE_RE.fullmatch(event):
        raise QuestInvalid(
            "trigger.event",
            f"trigger.event must be 1-64 of a-z 0-9 _ . : -, got {_show(event)}",
        )
    if HISTORY_TYPES.fullmatch(event):
        raise QuestInvalid(
            "trigger.event", f"trigger.event {event!r} is a history type, not a gameplay event"
        )
    unknown = sorted(set(raw) - {"event", "where"})
    if unknown:
        raise QuestInvalid(f"trigger.{unknown[0]}", f"trigger has no field {unknown[0]!r}")
    return Trigger(event=event, where=_where(raw.get("where", {})))


def _where(raw: object) -> tuple[Condition, ...]:
    if not isinstance(raw, Mapping):
        raise QuestInvalid("trigger.where", "trigger.where must be an object: {attr: condition}")
    if len(raw) > MAX_CONDITIONS:
        raise QuestInvalid(
            "trigger.where", f"trigger.where has {len(raw)} attributes (at most {MAX_CONDITIONS})"
        )
    conditions: list[Condition] = []
    for attr, condition in raw.items():
        if not isinstance(attr, str) or not 1 <= len(attr) <= MAX_ATTR_NAME:
            raise QuestInvalid(
                "trigger.where", f"attribute names are 1-{MAX_ATTR_NAME} characters, got {attr!r}"
            )
        field = f"trigger.where.{attr}"
        if not isinstance(condition, Mapping):
            conditions.append(Condition(attr, Operator.EQ, _scalar(field, condition)))
            continue
        if not condition:
            raise QuestInvalid(field, f"{field} is empty (use a value, in, gte, lte or ne)")
        # Several operators on one attribute must all hold: {"gte": 10, "lte": 20} is a range.
        for name, operand in condition.items():
            conditions.append(_condition(attr, field, name, operand))
    return tuple(conditions)


def _condition(attr: str, field: str, name: object, operand: object) -> Condition:
    operators = {"in": Operator.IN, "gte": Operator.GTE, "lte": Operator.LTE, "ne": Operator.NE}
    if not isinstance(name, str) or name not in operators:
        raise QuestInvalid(
            field, f"{field}: unknown operator {name!r} (use a value, in, gte, lte or ne)"
        )
    op = operators[name]
    where = f"{field}.{name}"
    if op is Operator.IN:
        if not isinstance(operand, list | tuple) or not 1 <= len(operand) <= MAX_OPTIONS:
            raise QuestInvalid(where, f"{where} must be a list of 1 to {MAX_OPTIONS} values")
        return Condition(attr, op, tuple(_scalar(where, option) for option in operand))
    if op is Operator.NE:
        return Condition(attr, op, _scalar(where, operand))
    value = _scalar(where, operand)
    if isinstance(value, bool | str):
        raise QuestInvalid(where, f"{where} must be a number, got {_show(operand)}")
    return Condition(attr, op, value)


def _scalar(field: str, value: object) -> AttrValue:
    """A condition operand: a string (at most 256 characters), a finite number or a boolean."""
    if isinstance(value, Decimal) and value.is_finite():
        value = int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise QuestInvalid(field, f"{field}: strings are at most {MAX_STRING} characters")
        return value
    raise QuestInvalid(field, f"{field} must be a string, number or boolean, got {_show(value)}")


def _rewards(data: Mapping[str, object]) -> tuple[RewardItem, ...]:
    """The bundle: `rewards` [{item, qty}], or a reward object with `items` or v1's
    reward_item/reward_qty."""
    raw = data.get("rewards", _ABSENT)
    reward = data.get("reward")
    if raw is _ABSENT and isinstance(reward, Mapping):
        if "items" in reward:
            raw = reward["items"]
        elif "reward_item" in reward:
            raw = [{"item": reward["reward_item"], "qty": reward.get("reward_qty")}]
    return parse_rewards(None if raw is _ABSENT else raw)


def parse_rewards(raw: object, *, field: str = "rewards") -> tuple[RewardItem, ...]:
    """A reward bundle [{"item", "qty"}, ...] (1-10 lines); QuestInvalid naming `field`
    (e.g. "items[2].qty") otherwise."""
    if not isinstance(raw, list | tuple) or not 1 <= len(raw) <= MAX_REWARD_ITEMS:
        count = len(raw) if isinstance(raw, list | tuple) else "none"
        raise QuestInvalid(
            field, f"{field} must hold 1 to {MAX_REWARD_ITEMS} items, got {count}"
        )
    items: list[RewardItem] = []
    for n, line in enumerate(raw):
        where = f"{field}[{n}]"
        if not isinstance(line, Mapping):
            example = '{"item": "gold", "qty": 5}'
            raise QuestInvalid(where, f"{where} must be an object like {example}")
        item = line.get("item")
        if not isinstance(item, str) or not ITEM_RE.fullmatch(item):
            raise QuestInvalid(
                f"{where}.item", f"{where}.item must be 1-32 of a-z 0-9 _, got {_show(item)}"
            )
        qty = line.get("qty")
        if not _is_whole(qty, 1):
            raise QuestInvalid(
                f"{where}.qty", f"{where}.qty must be a whole number >= 1, got {_show(qty)}"
            )
        if qty > MAX_WHOLE:
            raise QuestInvalid(
                f"{where}.qty", f"{where}.qty must be at most {MAX_WHOLE}, got {qty}"
            )
        unknown = sorted(str(key) for key in line if key not in ("item", "qty"))
        if unknown:
            raise QuestInvalid(f"{where}.{unknown[0]}", f"{where} has no field {unknown[0]!r}")
        items.append(RewardItem(item, qty))
    return tuple(items)


def _requires(raw: object) -> tuple[int, ...]:
    if not isinstance(raw, list | tuple) or not all(_is_whole(q, 1) for q in raw):
        raise QuestInvalid("requires", f"requires must be a list of quest ids, got {_show(raw)}")
    if len(raw) > MAX_REQUIRES:
        raise QuestInvalid("requires", f"requires names at most {MAX_REQUIRES} quests")
    return tuple(sorted(set(raw)))


def _reset_at(raw: object) -> time:
    if isinstance(raw, time):
        if raw.second or raw.microsecond or raw.tzinfo is not None:
            raise QuestInvalid("reset_at", f"reset_at must be a time HH:MM, got {raw}")
        return raw
    match = RESET_AT_RE.fullmatch(raw) if isinstance(raw, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise QuestInvalid("reset_at", f"reset_at must be a time HH:MM, got {_show(raw)}")
    return time(int(match[1]), int(match[2]))


def _timezone(raw: object) -> str:
    if not isinstance(raw, str):
        raise QuestInvalid("timezone", f"timezone must be 'user', 'UTC' or an IANA name, "
                                       f"got {_show(raw)}")
    if raw not in (USER_ZONE, "UTC") and raw not in _iana_names():
        raise QuestInvalid("timezone", f"timezone {raw!r} is not an IANA time zone")
    return raw


@lru_cache(maxsize=1)
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _instant(data: Mapping[str, object], name: str) -> datetime | None:
    raw = data.get(name)
    if raw is None:
        return None
    when: datetime | None = None
    if isinstance(raw, datetime):
        when = raw
    elif isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            when = None
    if when is None or when.utcoffset() is None:
        raise QuestInvalid(
            name, f"{name} must be a timestamp with a UTC offset (ISO-8601), got {_show(raw)}"
        )
    try:
        return when.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is in year 0 in UTC
        message = f"{name} is outside the calendar in UTC, got {_show(raw)}"
        raise QuestInvalid(name, message) from None


@overload
def _whole(
    data: Mapping[str, object], name: str, *, minimum: int, default: int,
    nullable: Literal[False] = False, maximum: int | None = MAX_WHOLE,
) -> int: ...


@overload
def _whole(
    data: Mapping[str, object], name: str, *, minimum: int, default: int | None,
    nullable: bool = False, maximum: int | None = MAX_WHOLE,
) -> int | None: ...


def _whole(
    data: Mapping[str, object],
    name: str,
    *,
    minimum: int,
    default: int | None,
    nullable: bool = False,
    maximum: int | None = MAX_WHOLE,
) -> int | None:
    """An integer field from minimum to maximum; `default` when absent; None allowed when
    `nullable`."""
    raw = data.get(name, _ABSENT)
    if raw is _ABSENT:
        return default
    if raw is None and nullable:
        return None
    if isinstance(raw, int) and _is_whole(raw, minimum):
        if maximum is not None and raw > maximum:
            raise QuestInvalid(name, f"{name} must be at most {maximum}, got {raw}")
        return raw
    null = "null or " if nullable else ""
    raise QuestInvalid(name, f"{name} must be {null}a whole number >= {minimum}, got {_show(raw)}")


def _is_whole(raw: object, minimum: int) -> TypeGuard[int]:
    """An int (not a bool) >= minimum."""
    return isinstance(raw, int) and not isinstance(raw, bool) and raw >= minimum


def _choice(data: Mapping[str, object], name: str, kind: type[E], default: E) -> E:
    raw = data.get(name, _ABSENT)
    if raw is _ABSENT:
        return default
    for option in kind:
        if raw == option.value:
            return option
    names = ", ".join(option.value for option in kind)
    raise QuestInvalid(name, f"{name} must be one of {names}, got {_show(raw)}")


def _flag(data: Mapping[str, object], name: str, *, default: bool) -> bool:
    raw = data.get(name, default)
    if not isinstance(raw, bool):
        raise QuestInvalid(name, f"{name} must be true or false, got {_show(raw)}")
    return raw


def _show(value: object) -> str:
    """A value as a designer wrote it, cut short."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
