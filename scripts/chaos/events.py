"""Gameplay events over HTTP: the quests they feed, the players' zones, an API key, and
game servers that send batches (POST /events), retry a batch with the same idempotency
keys until it is answered 202, and send some answered batches again (which must come
back as duplicates of the same events). What they saw is kept in an EventTally."""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .load import PASSWORD, Player

ZONES = ["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "Europe/London"]
BATCH = 25
# Half the events happened over the last 10 days (the key may backfill): streaks form.
BACKFILL_DAYS = 10

# (name, reward items, quest fields): every shape the engine has, all auto-claimed so the
# wallet follows from the events alone.
EVENT_QUESTS: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
    ("daily-three-matches", [{"item": "gems", "qty": 2}],
     {"trigger": {"event": "match_played"}, "measure": "count", "target": 3,
      "period": "day", "reset_at": "04:00", "timezone": "user"}),
    ("three-day-streak", [{"item": "xp", "qty": 10}],
     {"trigger": {"event": "match_played"}, "measure": "consecutive", "target": 3,
      "period": "day", "grace_periods": 1}),
    ("ranked-wins-five-kills", [{"item": "tokens", "qty": 3}],
     {"trigger": {"event": "match_won",
                  "where": {"mode": "ranked", "kills": {"gte": 5}}},
      "measure": "count", "target": 2, "duplication": 6}),
    ("coins-daily-capped", [{"item": "chest", "qty": 1}],
     {"trigger": {"event": "coins_earned"}, "measure": "sum", "target": 100,
      "period": "day", "max_per_period": 2}),
    ("win-bundle", [{"item": "gold", "qty": 2}, {"item": "gems", "qty": 1},
                    {"item": "chest_epic", "qty": 1}],
     {"trigger": {"event": "match_won"}, "measure": "count", "target": 4}),
]  # fmt: skip


@dataclass
class EventTally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (user_id, idempotency_key) -> event_id, for every event answered 202
    accepted: dict[tuple[int, str], int] = field(default_factory=dict)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    batches: int = 0
    retried_batches: int = 0
    resent_batches: int = 0
    hurried: int = 0  # batches first sent with a too-short timeout
    retry_duplicates: int = 0  # events a retry found stored by an attempt with no answer
    resend_mismatches: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # 4xx: a bug in the run or the product
    sent: collections.Counter[int] = field(default_factory=collections.Counter)  # per user


def _admin(c: Any) -> dict[str, str]:
    r = c.post("/auth/login", json={"user_name": "chaos-admin", "password": PASSWORD})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def setup_event_quests(url: str) -> tuple[dict[int, str], str]:
    """The event quests (quest_id -> name) and an API key with events:write and backfill."""
    import httpx

    quests: dict[int, str] = {}
    with httpx.Client(base_url=url, timeout=30) as c:
        h = _admin(c)
        for name, items, fields in EVENT_QUESTS:
            r = c.post("/rewards", headers=h, json={"reward_name": name, "items": items})
            r.raise_for_status()
            body = {"name": name, "description": "chaos run (events)", "auto_claim": True,
                    "reward_id": r.json()["reward_id"], **fields}  # fmt: skip
            r = c.post("/quests", headers=h, json=body)
            if r.status_code >= 400:
                raise RuntimeError(f"quest {name}: {r.status_code} {r.text}")
            quests[r.json()["quest_id"]] = name
        r = c.post(
            "/auth/api-keys",
            headers=h,
            json={"name": "chaos-game-server", "scopes": ["events:write", "events:backfill"]},
        )
        r.raise_for_status()
        return quests, r.json()["api_key"]


def setup_zones(url: str, players: list[Player]) -> None:
    """Each player logs in once (a sign-in like any other) and moves to one of ZONES."""
    import httpx

    with httpx.Client(base_url=url, timeout=30) as c:
        for i, p in enumerate(players):
            r = c.post("/auth/login", json={"user_name": p.name, "password": PASSWORD})
            r.raise_for_status()
            body = r.json()
            p.answered.append(body["sign_in_id"])
            p.refresh_token, p.access_token = body["refresh_token"], body["access_token"]
            r = c.patch(
                "/auth/me",
                headers={"Authorization": f"Bearer {p.access_token}"},
                json={"timezone": ZONES[i % len(ZONES)]},
            )
            r.raise_for_status()


def make_event(rng: random.Random, user_id: int, key: str) -> dict[str, Any]:
    """One gameplay event; occurred_at now or on one of the last BACKFILL_DAYS days."""
    now = datetime.now(UTC)
    if rng.random() < 0.5:
        occurred = now - timedelta(seconds=rng.uniform(0, 30))
    else:
        occurred = now - timedelta(days=rng.randint(1, BACKFILL_DAYS), hours=rng.uniform(-6, 6))
    event: dict[str, Any] = {"user_id": user_id, "idempotency_key": key,
                             "occurred_at": occurred.isoformat()}  # fmt: skip
    roll = rng.random()
    if roll < 0.4:
        event["type"] = "match_played"
    elif roll < 0.7:
        event["type"] = "match_won"
        event["attrs"] = {"mode": rng.choice(["ranked", "casual"]), "kills": rng.randint(0, 9)}
    else:
        event["type"] = "coins_earned"
        event["value"] = rng.choice([5, 20, 35, 60, 12.5])
    return event


