"""The quest designer's guide (docs/quests.md) and its catalog (docs/examples/catalog.yaml)
hold true.

(a) The catalog applies with the real `questline` command: a dry run first, then for real,
    and a second apply changes nothing; the seed quest stays exactly as it was.
(b) Each example quest does what the guide says, on the pure engine, with the definitions
    the catalog service stores for the file (the same conversion the workers use). Every
    expected number is written by hand.
(c) Every curl example of the guide, run in order over real HTTP, gets the status the API
    promises; its events feed the quests the guide says; the /me/quests sample has the
    fields the API returns.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy.orm import Session

from questline.catalog import as_code, repository
from questline.catalog.definitions import quest_definition
from questline.engine import (
    AttrValue,
    Effect,
    EventIn,
    PeriodState,
    QuestCompleted,
    QuestDef,
    QuestProgressed,
    QuestState,
    QuestStatus,
    RewardEarned,
    RewardItem,
    evaluate,
    fold,
    quest_status,
    quest_view,
    requirements_met,
    sign_in,
)
from questline.engine.conditions import trigger_matches
from questline.infra import db
from tests import support
from tests.conftest import Player

CATALOG = support.ROOT / "docs" / "examples" / "catalog.yaml"
GUIDE = support.ROOT / "docs" / "quests.md"
QUESTLINE = str(Path(sys.executable).with_name("questline"))
TOKYO = "Asia/Tokyo"


def questline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QUESTLINE, *args], env=support.child_env(), capture_output=True, text=True, timeout=120
    )


def catalog_version() -> int:
    with db.transaction() as session:
        return repository.catalog_version(session)


# --- (a) the catalog file, applied as an operator applies it ---------------------------

NEW_IN_THE_FILE = [
    "create reward 'Daily coins'",
    "create reward 'Streak diamonds'",
    "create reward 'Ranked crate'",
    "create reward 'Winter bundle'",
    "create reward 'First match coins'",
    "create reward 'Rookie pack'",
    "create quest 'daily-login-bonus'",
    "create quest 'login-streak-7'",
    "create quest 'weekly-ranked-wins'",
    "create quest 'winter-season-5000'",
    "create quest 'chain-1-play-a-match'",
    "create quest 'chain-2-win-three'",
]


def test_the_example_catalog_applies_cleanly_once_and_leaves_the_seed_quest_alone(
    client: httpx.Client, admin: Player
) -> None:
    seed, seed_reward = (
        client.get(path, headers=admin.headers).json() for path in ("/quests/1", "/rewards/1")
    )
    version = catalog_version()

    # As the guide says to run it: the dry run first.
    dry = questline("quests", "apply", "docs/examples/catalog.yaml", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        *NEW_IN_THE_FILE,
        "dry run: 12 change(s) would be made; nothing was written",
    ]
    assert catalog_version() == version
    assert [q["name"] for q in client.get("/quests", headers=admin.headers).json()] == [
        "sign-in-three-times"
    ]

    applied = questline("quests", "apply", "docs/examples/catalog.yaml")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [*NEW_IN_THE_FILE, "12 change(s) applied"]

    quests = {q["name"]: q for q in client.get("/quests", headers=admin.headers).json()}
    assert list(quests) == [
        "sign-in-three-times",
        "daily-login-bonus",
        "login-streak-7",
        "weekly-ranked-wins",
        "winter-season-5000",
        "chain-1-play-a-match",
        "chain-2-win-three",
    ]
    # What the file says is what the catalog holds, field by field.
    document = yaml.safe_load(CATALOG.read_text())
    ids = {name: quest["quest_id"] for name, quest in quests.items()}
    for name, entry in document["quests"].items():
        stored = quests[name]
        for key, value in entry.items():
            if key == "reward":
                assert stored["reward"]["reward_name"] == value, name
            elif key == "requires":
                assert stored["requires"] == [ids[n] for n in value], name
            else:
                assert stored[key] == value, (name, key)
    assert quests["winter-season-5000"]["reward"]["items"] == [
        {"item": "gold", "qty": 500},
        {"item": "chest_epic", "qty": 1},
        {"item": "xp_boost", "qty": 2},
    ]
    assert quests["chain-2-win-three"]["requires"] == [quests["chain-1-play-a-match"]["quest_id"]]

    version = catalog_version()
    again = questline("quests", "apply", "docs/examples/catalog.yaml")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "no changes: the catalog matches the file\n"
    assert catalog_version() == version

    assert client.get("/quests/1", headers=admin.headers).json() == seed
    assert client.get("/rewards/1", headers=admin.headers).json() == seed_reward
    assert (seed["target"], seed["duplication"], seed["trigger"], seed["period"]) == (
        3,
        2,
        {"event": "sign_in"},
        "none",
    )


# --- (b) each example on the pure engine -----------------------------------------------


@pytest.fixture
def examples(session: Session) -> dict[str, QuestDef]:
    """The file's quests as the engine reads them once applied (the session is rolled
    back afterwards, so nothing is written)."""
    as_code.apply(session, as_code.load(CATALOG.read_text(), as_code.Format.YAML))
    session.flush()
    return {q.name: quest_definition(q) for q in repository.list_quests(session)}


_event_ids = count(1)


def event(kind: str, at: str, *, tz: str = "UTC", value: int = 1, **attrs: AttrValue) -> EventIn:
    """A gameplay event of one player at the ISO instant `at`."""
    return EventIn(
        event_id=next(_event_ids),
        user_id=7,
        type=kind,
        occurred_at=datetime.fromisoformat(at),
        tz=tz,
        value=Decimal(value),
        attrs=attrs,
    )


def login(at: str, tz: str = TOKYO) -> EventIn:
    return sign_in(next(_event_ids), 7, datetime.fromisoformat(at), tz)


def completed(effects: Sequence[Effect], quest: QuestDef) -> list[str]:
    """The period keys of the quest's completions, in order."""
    return [
        e.period_key
        for e in effects
        if isinstance(e, QuestCompleted) and e.quest_id == quest.quest_id
    ]


