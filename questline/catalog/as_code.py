"""The catalog as code: one document (YAML or JSON) holding the rewards and quests by name.

    rewards:
      Starter pack:
        items: [{item: gold, qty: 100}, {item: chest_epic, qty: 1}]
    quests:
      daily-login:
        reward: Starter pack
        target: 1
        period: day
        reset_at: "04:00"
        requires: [first-steps]      # quests by name

A quest entry takes the fields of POST /quests (API.md), with `reward` naming a reward
and `requires` naming quests, in the document or already in the catalog. A field left
out takes its default, as on creation: the document says what each quest it names is.

`apply` makes the catalog match the document through the catalog service, the same
functions and rules as the HTTP routes: it creates the rewards and quests that are
missing, updates those that differ, and deactivates (never deletes) the active quests
the document leaves out; rewards it leaves out stay as they are. `export` writes the
catalog in the same form, every field spelled out, so applying an export changes
nothing. Neither commits: the caller owns the transaction (one for the whole document).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import yaml
from sqlalchemy.orm import Session

from models import Quest, Reward
from questline.catalog import repository, service
from questline.engine import parse_quest
from questline.errors import DomainError, Invalid, QuestInvalid

# What a quest entry may hold: its definition (the engine's fields), and these.
QUEST_ENTRY_FIELDS = service.DEFINITION_FIELDS | {"description", "active", "reward"}
REWARD_ENTRY_FIELDS = frozenset({"items"})
# The order fields are written in (an export reads like a quest designer's file).
EXPORT_ORDER = ("description", "active", "reward", *service.DEFINITION_ORDER)


class Format(StrEnum):
    """How a catalog document is written."""

    YAML = "yaml"
    JSON = "json"


def format_of(file_name: str) -> Format:
    """The format a file's extension names: .yaml/.yml or .json."""
    extension = file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
    if extension in ("yaml", "yml"):
        return Format.YAML
    if extension == "json":
        return Format.JSON
    raise Invalid(f"{file_name}: name a .yaml, .yml or .json file (or give --format)")


# --- reading and writing documents ------------------------------------------------


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no hints
    """YAML 1.1 without its sexagesimal numbers, so that `reset_at: 10:30` is the text
    "10:30" and not the number 630; and a key given twice is an error rather than the
    last one silently winning."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (
        "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
    )]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _mapping_without_repeats(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_mapping(node, deep=True))


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def load(text: str, fmt: Format) -> object:
    """The document `text` holds; Invalid (with the line) when it is not YAML or JSON."""
    if fmt is Format.JSON:
        try:
            return json.loads(text, object_pairs_hook=_object_without_repeats)
        except ValueError as exc:
            raise Invalid(f"not a JSON document: {exc}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: builds plain values only
    except yaml.YAMLError as exc:
        raise Invalid(f"not a YAML document: {exc}") from None


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    counts = Counter(key for key, _ in pairs)
    repeated = [key for key, n in counts.items() if n > 1]
    if repeated:
        raise ValueError(f"{repeated[0]!r} is given twice")
    return dict(pairs)


def dump(document: Mapping[str, Any], fmt: Format) -> str:
    """`document` as text in `fmt`."""
    if fmt is Format.JSON:
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return str(yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, width=100))


# --- export ---------------------------------------------------------------------


def export(session: Session) -> dict[str, Any]:
    """The whole catalog (every reward, every quest, active or not) as a document."""
    rewards = repository.list_rewards(session)
    _unique_reward_names(rewards)
    quests = repository.list_quests(session, active_only=False)
    quest_names = {q.quest_id: q.name for q in quests}
    return {
        "rewards": {r.reward_name: _reward_entry(r) for r in rewards},
        "quests": {q.name: _quest_entry(q, quest_names) for q in quests},
    }


def _unique_reward_names(rewards: Sequence[Reward]) -> None:
    ids: dict[str, list[int]] = {}
    for reward in rewards:
        ids.setdefault(reward.reward_name, []).append(reward.reward_id)
    for name, found in ids.items():
        if len(found) > 1:
            raise Invalid(
                f"rewards {', '.join(map(str, found))} are all named {name!r}: a catalog file "
                "names each reward once"
            )


def _reward_entry(reward: Reward) -> dict[str, Any]:
    return {"items": service.reward_view(reward)["items"]}


def _quest_entry(quest: Quest, quest_names: Mapping[int, str]) -> dict[str, Any]:
    view = service.quest_view(quest)
    view["reward"] = quest.reward.reward_name
    view["requires"] = [quest_names.get(q, str(q)) for q in view["requires"]]
    return {name: view[name] for name in EXPORT_ORDER}


# --- apply ----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One thing an apply changed: `action` create, update or deactivate of a reward or a
    quest, with the fields that changed (before, after)."""

    action: str
    kind: str
    name: str
    fields: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.action == "update":
            what = "; ".join(
                f"{name} {_shown(old)} -> {_shown(new)}" for name, (old, new) in self.fields.items()
            )
            return f"update {self.kind} {self.name!r}: {what}"
        if self.action == "deactivate":
            return f"deactivate {self.kind} {self.name!r} (not in the file)"
        return f"create {self.kind} {self.name!r}"


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass
class _Document:
    rewards: dict[str, dict[str, Any]]
    quests: dict[str, dict[str, Any]]


