"""`questline quests apply FILE [--dry-run]` and `questline quests export`, run as an
operator runs them (a `questline` process on the test database), checked over real HTTP:
export then apply changes nothing, apply creates and updates to match and never deletes,
a dry run changes nothing, and a bad file changes nothing and says where it is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from models import UserQuestProgress
from questline.catalog import repository
from questline.commands import cli
from questline.infra import db
from tests import factories as f
from tests import support

QUESTLINE = str(Path(sys.executable).with_name("questline"))


def questline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QUESTLINE, *args], env=support.child_env(), capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def admin() -> dict[str, str]:
    with db.transaction() as session:
        return f.bearer(f.add_user(session, role="admin").user_id, role="admin")


def catalog_version() -> int:
    with db.transaction() as session:
        return repository.catalog_version(session)


def whole_catalog(client: httpx.Client, admin: dict[str, str]) -> dict[str, Any]:
    """Every reward and every quest, inactive ones included, as the API shows them."""
    rewards = client.get("/rewards", headers=admin).json()
    quests = []
    for quest_id in range(1, 100):
        r = client.get(f"/quests/{quest_id}", headers=admin)
        if r.status_code == 404:
            continue
        quests.append(r.json())
    return {"rewards": rewards, "quests": quests}


def post(client: httpx.Client, admin: dict[str, str], path: str, body: Any) -> dict[str, Any]:
    r = client.post(path, headers=admin, json=body)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def rich_catalog(client: httpx.Client, admin: dict[str, str]) -> None:
    """A catalog using every kind of field: bundles, shapes, a chain, a window, an
    inactive quest, a reset written like a YAML 1.1 number (10:30)."""
    bundle = [{"item": "gold", "qty": 100}, {"item": "key", "qty": 1}]
    pack = post(client, admin, "/rewards", {"reward_name": "Starter pack", "items": bundle})
    coins = post(
        client, admin, "/rewards", {"reward_name": "Coins", "reward_item": "coins", "reward_qty": 5}
    )
    daily = post(
        client,
        admin,
        "/quests",
        {
            "name": "daily-login",
            "reward_id": coins["reward_id"],
            "auto_claim": True,
            "target": 1,
            "period": "day",
            "reset_at": "10:30",
            "timezone": "Asia/Kathmandu",
        },
    )
    post(
        client,
        admin,
        "/quests",
        {
            "name": "ranked-week",
            "description": "Win 10 ranked matches a week",
            "reward_id": pack["reward_id"],
            "target": 10,
            "duplication": None,
            "trigger": {"event": "match_won", "where": {"mode": "ranked", "score": {"gte": 1.5}}},
            "period": "week",
            "week_starts_on": "sunday",
            "max_per_period": 2,
            "requires": [daily["quest_id"], 1],
            "starts_at": "2026-07-01T00:00:00+02:00",
            "ends_at": "2026-09-01T00:00:00Z",
            "claim_within_seconds": 86400,
        },
    )
    streak = post(
        client,
        admin,
        "/quests",
        {
            "name": "login-streak",
            "reward_id": pack["reward_id"],
            "measure": "consecutive",
            "period": "day",
            "target": 7,
            "grace_periods": 1,
            "duplication": 1,
        },
    )
    r = client.patch(f"/quests/{streak['quest_id']}", headers=admin, json={"active": False})
    assert r.status_code == 200


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_applying_an_export_changes_nothing(
    client: httpx.Client, admin: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    rich_catalog(client, admin)
    seen, version = whole_catalog(client, admin), catalog_version()

    exported = questline("quests", "export", "--format", fmt)
    assert exported.returncode == 0, exported.stderr
    document = yaml.safe_load(exported.stdout) if fmt == "yaml" else json.loads(exported.stdout)
    assert list(document) == ["rewards", "quests"]
    assert list(document["quests"]) == [
        "sign-in-three-times", "daily-login", "ranked-week", "login-streak"
    ]
    ranked = document["quests"]["ranked-week"]
    assert ranked["reward"] == "Starter pack"
    assert ranked["requires"] == ["sign-in-three-times", "daily-login"]
    assert document["quests"]["daily-login"]["reset_at"] == "10:30"
    assert document["quests"]["login-streak"]["active"] is False
    assert document["rewards"]["Starter pack"] == {
        "items": [{"item": "gold", "qty": 100}, {"item": "key", "qty": 1}]
    }

    file = tmp_path / f"catalog.{fmt}"
    file.write_text(exported.stdout)
    applied = questline("quests", "apply", str(file))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == "no changes: the catalog matches the file\n"
    assert catalog_version() == version
    assert whole_catalog(client, admin) == seen

    # Written to a file by name, the format follows the extension.
    named = tmp_path / "again.json"
    assert questline("quests", "export", "-o", str(named)).returncode == 0
    assert json.loads(named.read_text()) == document


DOCUMENT = """
rewards:
  Ten Diamonds:                 # the seed reward, now a bundle
    items: [{item: diamond, qty: 10}, {item: gold, qty: 5}]
  Season chest:
    items:
      - {item: chest_epic, qty: 1}
