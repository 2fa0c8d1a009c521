"""The rules of a batch of gameplay events (POST /events, gRPC RecordEvents).

Pure: no I/O, and the clock comes in as `now`. The batch is checked whole before
anything is stored, and the first problem is reported as "events[INDEX].FIELD: why".
Whether each user exists is the one check left to the service (it needs the database).

JSON numbers should reach `parse_batch` as int or Decimal (json.loads with
parse_float=Decimal), so that `value` is exact; floats are accepted too (gRPC), and so is
an `occurred_at` that is already a UTC datetime (gRPC's Timestamp).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from questline.engine.definitions import AttrValue
from questline.errors import Invalid

MAX_BATCH = 1000
TYPE_RE = re.compile(r"[a-z0-9_.:-]{1,64}")
# Questline's own history names: a game server may not send them.
RESERVED_TYPE_RE = re.compile(r"sign_in|quest_.*|reward_.*")
MAX_VALUE = Decimal(10) ** 9
# Values are stored as NUMERIC(24, 6): more decimals would be rounded, so they are refused.
VALUE_DECIMALS = 6
MAX_ATTRS = 16
MAX_ATTR_NAME = 64
MAX_ATTR_STRING = 256
MAX_ATTR_INT = 2**63 - 1
MAX_KEY = 255
# Clocks of game servers drift; an event from further ahead is a bug on their side.
MAX_AHEAD = timedelta(seconds=60)
# Even a backfill has a floor: period arithmetic needs room below it.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
FIELDS = ("user_id", "type", "value", "attrs", "occurred_at", "idempotency_key")
REQUIRED = ("user_id", "type", "idempotency_key")


class EventRejected(Invalid):
    """One event of a batch (or the batch itself, index None) is invalid: nothing is stored."""

    def __init__(self, index: int | None, field: str, reason: str) -> None:
        where = "events" if index is None else f"events[{index}]"
        super().__init__(f"{where}.{field}: {reason}" if field else f"{where}: {reason}")
        self.index = index
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class NewEvent:
    """One checked event, with its defaults applied (occurred_at: when stored)."""

    user_id: int
    type: str
    value: Decimal
    attrs: dict[str, AttrValue]
    occurred_at: datetime
    idempotency_key: str


def parse_batch(
    body: object, *, now: datetime, max_age_seconds: int, backfill: bool
) -> list[NewEvent]:
    """The events of a body {"events": [...]}, in order; EventRejected at the first problem.

    Without `backfill`, an event may be at most `max_age_seconds` old.
    """
    if not isinstance(body, Mapping):
        raise EventRejected(None, "", 'the body must be an object {"events": [...]}')
    extra = sorted(set(body) - {"events"})
    if extra:
        raise EventRejected(None, "", f"unknown field {extra[0]!r} next to events")
    events = body.get("events")
    if not isinstance(events, list):
        raise EventRejected(None, "", "events must be a list of events")
    _check_count(len(events))
    oldest = _oldest(now, max_age_seconds=max_age_seconds, backfill=backfill)
    return [_event(i, raw, now=now, oldest=oldest) for i, raw in enumerate(events)]


# One event's fields as received, in FIELDS order; None for an optional one left out.
RawEvent = tuple[object, object, object, object, object, object]


def parse_events(
    events: Sequence[RawEvent], *, now: datetime, max_age_seconds: int, backfill: bool
) -> list[NewEvent]:
    """As parse_batch, for events whose fields arrive apart rather than as a mapping
    (gRPC's messages, which have no unknown or missing fields): the same rules."""
    _check_count(len(events))
    oldest = _oldest(now, max_age_seconds=max_age_seconds, backfill=backfill)
    return [_checked(i, *fields, now=now, oldest=oldest) for i, fields in enumerate(events)]


def _check_count(n: int) -> None:
    if not 1 <= n <= MAX_BATCH:
        raise EventRejected(None, "", f"a batch holds 1 to {MAX_BATCH} events, got {n}")


def _oldest(now: datetime, *, max_age_seconds: int, backfill: bool) -> datetime:
    return EARLIEST if backfill else max(EARLIEST, now - timedelta(seconds=max_age_seconds))


def _event(index: int, raw: object, *, now: datetime, oldest: datetime) -> NewEvent:
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise EventRejected(index, "", "an event must be an object")
    if not _FIELD_SET.issuperset(raw):
        name = next(name for name in raw if name not in _FIELD_SET)
        raise EventRejected(index, str(name), "unknown field")
    for name in REQUIRED:
        if name not in raw:
            raise EventRejected(index, name, "is required")
    return _checked(
        index,
        raw["user_id"],
        raw["type"],
        raw.get("value"),
        raw.get("attrs"),
        raw.get("occurred_at"),
        raw["idempotency_key"],
        now=now,
        oldest=oldest,
    )


_FIELD_SET = frozenset(FIELDS)


def _checked(
    index: int,
    user_id: object,
    type_: object,
    value: object,
    attrs: object,
    occurred_at: object,
    idempotency_key: object,
    *,
    now: datetime,
    oldest: datetime,
) -> NewEvent:
    """One event from its fields, each checked in FIELDS order."""
    return NewEvent(
        user_id=_user_id(index, user_id),
        type=_type(index, type_),
        value=_value(index, value),
        attrs=_attrs(index, attrs),
        occurred_at=_occurred_at(index, occurred_at, now=now, oldest=oldest),
        idempotency_key=_key(index, idempotency_key),
    )


def _user_id(index: int, raw: object) -> int:
    if type(raw) is not int or not 1 <= raw <= MAX_ATTR_INT:
        raise EventRejected(index, "user_id", "must be a user id (a positive integer)")
    return raw


def _type(index: int, raw: object) -> str:
    if not isinstance(raw, str) or not TYPE_RE.fullmatch(raw):
        raise EventRejected(index, "type", "must be 1-64 characters of a-z 0-9 _ . : -")
    if RESERVED_TYPE_RE.fullmatch(raw):
        raise EventRejected(
            index,
            "type",
            f"{raw!r} is reserved for Questline's history (sign_in, quest_*, reward_*)",
        )
    return raw


def _value(index: int, raw: object) -> Decimal:
    if raw is None:
        return Decimal(1)
    if type(raw) is int and 0 <= raw <= MAX_VALUE:
        return Decimal(raw)  # the common case: whole, no places to count
    if isinstance(raw, bool) or not isinstance(raw, int | float | Decimal):
        raise EventRejected(index, "value", "must be a number")
    value = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    if not value.is_finite() or not 0 <= value <= MAX_VALUE:
        raise EventRejected(index, "value", "must be between 0 and 1000000000")
    # Trailing zeros do not count ("1.5000000" has one place); normalizing is the slow
    # part, so only a value written with more places is normalized.
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -VALUE_DECIMALS:
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and exponent < -VALUE_DECIMALS:
            raise EventRejected(index, "value", f"has more than {VALUE_DECIMALS} decimal places")
    return value


def _attrs(index: int, raw: object) -> dict[str, AttrValue]:
    if raw is None or raw == {}:
        return {}
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise EventRejected(index, "attrs", "must be an object of attribute: value")
    if len(raw) > MAX_ATTRS:
        raise EventRejected(index, "attrs", f"has {len(raw)} keys (at most {MAX_ATTRS})")
    attrs: dict[str, AttrValue] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_ATTR_NAME or not _storable(name):
            raise EventRejected(
                index, "attrs", f"attribute names are 1-{MAX_ATTR_NAME} characters of text"
            )
        attrs[name] = _attr_value(index, name, value)
    return attrs


def _attr_value(index: int, name: str, raw: object) -> AttrValue:
    field = f"attrs.{name}"
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        if len(raw) > MAX_ATTR_STRING or not _storable(raw):
            raise EventRejected(
                index, field, f"strings are at most {MAX_ATTR_STRING} characters of text"
            )
        return raw
    if isinstance(raw, int):
        if abs(raw) > MAX_ATTR_INT:
            raise EventRejected(index, field, "whole numbers must fit in 64 bits")
        return raw
    if isinstance(raw, float | Decimal):
        number = float(raw)
        if not math.isfinite(number):
            raise EventRejected(index, field, "numbers must be finite")
        return number
    raise EventRejected(index, field, "must be a string, a number or a boolean")


def _occurred_at(index: int, raw: object, *, now: datetime, oldest: datetime) -> datetime:
    if raw is None:
        return now
    if isinstance(raw, datetime) and raw.tzinfo is UTC:
        stamp = raw  # gRPC's Timestamp, already an instant (questline.catalog.wire)
    elif not isinstance(raw, str):
        raise EventRejected(index, "occurred_at", "must be an ISO-8601 timestamp")
    else:
        try:
            stamp = datetime.fromisoformat(raw)
            if stamp.utcoffset() is None:
                raise EventRejected(index, "occurred_at", "needs a UTC offset (e.g. Z or +02:00)")
            stamp = stamp.astimezone(UTC)
        except (ValueError, OverflowError):
            raise EventRejected(index, "occurred_at", "must be an ISO-8601 timestamp") from None
    if stamp > now + MAX_AHEAD:
        raise EventRejected(
            index, "occurred_at", f"is more than {int(MAX_AHEAD.total_seconds())} s in the future"
        )
    if stamp < oldest:
        if oldest == EARLIEST:
            raise EventRejected(index, "occurred_at", "must not be before 1970-01-01")
        raise EventRejected(
            index,
            "occurred_at",
            "is older than QUESTLINE_EVENT_MAX_AGE_SECONDS; older events need a key with the "
            "events:backfill scope",
        )
    return stamp


def _key(index: int, raw: object) -> str:
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_KEY or not raw.isprintable():
        raise EventRejected(index, "idempotency_key", f"must be 1-{MAX_KEY} printable characters")
    return raw


def _storable(text: str) -> bool:
    # JSONB (and PostgreSQL text) cannot hold NUL, and a lone surrogate is not UTF-8.
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
