"""Reading quest definitions (questline.engine.parse_quest, check_requires), no database."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pytest

from questline.engine import (
    Condition,
    Measure,
    Operator,
    PeriodKind,
    QuestDef,
    QuestInvalid,
    RewardItem,
    Trigger,
    Weekday,
    check_requires,
    parse_quest,
)
from questline.errors import Invalid

BUNDLE = [{"item": "gold", "qty": 5}]


def test_the_seed_quest_in_v1_form_reads_as_v1_rules() -> None:
    seed = parse_quest({
        "quest_id": 1, "name": "sign-in-three-times", "description": "", "active": True,
        "auto_claim": False, "streak": 3, "duplication": 2, "reward_id": 1,
        "reward": {"reward_id": 1, "reward_name": "Ten Diamonds", "reward_item": "diamond",
                   "reward_qty": 10},
    })
    assert seed == QuestDef(
        quest_id=1, target=3, duplication=2, rewards=(RewardItem("diamond", 10),),
        trigger=Trigger("sign_in"), measure=Measure.COUNT, period=PeriodKind.NONE,
        reset_at=time(0, 0), week_starts_on=Weekday.MONDAY, timezone="user",
        max_per_period=None, grace_periods=0, requires=(), starts_at=None, ends_at=None,
        claim_within_seconds=None, auto_claim=False,
    )


def test_every_v2_field_is_read() -> None:
    quest = parse_quest({
        "quest_id": 12,
        "trigger": {"event": "match_won", "where": {
            "mode": "ranked", "map": {"in": ["dust", "inferno"]},
            "kills": {"gte": 3, "lte": 30}, "team": {"ne": "bots"}, "mvp": True,
        }},
        "measure": "sum", "target": 100, "period": "week", "reset_at": "04:30",
        "week_starts_on": "sunday", "timezone": "Europe/Paris", "max_per_period": 3,
        "duplication": None, "requires": [5, 3, 5], "starts_at": "2026-07-01T00:00:00+02:00",
        "ends_at": "2026-08-01T00:00:00Z", "claim_within_seconds": 86400, "auto_claim": True,
        "rewards": [{"item": "gold", "qty": 100}, {"item": "chest_epic", "qty": 1}],
    })
    assert quest.trigger == Trigger("match_won", (
        Condition("mode", Operator.EQ, "ranked"),
        Condition("map", Operator.IN, ("dust", "inferno")),
        Condition("kills", Operator.GTE, 3),
        Condition("kills", Operator.LTE, 30),
        Condition("team", Operator.NE, "bots"),
        Condition("mvp", Operator.EQ, True),
    ))
    assert (quest.quest_id, quest.measure, quest.target, quest.period) == (
        12, Measure.SUM, 100, PeriodKind.WEEK
    )
    assert (quest.reset_at, quest.week_starts_on, quest.timezone) == (
        time(4, 30), Weekday.SUNDAY, "Europe/Paris"
    )
    assert (quest.max_per_period, quest.duplication, quest.requires) == (3, None, (3, 5))
    assert quest.starts_at == datetime(2026, 6, 30, 22, tzinfo=UTC)
    assert quest.ends_at == datetime(2026, 8, 1, tzinfo=UTC)
    assert (quest.claim_within_seconds, quest.auto_claim) == (86400, True)
    assert quest.rewards == (RewardItem("gold", 100), RewardItem("chest_epic", 1))


# (fields besides target and rewards) -> the max_per_period they give
CAP_DEFAULTS = [
    ({}, None),
    ({"period": "day"}, 1),
    ({"period": "month", "max_per_period": None}, None),
    ({"period": "week", "max_per_period": 4}, 4),
]


@pytest.mark.parametrize(("fields", "cap"), CAP_DEFAULTS)
def test_max_per_period_defaults_to_one_when_there_is_a_period(
    fields: dict[str, Any], cap: int | None
) -> None:
    assert parse_quest({"target": 1, "rewards": BUNDLE, **fields}).max_per_period == cap


def test_target_and_streak_are_one_number() -> None:
    assert parse_quest({"streak": 4, "rewards": BUNDLE}).target == 4
    assert parse_quest({"target": 4, "streak": 4, "rewards": BUNDLE}).target == 4


def test_a_reward_object_with_items_is_a_bundle() -> None:
    quest = parse_quest({"target": 1, "reward": {"items": BUNDLE + [{"item": "xp", "qty": 9}]}})
    assert quest.rewards == (RewardItem("gold", 5), RewardItem("xp", 9))


def test_quest_invalid_is_a_422() -> None:
    with pytest.raises(QuestInvalid) as caught:
        parse_quest({"target": 0, "rewards": BUNDLE})
    assert isinstance(caught.value, Invalid)
    assert caught.value.status_code == 422
    assert caught.value.field == "target"


# (fields, besides a valid target and rewards unless given) -> (field, message)
INVALID = [
    ({"measure": "consecutive"}, "period",
     "measure 'consecutive' needs a period (day, week or month)"),
    ({"measure": "consecutive", "period": "none"}, "period",
     "measure 'consecutive' needs a period (day, week or month)"),
    ({"reset_at": "25:00"}, "reset_at", "reset_at must be a time HH:MM, got '25:00'"),
    ({"reset_at": "04:60"}, "reset_at", "reset_at must be a time HH:MM, got '04:60'"),
    ({"reset_at": "4:00"}, "reset_at", "reset_at must be a time HH:MM, got '4:00'"),
    ({"reset_at": 400}, "reset_at", "reset_at must be a time HH:MM, got 400"),
    ({"timezone": "Mars/Olympus"}, "timezone", "timezone 'Mars/Olympus' is not an IANA time zone"),
    ({"timezone": "../../etc/passwd"}, "timezone",
     "timezone '../../etc/passwd' is not an IANA time zone"),
    ({"timezone": 5}, "timezone", "timezone must be 'user', 'UTC' or an IANA name, got 5"),
    ({"target": 5, "streak": 3}, "target", "target and streak disagree (5 vs 3)"),
    ({"target": None}, "target", "target is required (v1's streak is accepted too)"),
    ({"target": 0}, "target", "target must be null or a whole number >= 1, got 0"),
    ({"target": 2.5}, "target", "target must be null or a whole number >= 1, got 2.5"),
    ({"target": True}, "target", "target must be null or a whole number >= 1, got true"),
    ({"measure": "average"}, "measure",
     "measure must be one of count, sum, consecutive, got 'average'"),
    ({"period": "hour"}, "period", "period must be one of none, day, week, month, got 'hour'"),
    ({"week_starts_on": "funday"}, "week_starts_on",
     "week_starts_on must be one of monday, tuesday, wednesday, thursday, friday, saturday, "
     "sunday, got 'funday'"),
    ({"duplication": 0}, "duplication", "duplication must be null or a whole number >= 1, got 0"),
    ({"period": "day", "max_per_period": 0}, "max_per_period",
     "max_per_period must be null or a whole number >= 1, got 0"),
    ({"measure": "consecutive", "period": "day", "grace_periods": -1}, "grace_periods",
     "grace_periods must be a whole number >= 0, got -1"),
    ({"grace_periods": 1}, "grace_periods", "grace_periods only applies to measure 'consecutive'"),
    ({"claim_within_seconds": 0}, "claim_within_seconds",
     "claim_within_seconds must be null or a whole number >= 1, got 0"),
    ({"requires": "3"}, "requires", "requires must be a list of quest ids, got '3'"),
    ({"requires": [0]}, "requires", "requires must be a list of quest ids, got [0]"),
    ({"quest_id": 3, "requires": [3]}, "requires", "requires forms a cycle: 3 -> 3"),
    ({"starts_at": "2026-07-01"}, "starts_at",
     "starts_at must be a timestamp with a UTC offset (ISO-8601), got '2026-07-01'"),
    ({"ends_at": "soon"}, "ends_at",
     "ends_at must be a timestamp with a UTC offset (ISO-8601), got 'soon'"),
    ({"starts_at": "2026-08-01T00:00:00Z", "ends_at": "2026-08-01T02:00:00+02:00"}, "ends_at",
     "starts_at must be before ends_at"),
    ({"auto_claim": "yes"}, "auto_claim", "auto_claim must be true or false, got 'yes'"),
    ({"rewards": []}, "rewards", "rewards must hold 1 to 10 items, got 0"),
    ({"rewards": None}, "rewards", "rewards must hold 1 to 10 items, got none"),
    ({"rewards": [{"item": "gold", "qty": 1}] * 11}, "rewards",
     "rewards must hold 1 to 10 items, got 11"),
    ({"rewards": [{"item": "gold", "qty": 1}, {"item": "Gold!", "qty": 1}]}, "rewards[1].item",
     "rewards[1].item must be 1-32 of a-z 0-9 _, got 'Gold!'"),
    ({"rewards": [{"item": "x" * 33, "qty": 1}]}, "rewards[0].item",
     f"rewards[0].item must be 1-32 of a-z 0-9 _, got '{'x' * 33}'"),
    ({"rewards": [{"item": "gold", "qty": 0}]}, "rewards[0].qty",
     "rewards[0].qty must be a whole number >= 1, got 0"),
    ({"rewards": [{"item": "gold"}]}, "rewards[0].qty",
     "rewards[0].qty must be a whole number >= 1, got null"),
    ({"rewards": ["gold"]}, "rewards[0]",
     'rewards[0] must be an object like {"item": "gold", "qty": 5}'),
    ({"trigger": "sign_in"}, "trigger", 'trigger must be an object like {"event": "match_won"}'),
    ({"trigger": {"event": "Level Up"}}, "trigger.event",
     "trigger.event must be 1-64 of a-z 0-9 _ . : -, got 'Level Up'"),
    ({"trigger": {}}, "trigger.event",
     "trigger.event must be 1-64 of a-z 0-9 _ . : -, got null"),
    ({"trigger": {"event": "quest_completed"}}, "trigger.event",
     "trigger.event 'quest_completed' is a history type, not a gameplay event"),
    ({"trigger": {"event": "x", "when": {}}}, "trigger.when", "trigger has no field 'when'"),
    ({"trigger": {"event": "x", "where": []}}, "trigger.where",
     "trigger.where must be an object: {attr: condition}"),
    ({"trigger": {"event": "x", "where": {"mode": {"gt": 3}}}}, "trigger.where.mode",
     "trigger.where.mode: unknown operator 'gt' (use a value, in, gte, lte or ne)"),
    ({"trigger": {"event": "x", "where": {"mode": {}}}}, "trigger.where.mode",
     "trigger.where.mode is empty (use a value, in, gte, lte or ne)"),
    ({"trigger": {"event": "x", "where": {"level": {"gte": "ten"}}}}, "trigger.where.level.gte",
     "trigger.where.level.gte must be a number, got 'ten'"),
    ({"trigger": {"event": "x", "where": {"level": {"lte": True}}}}, "trigger.where.level.lte",
     "trigger.where.level.lte must be a number, got true"),
    ({"trigger": {"event": "x", "where": {"map": {"in": []}}}}, "trigger.where.map.in",
     "trigger.where.map.in must be a list of 1 to 100 values"),
    ({"trigger": {"event": "x", "where": {"map": {"in": "dust"}}}}, "trigger.where.map.in",
     "trigger.where.map.in must be a list of 1 to 100 values"),
    ({"trigger": {"event": "x", "where": {"map": {"in": [["dust"]]}}}}, "trigger.where.map.in",
     "trigger.where.map.in must be a string, number or boolean, got ['dust']"),
    ({"trigger": {"event": "x", "where": {"name": "n" * 257}}}, "trigger.where.name",
     "trigger.where.name: strings are at most 256 characters"),
    ({"trigger": {"event": "x", "where": {"score": float("nan")}}}, "trigger.where.score",
     "trigger.where.score must be a string, number or boolean, got nan"),
    ({"trigger": {"event": "x", "where": {"": 1}}}, "trigger.where",
     "attribute names are 1-64 characters, got ''"),
    ({"trigger": {"event": "x", "where": {f"a{n}": n for n in range(17)}}}, "trigger.where",
     "trigger.where has 17 attributes (at most 16)"),
]


@pytest.mark.parametrize(("fields", "field", "message"), INVALID)
def test_invalid_definitions_say_what_to_fix(
    fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(QuestInvalid) as caught:
        parse_quest({"target": 1, "rewards": BUNDLE, **fields})
    assert (caught.value.field, caught.value.detail) == (field, message)


VALID_EDGES = [
    {"reset_at": "23:59"},
    {"reset_at": time(4, 0)},
    {"timezone": "UTC"},
    {"timezone": "Asia/Kathmandu"},
    {"measure": "consecutive", "period": "day", "grace_periods": 2},
    {"grace_periods": 0},  # zero is what every non-streak quest has
    {"measure": "consecutive", "period": "week", "max_per_period": 1},  # unused, accepted
    {"rewards": [{"item": "x" * 32, "qty": 10**6}] * 10},
    {"trigger": {"event": "a.b:c-d_9", "where": {"x": {"in": list(range(100))}}}},
    {"starts_at": datetime(2026, 7, 1, tzinfo=UTC)},
    {"duplication": None, "claim_within_seconds": None},
]


@pytest.mark.parametrize("fields", VALID_EDGES)
def test_valid_edges_are_accepted(fields: dict[str, Any]) -> None:
    assert parse_quest({"target": 1, "rewards": BUNDLE, **fields}).target == 1


# A catalog's requires links (quest -> required quests) -> the message, or None when fine.
GRAPHS = [
    ({1: [], 2: [1], 3: [1, 2]}, None),
    ({}, None),
    ({1: [], 2: [42]}, "requires names unknown quest 42"),
    ({3: [5], 5: [3]}, "requires forms a cycle: 3 -> 5 -> 3"),
    ({7: [7]}, "requires forms a cycle: 7 -> 7"),
    ({1: [2], 2: [3], 3: [4], 4: [2]}, "requires forms a cycle: 2 -> 3 -> 4 -> 2"),
    ({1: [4], 4: [9], 9: [6], 6: [4]}, "requires forms a cycle: 4 -> 9 -> 6 -> 4"),
    ({1: [2, 3], 2: [4], 3: [4], 4: []}, None),  # a diamond is no cycle
]


@pytest.mark.parametrize(("graph", "message"), GRAPHS)
def test_requires_across_the_catalog(graph: dict[int, list[int]], message: str | None) -> None:
    if message is None:
        check_requires(graph)
        return
    with pytest.raises(QuestInvalid) as caught:
        check_requires(graph)
    assert (caught.value.field, caught.value.detail) == ("requires", message)


def test_a_long_chain_is_checked_without_recursion_limits() -> None:
    chain = {n: [n - 1] if n > 1 else [] for n in range(1, 5001)}
    check_requires(chain)
    chain[1] = [5000]
    with pytest.raises(QuestInvalid, match="requires forms a cycle: 1 -> 5000 -> 4999"):
        check_requires(chain)