quests:
  season-finale:                # requires a quest created further down
    reward: Season chest
    trigger: {event: match_won, where: {season: 3}}
    target: 3
    requires: [season-opener]
    starts_at: 2026-07-01T00:00:00Z
    ends_at: "2026-10-01T00:00:00+00:00"
  season-opener:
    reward: Season chest
    trigger: {event: match_played}
    target: 1
    duplication: 1
  sign-in-three-times:
    description: Sign in five times
    reward: Ten Diamonds
    target: 5
    duplication: 2
  daily-bonus:
    reward: Ten Diamonds
    auto_claim: true
    target: 1
    period: day
    reset_at: 10:30               # YAML 1.1 would read 630; a catalog file reads "10:30"
"""

EXPECTED_CHANGES = [
    "update reward 'Ten Diamonds': items [{\"item\": \"diamond\", \"qty\": 10}] -> "
    '[{"item": "diamond", "qty": 10}, {"item": "gold", "qty": 5}]',
    "create reward 'Season chest'",
    "update quest 'sign-in-three-times': description "
    '"Sign in three times to earn ten diamonds; can be earned twice." -> "Sign in five times"; '
    "target 3 -> 5",
    "deactivate quest 'old-event' (not in the file)",
    "create quest 'season-finale'",
    "create quest 'season-opener'",
    "create quest 'daily-bonus'",
]


def test_apply_creates_and_updates_to_match_and_never_deletes(
    client: httpx.Client, admin: dict[str, str], tmp_path: Path
) -> None:
    old = post(client, admin, "/quests", {"name": "old-event", "reward_id": 1, "target": 2})
    file = tmp_path / "catalog.yaml"
    file.write_text(DOCUMENT)
    client.get("/quests", headers=admin)  # fills the read cache
    version = catalog_version()

    applied = questline("quests", "apply", str(file))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [*EXPECTED_CHANGES, "7 change(s) applied"]
    assert catalog_version() > version

    quests = {q["name"]: q for q in client.get("/quests", headers=admin).json()}
    assert list(quests) == [
        "sign-in-three-times", "season-finale", "season-opener", "daily-bonus"
    ]
    seed = quests["sign-in-three-times"]
    assert (seed["target"], seed["streak"], seed["duplication"]) == (5, 5, 2)
    assert seed["reward"]["items"] == [{"item": "diamond", "qty": 10}, {"item": "gold", "qty": 5}]
    finale, opener = quests["season-finale"], quests["season-opener"]
    assert finale["requires"] == [opener["quest_id"]]
    assert finale["trigger"] == {"event": "match_won", "where": {"season": 3}}
    assert finale["starts_at"] == "2026-07-01T00:00:00Z"
    assert finale["ends_at"] == "2026-10-01T00:00:00Z"
    assert finale["reward"]["items"] == [{"item": "chest_epic", "qty": 1}]
    bonus = quests["daily-bonus"]
    assert (bonus["period"], bonus["reset_at"], bonus["max_per_period"]) == ("day", "10:30", 1)
    # Not deleted: deactivated, and still readable.
    gone = client.get(f"/quests/{old['quest_id']}", headers=admin).json()
    assert (gone["name"], gone["active"]) == ("old-event", False)

    version = catalog_version()
    again = questline("quests", "apply", str(file))
    assert again.stdout == "no changes: the catalog matches the file\n", again.stderr
    assert catalog_version() == version


def test_a_field_left_out_takes_its_default(
    client: httpx.Client, admin: dict[str, str], tmp_path: Path
) -> None:
    post(
        client,
        admin,
        "/quests",
        {"name": "weekly", "reward_id": 1, "target": 2, "period": "week", "duplication": 4},
    )
    file = tmp_path / "catalog.json"
    file.write_text(
        json.dumps(
            {
                "quests": {
                    "sign-in-three-times": {
                        "description": "Sign in three times to earn ten diamonds; can be "
                        "earned twice.",
                        "reward": "Ten Diamonds",
                        "streak": 3,
                        "duplication": 2,
                    },
                    "weekly": {"reward": "Ten Diamonds", "target": 2},
                }
            }
        )
    )
    applied = questline("quests", "apply", str(file))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        "update quest 'weekly': duplication 4 -> null; period \"week\" -> \"none\"; "
        "max_per_period 1 -> null",
        "1 change(s) applied",
    ]


def test_a_dry_run_prints_the_changes_and_makes_none(
    client: httpx.Client, admin: dict[str, str], tmp_path: Path
) -> None:
    post(client, admin, "/quests", {"name": "old-event", "reward_id": 1, "target": 2})
    file = tmp_path / "catalog.yml"
    file.write_text(DOCUMENT)
    seen, version = whole_catalog(client, admin), catalog_version()

    dry = questline("quests", "apply", "--dry-run", str(file))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        *EXPECTED_CHANGES,
        "dry run: 7 change(s) would be made; nothing was written",
    ]
    assert catalog_version() == version
    assert whole_catalog(client, admin) == seen


# Each bad file: the document, and what the error must say. Nothing may change.
Q = "quests: {q: {reward: Ten Diamonds, target: 1"  # a quest entry, to be completed
BAD_FILES: list[tuple[str, str]] = [
    (Q + ", colour: red}}", "quests.q has no field 'colour'"),
    (Q + ", reset_at: '25:00'}}", "reset_at must be a time"),
    (Q + ", measure: consecutive}}", "needs a period"),
    (Q + ", timezone: Mars/Olympus}}", "timezone"),
    (Q + ", streak: 3}}", "target and streak disagree"),
    (Q + ", requires: [ghost]}}", "unknown quest 'ghost'"),
    ("quests: {q: {reward: Nothing, target: 1}}", "unknown reward 'Nothing'"),
    ("quests: {q: {target: 1}}", "reward must name a reward"),
    (
        "quests: {a: {reward: Ten Diamonds, target: 1, requires: [b]},"
        " b: {reward: Ten Diamonds, target: 1, requires: [a]}}",
        "requires forms a cycle",
    ),
    ("rewards: {Pack: {items: []}}", "reward 'Pack': items must hold 1 to 10 items"),
    ("rewards: {Pack: {items: [{item: Gold, qty: 1}]}}", "items[0].item"),
    ("rewards: {Pack: {items: [{item: gold, qty: 1}]}, Pack: {items: []}}", "given twice"),
    (Q + "}, q: {reward: Ten Diamonds, target: 2}}", "given twice"),
    ("quests: [a, b]", "quests must be a mapping"),
    ("reward: {}", "no section 'reward'"),
    (Q, "not a YAML document"),
    # The first quest is fine; the second is not: the file is applied whole or not at all.
    (
        "rewards: {Pack: {items: [{item: gold, qty: 1}]}}\n"
        "quests: {fine: {reward: Pack, target: 1}, bad: {reward: Pack, target: 0}}",
        "quest 'bad': target must be",
    ),
    (
        "quests: {sign-in-three-times: {reward: Ten Diamonds, target: 3, duplication: 1}}",
        "duplication cannot go below 2",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_file_is_refused_whole_and_says_where(
    client: httpx.Client,
    admin: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str,
) -> None:
    with db.transaction() as session:
        # A player has completed the seed quest twice (the duplication case).
        user = f.add_user(session)
        session.add(UserQuestProgress(user_id=user.user_id, quest_id=1, completions=2))
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    seen, version = whole_catalog(client, admin), catalog_version()
    for dry_run in ([], ["--dry-run"]):
        code = cli.main(["quests", "apply", *dry_run, str(file)])
        out, err = capsys.readouterr()
        assert code == 1, (out, err)
        assert message in err, err
        assert out == ""
    assert catalog_version() == version
    assert whole_catalog(client, admin) == seen


def test_export_refuses_a_catalog_it_cannot_name(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    twin = {"reward_name": "Ten Diamonds", "items": [{"item": "gold", "qty": 1}]}
    post(client, admin, "/rewards", twin)
    exported = questline("quests", "export")
    assert exported.returncode == 1
    assert "are all named 'Ten Diamonds'" in exported.stderr
    assert exported.stdout == ""


def test_a_file_of_another_kind_is_refused_before_anything(tmp_path: Path) -> None:
    file = tmp_path / "catalog.txt"
    file.write_text("quests: {}")
    done = questline("quests", "apply", str(file))
    assert done.returncode == 1
    assert "name a .yaml, .yml or .json file" in done.stderr
    missing = questline("quests", "apply", str(tmp_path / "nowhere.yaml"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
