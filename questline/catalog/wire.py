"""Quests and events as gRPC messages (proto/questline/v1), and back.

One conversion each way, used by the gRPC server (rpc/) and the gRPC catalog source
(questline.catalog.grpc_source). A quest travels in the form the HTTP API shows it
(catalog.service.quest_view), which is also the form the engine parses, so a copy read
over gRPC yields the same definitions as the database. A gameplay event becomes the
JSON-like mapping POST /events parses, so both faces run the same checks
(questline.events.validation), written once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from questline.engine import QuestInvalid, parse_quest
from questline.events.validation import RawEvent
from questline.grpc_gen.v1 import catalog_pb2, events_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OPERATORS = ("gte", "lte", "ne")


class NotRepresentable(ValueError):
    """A stored value the typed messages cannot carry (a trigger written outside the API)."""


# --- quests: server side ------------------------------------------------------


def quest_message(view: Mapping[str, Any]) -> catalog_pb2.Quest:
    """The message for a quest as catalog.service.quest_view shows it."""
    reward = view["reward"]
    quest = catalog_pb2.Quest(
        quest_id=view["quest_id"],
        name=view["name"],
        description=view["description"] or "",
        auto_claim=bool(view["auto_claim"]),
        streak=view["streak"],
        active=bool(view["active"]),
        reward=catalog_pb2.Reward(
            reward_id=reward["reward_id"],
            reward_name=reward["reward_name"],
            reward_item=reward["reward_item"],
            reward_qty=reward["reward_qty"],
            items=[catalog_pb2.RewardItem(item=i["item"], qty=i["qty"]) for i in reward["items"]],
        ),
        measure=view["measure"],
        target=view["target"],
        period=view["period"],
        reset_at=view["reset_at"],
        week_starts_on=view["week_starts_on"],
        timezone=view["timezone"],
        grace_periods=view["grace_periods"],
        requires=list(view["requires"]),
    )
    for name in ("duplication", "max_per_period", "claim_within_seconds"):
        if view[name] is not None:
            setattr(quest, name, view[name])
    for name in ("starts_at", "ends_at"):
        if view[name] is not None:
            getattr(quest, name).CopyFrom(_timestamp(datetime.fromisoformat(view[name])))
    try:
        parse_quest(view)  # the engine's reason first, as the database source gives it
        quest.trigger.CopyFrom(trigger_message(view["trigger"]))
    except (QuestInvalid, NotRepresentable, TypeError, ValueError) as exc:
        reason = exc.detail if isinstance(exc, QuestInvalid) else str(exc)
        quest.invalid_reason = f"quest {view['quest_id']} is invalid: {reason}"
        trigger = view["trigger"] if isinstance(view["trigger"], Mapping) else {}
        event = trigger.get("event")
        quest.trigger.event = event if isinstance(event, str) else ""
    return quest


def trigger_message(raw: object) -> catalog_pb2.Trigger:
    """A stored trigger ({"event", "where"}) as a message; NotRepresentable if it cannot be."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("event"), str):
        raise NotRepresentable("trigger must be an object with an event type")
    trigger = catalog_pb2.Trigger(event=raw["event"])
    where = raw.get("where", {})
    if not isinstance(where, Mapping):
        raise NotRepresentable("trigger.where must be an object")
    for attr, test in where.items():
        condition = trigger.where[str(attr)]
        if not isinstance(test, Mapping):
            condition.equals.CopyFrom(_scalar(test))
            continue
        for name, operand in test.items():
            if name == "in" and isinstance(operand, list | tuple):
                condition.one_of.extend(_scalar(option) for option in operand)
            elif name in _OPERATORS:
                getattr(condition, name).CopyFrom(_scalar(operand))
            else:
                raise NotRepresentable(f"trigger.where.{attr}: unknown operator {name!r}")
    return trigger