def run_game_server(
    url: str,
    api_key: str,
    players: list[Player],
    targets: dict[int, int],
    tally: EventTally,
    rate: float,
    seed: int,
    stop: threading.Event,
) -> None:
    """Send these players' events in batches at about `rate` events per second."""
    import httpx

    rng = random.Random(1000 + seed)
    resend: list[tuple[float, dict[str, Any], dict[str, int]]] = []
    n = 0
    with httpx.Client(base_url=url, timeout=15, headers={"X-API-Key": api_key}) as client:
        while not stop.is_set():
            todo = [p for p in players if tally.sent[p.user_id] < targets[p.user_id]]
            if not todo:
                break
            events = []
            for _ in range(BATCH):
                p = rng.choice(todo)
                if tally.sent[p.user_id] >= targets[p.user_id]:
                    continue
                tally.sent[p.user_id] += 1
                n += 1
                events.append(make_event(rng, p.user_id, f"g{seed}-{n}"))
            if not events:
                continue
            started = time.monotonic()
            body = {"events": events}
            # 5 % of batches are first sent with a timeout too short to see the answer,
            # like a game server giving up on a slow request: the batch is then retried.
            hurry = rng.random() < 0.05
            ids = _send_until_answered(client, body, tally, stop, hurry=hurry)
            if ids is not None and rng.random() < 0.1:
                resend.append((time.monotonic() + rng.uniform(0, 3), body, ids))
            resend = _resend_due(client, resend, tally, stop)
            pause = len(events) / rate - (time.monotonic() - started)
            if pause > 0:
                time.sleep(pause)
        while resend and not stop.is_set():
            resend = _resend_due(client, resend, tally, stop)
            time.sleep(0.2)


def _send_until_answered(
    client: Any,
    body: dict[str, Any],
    tally: EventTally,
    stop: threading.Event,
    *,
    hurry: bool = False,
) -> dict[str, int] | None:
    """POST the batch, again with the same keys after an error or a 5xx, until a 202;
    key -> event_id (also recorded as accepted), or None if it was refused."""
    import httpx

    first = True
    while True:
        try:
            if first and hurry:
                tally.hurried += 1
                r = client.post("/events", json=body, timeout=0.005)
            else:
                r = client.post("/events", json=body)
            status = str(r.status_code)
        except httpx.HTTPError as exc:
            r, status = None, type(exc).__name__
        with tally.lock:
            tally.statuses[status] += 1
            tally.batches += first
            tally.retried_batches += not first
        if r is not None and r.status_code == 202:
            results = r.json()["results"]
            ids = {x["idempotency_key"]: x["event_id"] for x in results}
            if not first:  # what a retry after no answer found already stored
                tally.retry_duplicates += sum(x["status"] == "duplicate" for x in results)
            with tally.lock:
                for e in body["events"]:
                    tally.accepted[(e["user_id"], e["idempotency_key"])] = ids[e["idempotency_key"]]
            return ids
        if r is not None and r.status_code < 500 and r.status_code != 429:
            tally.refused.append(f"{r.status_code} {r.text[:200]}")
            return None
        if stop.is_set():
            tally.refused.append("gave up on a batch with no answer (load stopped)")
            return None
        first = False
        time.sleep(0.5)


def _resend_due(
    client: Any,
    resend: list[tuple[float, dict[str, Any], dict[str, int]]],
    tally: EventTally,
    stop: threading.Event,
) -> list[tuple[float, dict[str, Any], dict[str, int]]]:
    """Send the due batches again: every event must be a duplicate of its first id."""
    now = time.monotonic()
    for _, body, ids in [x for x in resend if x[0] <= now]:
        again = _send_until_answered(client, body, tally, stop)
        tally.resent_batches += 1
        if again != ids:
            tally.resend_mismatches.append(f"resent batch got ids {again}, first {ids}")
    return [x for x in resend if x[0] > now]


def event_targets(players: list[Player], total: int) -> dict[int, int]:
    """Events per player, spread from 0.5x to 1.5x the mean, summing to `total`."""
    count = len(players)
    mean = total / max(1, count)
    targets = {
        p.user_id: int(mean * (0.5 + ((i * 53) % count) / max(1, count - 1)))
        for i, p in enumerate(players)
    }
    for i in range(max(0, total - sum(targets.values()))):
        targets[players[i % count].user_id] += 1
    return targets