def apply(session: Session, document: object) -> list[Change]:
    """Make the catalog match `document` (see the module docstring); what changed, in
    order. Raises Invalid (or QuestInvalid) saying where the document is wrong; the
    caller then rolls back, as it does for a dry run."""
    wanted = _read(document)
    before = _snapshot(session)
    reward_ids = _apply_rewards(session, wanted.rewards)
    quest_ids = {q.name: q.quest_id for q in repository.list_quests(session, active_only=False)}
    _known_requirements(wanted.quests, quest_ids)
    for name, entry in wanted.quests.items():
        with _at(f"quest {name!r}"):
            _put_quest(session, name, entry, reward_ids, quest_ids)
    for name, entry in wanted.quests.items():
        with _at(f"quest {name!r}"):
            required = sorted({quest_ids[n] for n in entry.get("requires", [])})
            stored = repository.get_quest(session, quest_ids[name])
            if stored is not None and list(stored.requires or []) != required:
                service.update_quest(session, quest_ids[name], requires=required)
    for quest in repository.list_quests(session, active_only=True):
        if quest.name not in wanted.quests:
            service.update_quest(session, quest.quest_id, active=False)
    return _changes(before, _snapshot(session), set(wanted.quests))


def _read(document: object) -> _Document:
    """The document's shape (the service checks the values)."""
    if not isinstance(document, Mapping):
        raise Invalid("a catalog file holds a mapping with `rewards` and `quests`")
    unknown = sorted(str(k) for k in document if k not in ("rewards", "quests"))
    if unknown:
        raise Invalid(f"a catalog file has no section {unknown[0]!r} (rewards, quests)")
    return _Document(
        rewards=_entries(document, "rewards", REWARD_ENTRY_FIELDS),
        quests=_entries(document, "quests", QUEST_ENTRY_FIELDS),
    )


def _entries(
    document: Mapping[Any, Any], section: str, allowed: frozenset[str]
) -> dict[str, dict[str, Any]]:
    raw = document.get(section) or {}
    if not isinstance(raw, Mapping):
        raise Invalid(f"{section} must be a mapping of names to {section[:-1]} fields")
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in raw.items():
        if not isinstance(name, str):
            raise Invalid(f"{section}: names are text, got {name!r}")
        where = f"{section}.{name}"
        if not isinstance(entry, Mapping):
            raise Invalid(f"{where} must be a mapping of fields")
        unknown = sorted(str(k) for k in entry if k not in allowed)
        if unknown:
            raise Invalid(f"{where} has no field {unknown[0]!r}")
        entries[name] = dict(entry)
    return entries