def counted(effects: Sequence[Effect], quest: QuestDef) -> int:
    """How many events moved the quest (one quest_progress each)."""
    return sum(
        1 for e in effects if isinstance(e, QuestProgressed) and e.quest_id == quest.quest_id
    )


def earned(effects: Sequence[Effect], quest: QuestDef) -> list[RewardEarned]:
    return [e for e in effects if isinstance(e, RewardEarned) and e.quest_id == quest.quest_id]


def test_the_daily_bonus_counts_once_per_local_day_which_turns_at_4(
    examples: dict[str, QuestDef],
) -> None:
    daily = examples["daily-login-bonus"]
    logins = [
        login("2026-03-10T03:59:00+09:00"),  # before 04:00 in Tokyo: still 9 March
        login("2026-03-10T04:00:00+09:00"),  # 10 March starts
        login("2026-03-10T21:00:00+09:00"),  # 10 March again: ignored
        login("2026-03-11T03:30:00+09:00"),  # still 10 March: ignored
        login("2026-03-11T04:05:00+09:00"),  # 11 March
    ]
    states, effects = fold([daily], {}, logins)
    assert completed(effects, daily) == ["2026-03-09", "2026-03-10", "2026-03-11"]
    assert counted(effects, daily) == 3  # the ignored logins record nothing
    assert states[daily.quest_id].completions == 3
    rewards = earned(effects, daily)
    assert [(r.items, r.auto_claim) for r in rewards] == [((RewardItem("gold", 100),), True)] * 3

    # One instant, two players: 19:30 UTC on 9 March is 04:30 on 10 March in Tokyo.
    for tz, day in (("UTC", "2026-03-09"), (TOKYO, "2026-03-10")):
        outcome = evaluate([daily], {}, login("2026-03-09T19:30:00+00:00", tz))
        assert completed(outcome.effects, daily) == [day], tz


def logins_on(days: Sequence[int]) -> list[EventIn]:
    """One login at noon (Tokyo) on each of these days of March 2026."""
    return [login(f"2026-03-{day:02d}T12:00:00+09:00") for day in days]


def test_the_streak_survives_one_missed_day_but_not_two(examples: dict[str, QuestDef]) -> None:
    streak = examples["login-streak-7"]

    # 4 March missed: 1-3 and 5-8 are one run of 7 login days.
    states, effects = fold([streak], {}, logins_on([1, 2, 3, 5, 6, 7]))
    assert completed(effects, streak) == []
    view = quest_view(
        streak,
        states[streak.quest_id],
        now=datetime.fromisoformat("2026-03-07T20:00:00+09:00"),
        user_tz=TOKYO,
    )
    assert (view.progress, view.best_streak) == (Decimal(6), 6)
    states, effects = fold([streak], {}, logins_on([1, 2, 3, 5, 6, 7, 8]))
    assert completed(effects, streak) == ["2026-03-08"]
    assert (states[streak.quest_id].completions, states[streak.quest_id].best_streak) == (1, 7)
    assert [r.items for r in earned(effects, streak)] == [(RewardItem("diamond", 50),)]

    # 4 and 5 March missed: the run of 3 ends; 6-11 is a new run of 6, 6-12 of 7.
    states, effects = fold([streak], {}, logins_on([1, 2, 3, 6, 7, 8, 9, 10, 11]))
    assert completed(effects, streak) == []
    assert states[streak.quest_id].best_streak == 6
    states, effects = fold([streak], {}, logins_on([1, 2, 3, 6, 7, 8, 9, 10, 11, 12]))
    assert completed(effects, streak) == ["2026-03-12"]


