"""Catalog reads (through the cache) and admin writes. Never commits.

The HTTP routes and `questline quests apply` write through the same functions, so
they accept and refuse the same things:
- a quest's definition is read by the engine (questline.engine.parse_quest): a write
  builds the definition the quest will have, the engine accepts it or raises
  QuestInvalid naming the field, and what the engine accepted is stored; `requires`
  is checked against every stored quest (check_requires);
- a reward's bundle is read by the engine too (parse_rewards);
- names and descriptions are checked here.
Every write that changes something bumps the catalog version in its transaction
(cache.catalog_changed), before it touches any player's rows (the lock order), so reads
through any cache, and the workers' catalog source, see it as soon as it commits.
A write that changes nothing writes nothing and leaves the version alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Quest, Reward
from models.base import utcnow
from questline.catalog import cache, repository
from questline.engine import (
    QuestDef,
    QuestInvalid,
    RewardItem,
    check_requires,
    parse_quest,
    parse_rewards,
)
from questline.errors import Conflict, Invalid, NotFound
from questline.quests import history as quest_history
from questline.quests import repository as quests_repository
from questline.quests.history import reward_claimed_entry
from questline.wallet import repository as wallet

# The fields of a quest the engine reads (API.md "Quests, general form"), in the order a
# quest designer writes them; v1's `streak` is another name for `target`.
DEFINITION_ORDER = (
    "auto_claim",
    "target",
    "duplication",
    "trigger",
    "measure",
    "period",
    "reset_at",
    "week_starts_on",
    "timezone",
    "max_per_period",
    "grace_periods",
    "requires",
    "starts_at",
    "ends_at",
    "claim_within_seconds",
)
DEFINITION_FIELDS = frozenset({*DEFINITION_ORDER, "streak"})
# The fields of a quest beside its definition.
_QUEST_COLUMNS = frozenset({"name", "description", "active", "reward_id"})
NAME_MAX = 100
DESCRIPTION_MAX = 2000
_NEW_QUEST = 0  # stands for a quest not stored yet in the requires graph (ids start at 1)


def reward_view(reward: Reward) -> dict[str, Any]:
    """A reward as the API shows it: the bundle, and its first line as v1's fields."""
    items = reward.items or [{"item": reward.reward_item, "qty": reward.reward_qty}]
    return {
        "reward_id": reward.reward_id,
        "reward_name": reward.reward_name,
        "reward_item": reward.reward_item,
        "reward_qty": reward.reward_qty,
        "items": [{"item": line["item"], "qty": line["qty"]} for line in items],
    }


def quest_view(quest: Quest) -> dict[str, Any]:
    """A quest as the API shows it: v1's fields, then v2's. It is also the form the
    engine reads (parse_quest), so the view of a stored quest is its definition."""
    return {
        "quest_id": quest.quest_id,
        "name": quest.name,
        "description": quest.description,
        "auto_claim": quest.auto_claim,
        "streak": quest.streak,
        "duplication": quest.duplication,
        "active": quest.active,
        "reward": reward_view(quest.reward),
        "trigger": quest.trigger,
        "measure": quest.measure,
        "target": quest.streak,
        "period": quest.period,
        "reset_at": quest.reset_at,
        "week_starts_on": quest.week_starts_on,
        "timezone": quest.timezone,
        # The column holds the limit itself: null is "no limit", not "the default".
        "max_per_period": quest.max_per_period,
        "grace_periods": quest.grace_periods,
        "requires": list(quest.requires or []),
        "starts_at": _iso(quest.starts_at),
        "ends_at": _iso(quest.ends_at),
        "claim_within_seconds": quest.claim_within_seconds,
    }


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


# --- reads (through the cache) ------------------------------------------------


def list_quests(session: Session) -> list[dict[str, Any]]:
    """Active quests ordered by quest_id."""
    return list(shared_quest_list(session))


def shared_quest_list(session: Session) -> list[dict[str, Any]]:
    """Active quests ordered by quest_id: the cached list itself, the same object for
    every read of one catalog version in this process (so callers may keep what they
    derive from it, such as its JSON, beside it). Never change it."""
    value: list[dict[str, Any]] = cache.cached(
        session, "quests", lambda: [quest_view(q) for q in repository.list_quests(session)]
    )
    return value


def peek_quest_list() -> list[dict[str, Any]] | None:
    """shared_quest_list() when this process can answer it without any I/O, else None."""
    value = cache.peek("quests")
    if value is cache.MISSING:
        return None
    shared: list[dict[str, Any]] = value
    return shared