def _apply_rewards(session: Session, wanted: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Create or update the document's rewards; every reward name the document may use
    -> its id (the catalog's unique names, and the document's)."""
    stored = repository.list_rewards(session)
    by_name: dict[str, list[Reward]] = {}
    for reward in stored:
        by_name.setdefault(reward.reward_name, []).append(reward)
    ids = {name: found[0].reward_id for name, found in by_name.items() if len(found) == 1}
    for name, entry in wanted.items():
        with _at(f"reward {name!r}"):
            found = by_name.get(name, [])
            if len(found) > 1:
                rewards = ", ".join(str(r.reward_id) for r in found)
                raise Invalid(f"the catalog holds several rewards of this name ({rewards})")
            if found:
                service.update_reward(session, found[0].reward_id, items=entry.get("items"))
            else:
                reward = service.create_reward(session, reward_name=name, items=entry.get("items"))
                ids[name] = reward.reward_id
    return ids


def _known_requirements(quests: Mapping[str, Mapping[str, Any]], known: Mapping[str, int]) -> None:
    for name, entry in quests.items():
        requires = entry.get("requires", [])
        if not isinstance(requires, list) or not all(isinstance(n, str) for n in requires):
            raise Invalid(f"quest {name!r}: requires must be a list of quest names")
        for required in requires:
            if required not in quests and required not in known:
                raise Invalid(f"quest {name!r}: requires names unknown quest {required!r}")


def _put_quest(
    session: Session,
    name: str,
    entry: Mapping[str, Any],
    reward_ids: Mapping[str, int],
    quest_ids: dict[str, int],
) -> None:
    """Create or update one quest to match its entry; its `requires` are set afterwards
    (they may name quests created after it), so an existing quest whose requirements
    change loses them meanwhile (a subset of an acyclic graph stays acyclic)."""
    reward = entry.get("reward")
    if not isinstance(reward, str):
        raise Invalid("reward must name a reward")
    if reward not in reward_ids:
        raise Invalid(f"reward names unknown reward {reward!r}")
    definition = {
        k: v for k, v in entry.items() if k in service.DEFINITION_FIELDS and k != "requires"
    }
    fields = {
        "description": entry.get("description", ""),
        "active": entry.get("active", True),
        "reward_id": reward_ids[reward],
    }
    if name not in quest_ids:
        quest = service.create_quest(session, name=name, **fields, **definition)
        quest_ids[name] = quest.quest_id
        return
    stored = repository.get_quest(session, quest_ids[name])
    bundle = repository.get_reward(session, reward_ids[reward])
    if stored is None or bundle is None:
        raise Invalid("changed while being applied")  # deleted by hand meanwhile
    # Every definition field, spelled out: a field the entry leaves out is the default.
    accepted = parse_quest({**definition, "reward": service.reward_view(bundle)})
    full = service.definition_fields(accepted, definition.get("trigger"))
    del full["requires"]
    requires = entry.get("requires", [])
    known = {quest_ids[n] for n in requires if n in quest_ids}
    if len(known) < len(set(requires)) or sorted(known) != list(stored.requires or []):
        full["requires"] = []
    service.update_quest(session, quest_ids[name], **fields, **full)


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Errors of the service, located in the document."""
    try:
        yield
    except QuestInvalid as exc:
        raise QuestInvalid(exc.field, f"{where}: {exc.detail}") from None
    except DomainError as exc:
        raise Invalid(f"{where}: {exc.detail}") from None


def _snapshot(session: Session) -> dict[str, dict[int, dict[str, Any]]]:
    """Every reward and quest as the document shows it, by id."""
    quests = repository.list_quests(session, active_only=False)
    names = {q.quest_id: q.name for q in quests}
    return {
        "rewards": {
            r.reward_id: {"name": r.reward_name, **_reward_entry(r)}
            for r in repository.list_rewards(session)
        },
        "quests": {q.quest_id: {"name": q.name, **_quest_entry(q, names)} for q in quests},
    }


def _changes(
    before: Mapping[str, Mapping[int, Mapping[str, Any]]],
    after: Mapping[str, Mapping[int, Mapping[str, Any]]],
    in_document: set[str],
) -> list[Change]:
    changes: list[Change] = []
    for kind, section in (("reward", "rewards"), ("quest", "quests")):
        for key, now in after[section].items():
            then = before[section].get(key)
            if then is None:
                changes.append(Change("create", kind, now["name"]))
                continue
            fields = {f: (then[f], now[f]) for f in now if then.get(f) != now[f]}
            if not fields:
                continue
            if kind == "quest" and now["name"] not in in_document and list(fields) == ["active"]:
                changes.append(Change("deactivate", kind, now["name"]))
            else:
                changes.append(Change("update", kind, now["name"], fields))
    return changes