def ranked_win(at: str, tz: str = "UTC") -> EventIn:
    return event("match_end", at, tz=tz, result="win", mode="ranked")


def test_the_weekly_quest_counts_ranked_wins_only_once_a_week_on_utc_weeks(
    examples: dict[str, QuestDef],
) -> None:
    weekly = examples["weekly-ranked-wins"]
    # The week of Monday 2 March 2026 (UTC): 9 ranked wins, and what must not count.
    week = [ranked_win(f"2026-03-02T{hour}:00:00+00:00") for hour in range(10, 19)]
    week += [
        event("match_end", f"2026-03-03T1{n}:00:00+00:00", result="win", mode="casual")
        for n in range(5)
    ]
    week += [
        event("match_end", f"2026-03-04T1{n}:00:00+00:00", result="loss", mode="ranked")
        for n in range(4)
    ]
    week += [event("match_end", "2026-03-05T10:00:00+00:00", result="win")]  # no mode
    week += [event("score", "2026-03-05T11:00:00+00:00", value=10, result="win", mode="ranked")]
    states, effects = fold([weekly], {}, week)
    assert completed(effects, weekly) == []
    assert states[weekly.quest_id].periods == {"2026-03-02": PeriodState(Decimal(9), 0)}

    late = [
        # Monday 08:30 in Tokyo is Sunday 23:30 UTC: the 10th win of the UTC week.
        ranked_win("2026-03-09T08:30:00+09:00", tz=TOKYO),
        ranked_win("2026-03-08T23:59:59+00:00"),  # the 11th: over the weekly cap, ignored
        ranked_win("2026-03-09T00:00:00+00:00"),  # next week
    ]
    states, effects = fold([weekly], {}, week + late)
    assert completed(effects, weekly) == ["2026-03-02"]
    assert states[weekly.quest_id].periods == {
        "2026-03-02": PeriodState(Decimal(0), 1),
        "2026-03-09": PeriodState(Decimal(1), 0),
    }
    assert counted(effects, weekly) == 11  # 9 + the 10th + next week's first
    assert [r.items for r in earned(effects, weekly)] == [(RewardItem("chest_rare", 1),)]


def score(at: str, points: int) -> EventIn:
    return event("score", at, value=points, match_id="m-1")


WINTER_BUNDLE = (RewardItem("gold", 500), RewardItem("chest_epic", 1), RewardItem("xp_boost", 2))


def test_the_season_event_counts_only_points_inside_its_window(
    examples: dict[str, QuestDef],
) -> None:
    season = examples["winter-season-5000"]
    points = [
        score("2026-11-30T23:59:59+00:00", 4000),  # before the window
        score("2026-12-01T00:00:00+00:00", 3000),  # starts_at is in
        score("2027-02-28T23:59:59+00:00", 1999),  # the last second in
        score("2027-03-01T00:00:00+00:00", 3000),  # ends_at is out
        event("match_end", "2027-01-10T10:00:00+00:00", value=5000, result="win"),
    ]
    states, effects = fold([season], {}, points)
    assert completed(effects, season) == []
    assert states[season.quest_id].periods == {"": PeriodState(Decimal(4999), 0)}
    # What the player sees around the window, with 4999 points and nothing to claim.
    for now, status in (
        ("2026-11-30T12:00:00+00:00", QuestStatus.UPCOMING),
        ("2027-01-15T12:00:00+00:00", QuestStatus.IN_PROGRESS),
        ("2027-03-01T00:00:00+00:00", QuestStatus.ENDED),
    ):
        seen = quest_status(
            season,
            states[season.quest_id],
            now=datetime.fromisoformat(now),
            user_tz="UTC",
            claimable=0,
            unlocked=True,
        )
        assert seen is status, now

    states, effects = fold([season], {}, [*points, score("2027-01-15T12:00:00+00:00", 1)])
    assert completed(effects, season) == [""]
    assert states[season.quest_id].completions == 1