def get_quest(session: Session, quest_id: int) -> dict[str, Any]:
    """One quest, active or not; NotFound if there is none."""

    def load() -> dict[str, Any] | None:
        quest = repository.get_quest(session, quest_id)
        return None if quest is None else quest_view(quest)

    view = cache.cached(session, f"quest:{quest_id}", load)
    if view is None:
        raise NotFound("quest not found")
    return dict(view)


def list_rewards(session: Session) -> list[dict[str, Any]]:
    """Every reward, ordered by reward_id."""
    return list(
        cache.cached(
            session, "rewards", lambda: [reward_view(r) for r in repository.list_rewards(session)]
        )
    )


def get_reward(session: Session, reward_id: int) -> dict[str, Any]:
    """One reward; NotFound if there is none."""

    def load() -> dict[str, Any] | None:
        reward = repository.get_reward(session, reward_id)
        return None if reward is None else reward_view(reward)

    view = cache.cached(session, f"reward:{reward_id}", load)
    if view is None:
        raise NotFound("reward not found")
    return dict(view)


# --- rewards --------------------------------------------------------------------


def create_reward(
    session: Session,
    *,
    reward_name: object,
    items: object = None,
    reward_item: object = None,
    reward_qty: object = None,
) -> Reward:
    """Create a reward from a bundle (`items`) or v1's single item; Invalid naming the
    field otherwise."""
    name = _text("reward_name", reward_name, max_length=NAME_MAX, blank=False)
    bundle = _bundle(items=items, reward_item=reward_item, reward_qty=reward_qty)
    _catalog_written(session)
    reward = Reward(reward_name=name, **_reward_columns(bundle))
    session.add(reward)
    session.flush()
    return reward


def update_reward(session: Session, reward_id: int, *, items: object) -> Reward:
    """Give a reward another bundle (future grants of every quest using it). Nothing is
    written when the bundle is the same."""
    reward = repository.get_reward(session, reward_id)
    if reward is None:
        raise NotFound("reward not found")
    columns = _reward_columns(_bundle(items=items, reward_item=None, reward_qty=None))
    if reward_view(reward)["items"] == columns["items"]:
        return reward
    _catalog_written(session)
    for name, value in columns.items():
        setattr(reward, name, value)
    session.flush()
    return reward


def _bundle(*, items: object, reward_item: object, reward_qty: object) -> tuple[RewardItem, ...]:
    if items is None:
        if reward_item is None and reward_qty is None:
            raise Invalid(
                "items is required: a bundle [{item, qty}, ...] (or v1's reward_item and "
                "reward_qty)"
            )
        return _single_item(reward_item, reward_qty)
    bundle = parse_rewards(items, field="items")
    first = bundle[0]
    if (reward_item is not None and reward_item != first.item) or (
        reward_qty is not None and reward_qty != first.qty
    ):
        raise Invalid("reward_item and reward_qty must repeat the first line of items")
    return bundle


def _single_item(reward_item: object, reward_qty: object) -> tuple[RewardItem, ...]:
    """v1's reward_item/reward_qty: a bundle of one line, read by the engine, with its
    messages naming the v1 fields."""
    try:
        return parse_rewards([{"item": reward_item, "qty": reward_qty}], field="reward")
    except QuestInvalid as exc:
        field = "reward_item" if exc.field.endswith(".item") else "reward_qty"
        raise QuestInvalid(field, exc.detail.replace(exc.field, field)) from None


def _reward_columns(bundle: tuple[RewardItem, ...]) -> dict[str, Any]:
    return {
        "reward_item": bundle[0].item,
        "reward_qty": bundle[0].qty,
        "items": [{"item": line.item, "qty": line.qty} for line in bundle],
    }


# --- quests ---------------------------------------------------------------------