def _scalar(value: object) -> catalog_pb2.Scalar:
    if isinstance(value, bool):
        return catalog_pb2.Scalar(bool_value=value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return catalog_pb2.Scalar(int_value=value)
    if isinstance(value, float) and math.isfinite(value):
        return catalog_pb2.Scalar(number_value=value)
    if isinstance(value, str):
        return catalog_pb2.Scalar(string_value=value)
    raise NotRepresentable(f"{value!r} is not a string, a 64-bit number or a boolean")


# --- quests: client side ------------------------------------------------------


def quest_view(quest: catalog_pb2.Quest) -> dict[str, Any]:
    """The quest in catalog.service.quest_view's form (what parse_quest reads)."""
    return {
        "quest_id": quest.quest_id,
        "name": quest.name,
        "description": quest.description,
        "auto_claim": quest.auto_claim,
        "streak": quest.streak,
        "duplication": quest.duplication if quest.HasField("duplication") else None,
        "active": quest.active,
        "reward": {
            "reward_id": quest.reward.reward_id,
            "reward_name": quest.reward.reward_name,
            "reward_item": quest.reward.reward_item,
            "reward_qty": quest.reward.reward_qty,
            "items": [{"item": i.item, "qty": i.qty} for i in quest.reward.items],
        },
        "trigger": trigger_view(quest.trigger),
        "measure": quest.measure,
        "target": quest.target,
        "period": quest.period,
        "reset_at": quest.reset_at,
        "week_starts_on": quest.week_starts_on,
        "timezone": quest.timezone,
        "max_per_period": quest.max_per_period if quest.HasField("max_per_period") else None,
        "grace_periods": quest.grace_periods,
        "requires": list(quest.requires),
        "starts_at": _iso(quest.starts_at) if quest.HasField("starts_at") else None,
        "ends_at": _iso(quest.ends_at) if quest.HasField("ends_at") else None,
        "claim_within_seconds": (
            quest.claim_within_seconds if quest.HasField("claim_within_seconds") else None
        ),
    }


def trigger_view(trigger: catalog_pb2.Trigger) -> dict[str, Any]:
    """A trigger message in the stored form ({"event", "where"})."""
    view: dict[str, Any] = {"event": trigger.event}
    where: dict[str, Any] = {}
    for attr in sorted(trigger.where):
        condition = trigger.where[attr]
        if condition.HasField("equals"):
            where[attr] = _scalar_value(condition.equals)
            continue
        test: dict[str, Any] = {}
        if condition.one_of:
            test["in"] = [_scalar_value(option) for option in condition.one_of]
        for name in _OPERATORS:
            if condition.HasField(name):  # type: ignore[arg-type]
                test[name] = _scalar_value(getattr(condition, name))
        where[attr] = test
    if where:
        view["where"] = where
    return view


def _scalar_value(scalar: catalog_pb2.Scalar) -> str | int | float | bool | None:
    kind = scalar.WhichOneof("kind")
    return None if kind is None else getattr(scalar, kind)


# --- events -------------------------------------------------------------------


def event_fields(request: events_pb2.RecordEventsRequest) -> list[RawEvent]:
    """Each event's fields as POST /events' body would hold them (None for one left
    out), in the order questline.events.validation.parse_events checks them."""
    return [
        (
            event.user_id,
            event.type,
            event.value if event.HasField("value") else None,
            {name: _attr(value) for name, value in event.attrs.items()} if event.attrs else None,
            _instant_or_invalid(event.occurred_at) if event.HasField("occurred_at") else None,
            event.idempotency_key,
        )
        for event in request.events
    ]


def _attr(value: events_pb2.AttrValue) -> str | int | float | bool | None:
    kind = value.WhichOneof("kind")
    # None (no kind set) is refused by the validation: "must be a string, a number or ...".
    return None if kind is None else getattr(value, kind)


def _instant_or_invalid(stamp: Timestamp) -> datetime | str:
    """The timestamp as a UTC datetime, or a text the validation refuses ("must be an
    ISO-8601 timestamp") when it is no instant a datetime can hold."""
    if not 0 <= stamp.nanos < 1_000_000_000:
        return f"invalid timestamp ({stamp.seconds} s, {stamp.nanos} ns)"
    try:
        # Positional (days, seconds, microseconds): half the cost of keywords, per event.
        return _EPOCH + timedelta(0, stamp.seconds, stamp.nanos // 1000)
    except (OverflowError, ValueError):
        return f"invalid timestamp ({stamp.seconds} s)"


# --- instants -----------------------------------------------------------------


def _timestamp(value: datetime) -> Timestamp:
    delta = value.astimezone(UTC) - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)


def _iso(stamp: Timestamp) -> str:
    moment = _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)
    return moment.isoformat()


def timestamp(value: datetime) -> Timestamp:
    """An aware datetime as a Timestamp (microsecond precision)."""
    return _timestamp(value)