def test_the_winter_bundle_grants_every_item_and_expires_after_14_days(
    examples: dict[str, QuestDef],
) -> None:
    season = examples["winter-season-5000"]
    _, effects = fold([season], {}, [score("2026-12-24T18:00:00+00:00", 5000)])
    (reward,) = earned(effects, season)
    assert reward.items == WINTER_BUNDLE
    assert (reward.auto_claim, reward.expires_after_seconds) == (False, 14 * 24 * 3600)
    # duplication 1: a second 5000 points in the season earn nothing more.
    twice = [score("2026-12-24T18:00:00+00:00", 5000), score("2027-01-02T10:00:00+00:00", 5000)]
    _, effects = fold([season], {}, twice)
    assert len(earned(effects, season)) == 1


def test_the_chain_step_2_counts_nothing_before_step_1_is_completed(
    examples: dict[str, QuestDef],
) -> None:
    step1, step2 = examples["chain-1-play-a-match"], examples["chain-2-win-three"]
    assert step2.requires == (step1.quest_id,)

    # Alone, step 2 ignores wins: step 1 is not completed.
    alone = evaluate([step2], {}, ranked_win("2026-04-01T09:00:00+00:00"))
    assert (alone.states, alone.effects) == ({}, [])
    assert not requirements_met(step2, {})
    status = quest_status(
        step2,
        QuestState(),
        now=datetime.fromisoformat("2026-04-01T09:00:00+00:00"),
        user_tz="UTC",
        claimable=0,
        unlocked=False,
    )
    assert status is QuestStatus.LOCKED

    matches = [
        ranked_win("2026-04-01T10:00:00+00:00"),  # completes step 1 only
        ranked_win("2026-04-01T10:10:00+00:00"),  # step 2: 1
        event("match_end", "2026-04-01T10:20:00+00:00", result="win", mode="custom"),
        event("match_end", "2026-04-01T10:30:00+00:00", result="win"),  # no mode: ne fails
        event("match_end", "2026-04-01T10:40:00+00:00", result="loss", mode="casual"),
        event("match_end", "2026-04-01T10:50:00+00:00", result="win", mode="casual"),  # 2
    ]
    states, effects = fold([step1, step2], {}, matches)
    assert states[step1.quest_id].completions == 1
    assert [r.items for r in earned(effects, step1)] == [(RewardItem("gold", 50),)]
    assert states[step2.quest_id] == QuestState(periods={"": PeriodState(Decimal(2), 0)})

    states, effects = fold([step1, step2], {}, [*matches, ranked_win("2026-04-01T11:00:00+00:00")])
    assert completed(effects, step2) == [""]
    assert [r.items for r in earned(effects, step2)] == [
        (RewardItem("gold", 200), RewardItem("xp_boost", 1))
    ]


# --- (c) the guide's curl examples, over real HTTP --------------------------------------

BASE_URL = "http://localhost:8000"


@dataclass
class Curl:
    """One curl command of the guide."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


def guide_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), flags=re.S)


def guide_curls() -> list[Curl]:
    """Every curl command in the guide's sh blocks, in order, read as the shell reads it."""
    curls: list[Curl] = []
    for block in guide_blocks("sh"):
        words = shlex.split(block.replace("\\\n", " "), comments=True)
        while "curl" in words:
            start = words.index("curl")
            end = words.index("curl", start + 1) if "curl" in words[start + 1 :] else len(words)
            curls.append(_curl(words[start + 1 : end]))
            words = words[end:]
    return curls


def _curl(args: list[str]) -> Curl:
    method, url, headers, body = None, None, {}, None
    options = iter(args)
    for arg in options:
        if arg == "-X":
            method = next(options)
        elif arg == "-H":
            name, value = next(options).split(": ", 1)
            headers[name] = value
        elif arg == "-d":
            body = json.loads(next(options))
        elif arg.startswith("http"):
            url = arg
        else:
            assert arg == "-sS", f"a curl option the test does not know: {arg}"
    assert url is not None
    assert url.startswith(BASE_URL), url
    return Curl(
        method or ("POST" if body is not None else "GET"), url[len(BASE_URL) :], headers, body
    )