def create_quest(
    session: Session,
    *,
    name: object,
    reward_id: object,
    description: object = "",
    active: object = True,
    **definition: Any,
) -> Quest:
    """Create a quest from its name, reward and definition fields (absent ones take the
    engine's defaults). Invalid/QuestInvalid naming the field, Conflict for a taken name."""
    _only_definition_fields(definition)
    name = _text("name", name, max_length=NAME_MAX, blank=False)
    columns: dict[str, Any] = {
        "name": name,
        "description": _text("description", description, max_length=DESCRIPTION_MAX, blank=True),
        "active": _flag("active", active),
    }
    reward = _reward_for(session, reward_id)
    quest_def = parse_quest({**definition, "reward": reward_view(reward)})
    _storable("trigger", definition.get("trigger"))
    _check_requires(session, _NEW_QUEST, quest_def.requires)
    if repository.get_quest_by_name(session, name) is not None:
        raise Conflict("quest name already taken")
    _catalog_written(session)
    quest = Quest(
        reward_id=reward.reward_id,
        **columns,
        **_definition_columns(quest_def, definition.get("trigger")),
    )
    session.add(quest)
    _flush_unique_name(session)
    return quest


def update_quest(session: Session, quest_id: int, **changes: Any) -> Quest:
    """Change any of a quest's fields; the others keep their values (max_per_period
    follows a new period's default when it held the old period's default). Lowering
    duplication below what a player has completed is a Conflict; switching to auto_claim
    credits the rewards still waiting. Nothing is written when nothing changes."""
    quest = repository.get_quest(session, quest_id, for_update=True)
    if quest is None:
        raise NotFound("quest not found")
    _only_definition_fields({k: v for k, v in changes.items() if k not in _QUEST_COLUMNS})
    definition = {k: v for k, v in changes.items() if k in DEFINITION_FIELDS}
    columns: dict[str, Any] = {}
    if "name" in changes:
        columns["name"] = _text("name", changes["name"], max_length=NAME_MAX, blank=False)
    if "description" in changes:
        columns["description"] = _text(
            "description", changes["description"], max_length=DESCRIPTION_MAX, blank=True
        )
    if "active" in changes:
        columns["active"] = _flag("active", changes["active"])
    reward = quest.reward
    if "reward_id" in changes:
        reward = _reward_for(session, changes["reward_id"])
        columns["reward_id"] = reward.reward_id
    if definition or reward is not quest.reward:
        quest_def = parse_quest(_merged_definition(quest, definition, reward))
        _storable("trigger", definition.get("trigger"))
        trigger = definition["trigger"] if "trigger" in definition else quest.trigger
        columns.update(_definition_columns(quest_def, trigger))
        if list(quest_def.requires) != list(quest.requires or []):
            _check_requires(session, quest_id, quest_def.requires)
    columns = {k: v for k, v in columns.items() if getattr(quest, k) != v}
    if not columns:
        return quest
    new_name = columns.get("name")
    if new_name is not None and repository.get_quest_by_name(session, new_name) is not None:
        raise Conflict("quest name already taken")
    # Before reading any player's completions: a drain in flight holds the version
    # FOR SHARE, so this waits for it, and no grant starts until this write commits.
    _catalog_written(session)
    new_cap = columns.get("duplication")
    if new_cap is not None:
        done = repository.max_completions(session, quest_id)
        if new_cap < done:
            raise Conflict(f"duplication cannot go below {done}: a user has completed it so often")
    settle = columns.get("auto_claim") is True
    for field, value in columns.items():
        setattr(quest, field, value)
    _flush_unique_name(session)
    if settle:
        _credit_waiting_rewards(session, quest_id)
    session.refresh(quest)
    return quest


def _merged_definition(
    quest: Quest, changes: Mapping[str, Any], reward: Reward
) -> dict[str, Any]:
    """The definition the quest will have: its stored one with `changes` on top."""
    stored = quest_view(quest)
    merged = {k: v for k, v in stored.items() if k in DEFINITION_FIELDS}
    merged["quest_id"] = quest.quest_id
    merged["reward"] = reward_view(reward)
    if "target" in changes or "streak" in changes:
        # The stored number is both; the change says which it becomes.
        del merged["target"], merged["streak"]
    if "period" in changes and "max_per_period" not in changes:
        if _is_default(merged, "max_per_period"):
            del merged["max_per_period"]
    merged.update(changes)
    return merged


def _is_default(definition: Mapping[str, Any], field: str) -> bool:
    """Whether `field` holds the value the engine gives it when it is left out."""
    without = {k: v for k, v in definition.items() if k != field}
    return bool(getattr(parse_quest(without), field) == definition[field])