# What each documented event counts for, by its idempotency key (written from the guide).
FEEDS = {
    "match-8812": {"weekly-ranked-wins", "chain-1-play-a-match", "chain-2-win-three"},
    "score-m-8812": {"winter-season-5000"},
    "match-8813": {"chain-1-play-a-match"},
    "match-8814": {"chain-1-play-a-match", "chain-2-win-three"},
}


def documented_events() -> Iterator[dict[str, Any]]:
    for curl in guide_curls():
        if curl.path == "/events":
            yield from curl.body["events"]


def test_the_documented_events_feed_the_quests_the_guide_names(
    examples: dict[str, QuestDef],
) -> None:
    events = list(documented_events())
    assert [e["idempotency_key"] for e in events] == list(FEEDS)
    for sent in events:
        fed = {
            name
            for name, quest in examples.items()
            if trigger_matches(quest.trigger, sent["type"], sent.get("attrs", {}))
        }
        assert fed == FEEDS[sent["idempotency_key"]], sent


EXPECTED_STATUS = {("POST", "/auth/api-keys"): 201, ("POST", "/events"): 202}


def test_every_curl_example_of_the_guide_is_accepted(client: httpx.Client, admin: Player) -> None:
    applied = questline("quests", "apply", str(CATALOG))
    assert applied.returncode == 0, applied.stderr
    curls = guide_curls()
    assert [(c.method, c.path) for c in curls] == [
        ("POST", "/auth/api-keys"),
        ("POST", "/auth/login"),
        ("PATCH", "/auth/me"),
        *[("POST", "/events")] * 4,
        ("GET", "/me/quests"),
    ]
    # The player of the examples, with the name and password the login example uses.
    credentials = next(c.body for c in curls if c.path == "/auth/login")
    player = Player(client, credentials["user_name"], credentials["password"])
    assert admin.token is not None
    variables = {"ADMIN_TOKEN": admin.token}

    answers: dict[str, Any] = {}
    for curl in curls:
        headers = {}
        for name, value in curl.headers.items():
            for variable, secret in variables.items():
                value = value.replace(f"${variable}", secret)
            assert "$" not in value, f"{curl.path}: no value for {value}"
            headers[name] = value
        body = curl.body
        if curl.path == "/events":
            # The guide's player 1 is the player created here.
            assert {e["user_id"] for e in body["events"]} == {1}
            body = {"events": [{**e, "user_id": player.user_id} for e in body["events"]]}
        r = client.request(
            curl.method,
            curl.path,
            headers=headers,
            content=None if body is None else json.dumps(body),
        )
        assert r.status_code == EXPECTED_STATUS.get((curl.method, curl.path), 200), (curl, r.text)
        answers[curl.path] = r.json()
        if curl.path == "/auth/api-keys":
            variables["QUESTLINE_API_KEY"] = r.json()["api_key"]
        elif curl.path == "/auth/login":
            assert r.json()["user_id"] == player.user_id
            variables["PLAYER_TOKEN"] = r.json()["access_token"]
        elif curl.path == "/auth/me":
            assert r.json()["timezone"] == TOKYO
        elif curl.path == "/events":
            (result,) = r.json()["results"]
            assert result["status"] == "accepted", result
            stored = client.get(
                f"/events/{result['event_id']}",
                headers={"X-API-Key": variables["QUESTLINE_API_KEY"]},
            ).json()
            sent = body["events"][0]
            assert (stored["user_id"], stored["type"]) == (player.user_id, sent["type"])

    # The /me/quests sample shows what the API returns: the same fields, and the same
    # definition of the quest it shows.
    (sample,) = (json.loads(block) for block in guide_blocks("json"))
    (shown,) = sample
    seen = {q["name"]: q for q in answers["/me/quests"]}
    assert list(seen) == [
        "sign-in-three-times",
        "daily-login-bonus",
        "login-streak-7",
        "weekly-ranked-wins",
        "winter-season-5000",
        "chain-1-play-a-match",
        "chain-2-win-three",
    ]
    real = seen[shown["name"]]
    assert set(shown) == set(real)
    for key in (
        "streak",
        "duplication",
        "auto_claim",
        "reward",
        "target",
        "measure",
        "period",
        "rewards",
        "best_streak",
    ):
        assert shown[key] == real[key], key
    # The sample's week ends on a Monday at 00:00 UTC, as weekly-ranked-wins' weeks do.
    ends = datetime.fromisoformat(shown["period_ends_at"])
    assert (ends.weekday(), ends.hour, ends.minute, ends.utcoffset()) == (0, 0, 0, timedelta(0))