def definition_fields(quest: QuestDef, trigger: object) -> dict[str, Any]:
    """A definition the engine accepted, every field spelled out in the form the API
    takes (`trigger` as written, since it was accepted as it is; the engine's default
    when absent). Writing these fields gives exactly this definition."""
    return {
        "auto_claim": quest.auto_claim,
        "target": quest.target,
        "duplication": quest.duplication,
        "trigger": dict(trigger) if isinstance(trigger, Mapping) else {"event": "sign_in"},
        "measure": quest.measure.value,
        "period": quest.period.value,
        "reset_at": quest.reset_at.strftime("%H:%M"),
        "week_starts_on": quest.week_starts_on.value,
        "timezone": quest.timezone,
        "max_per_period": quest.max_per_period,
        "grace_periods": quest.grace_periods,
        "requires": list(quest.requires),
        "starts_at": quest.starts_at,
        "ends_at": quest.ends_at,
        "claim_within_seconds": quest.claim_within_seconds,
    }


def _definition_columns(quest: QuestDef, trigger: object) -> dict[str, Any]:
    """The quest columns holding a definition the engine accepted (streak is the target)."""
    columns = definition_fields(quest, trigger)
    columns["streak"] = columns.pop("target")
    return columns


def _check_requires(session: Session, quest_id: int, requires: tuple[int, ...]) -> None:
    """The catalog's requires links with this quest's new ones: no unknown quest, no cycle."""
    graph = {
        q.quest_id: list(q.requires or [])
        for q in repository.list_quests(session, active_only=False)
    }
    graph[quest_id] = list(requires)
    check_requires(graph)


def _reward_for(session: Session, reward_id: object) -> Reward:
    if isinstance(reward_id, bool) or not isinstance(reward_id, int) or reward_id < 1:
        raise Invalid("reward_id must be a reward's id")
    reward = repository.get_reward(session, reward_id) if reward_id < 2**63 else None
    if reward is None:
        raise Invalid("reward_id does not name a reward")
    return reward


def _only_definition_fields(fields: Mapping[str, Any]) -> None:
    unknown = sorted(set(fields) - DEFINITION_FIELDS)
    if unknown:
        raise Invalid(f"a quest has no field {unknown[0]!r}")


def _text(field: str, value: object, *, max_length: int, blank: bool) -> str:
    """Text the catalog stores: a string of at most `max_length` characters, not blank
    unless allowed."""
    if not isinstance(value, str):
        raise Invalid(f"{field} must be text")
    if len(value) > max_length:
        raise Invalid(f"{field} must be at most {max_length} characters")
    if not blank and not re.search(r"\S", value):
        raise Invalid(f"{field} must not be blank")
    _storable(field, value)
    return value


def _storable(field: str, value: object) -> None:
    """Every string in `value` can be stored: valid Unicode, no NUL (PostgreSQL text and
    JSON hold neither a lone surrogate nor NUL)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid(f"{field} must be valid Unicode text") from None
        if "\x00" in value:
            raise Invalid(f"{field} must not contain NUL characters")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _storable(field, key)
            _storable(f"{field}.{key}", item)
    elif isinstance(value, list | tuple):
        for n, item in enumerate(value):
            _storable(f"{field}[{n}]", item)


def _flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{field} must be true or false")
    return value


def _catalog_written(session: Session) -> None:
    """Count this write in the catalog version, in its transaction. It share-blocks
    against drains (which read the version FOR SHARE), so it comes after the catalog
    rows and before any player's rows. After the commit this process drops its cached
    copies of older versions (cache.catalog_changed: the one after-commit hook)."""
    cache.catalog_changed(session)


def _credit_waiting_rewards(session: Session, quest_id: int) -> None:
    """A quest switched to auto-claim credits the rewards still waiting to be claimed
    (expired ones stay expired): the contract says an auto-claim quest never has anything
    claimable. Each bundle is credited under its reward row ("user_reward:{id}"), so it
    can never be paid twice."""
    now = utcnow()
    settled = quests_repository.settle_waiting_rewards(session, quest_id, now=now)
    if not settled:
        return
    wallet.credit(
        session,
        [
            wallet.Credit(
                row.user_id, line["item"], line["qty"], f"user_reward:{row.user_reward_id}"
            )
            for row in settled
            for line in row.items
        ],
        now=now,
    )
    quest_history.add(
        session,
        [
            reward_claimed_entry(
                user_id=row.user_id,
                quest_id=quest_id,
                user_reward_id=row.user_reward_id,
                completion_no=row.completion_no,
                items=row.items,
                now=now,
                auto_claim=True,
            )
            for row in sorted(settled, key=lambda r: r.user_reward_id)
        ],
    )


def _flush_unique_name(session: Session) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("quest name already taken") from None
