"""The load: players signing in (mostly refresh, some password logins), 10 % of
sign-ins published to the broker a second time, and bursts of concurrent claims with
repeated and fresh Idempotency-Keys; what the clients saw is kept in a Tally."""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

PASSWORD = "chaos-password-1"


@dataclass
class Player:
    name: str
    user_id: int = 0
    target: int = 0
    refresh_token: str | None = None
    access_token: str | None = None
    answered: list[int] = field(default_factory=list)


@dataclass
class Tally:
    """Everything the clients saw, for the checks and the summary."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    # (monotonic time, status) of every sign-in attempt
    attempts: list[tuple[float, str]] = field(default_factory=list)
    republish_queue: list[tuple[float, int, int]] = field(default_factory=list)
    republished: int = 0
    republish_failures: int = 0
    # user_id -> claims answered 200 (effect certain) and ambiguous (no answer / 5xx)
    claims_ok: collections.Counter[int] = field(default_factory=collections.Counter)
    claims_unknown: collections.Counter[int] = field(default_factory=collections.Counter)
    claim_statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    replay_mismatches: list[str] = field(default_factory=list)

    def attempt(self, status: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.attempts.append((time.monotonic(), status))


def sign_in(client: Any, player: Player, tally: Tally, rng: random.Random) -> bool:
    """One sign-in: refresh mostly, a password login sometimes or when the session broke."""
    import httpx

    use_login = player.refresh_token is None or rng.random() < 0.05
    try:
        if use_login:
            r = client.post("/auth/login", json={"user_name": player.name, "password": PASSWORD})
        else:
            r = client.post("/auth/refresh", json={"refresh_token": player.refresh_token})
    except httpx.HTTPError as exc:
        tally.attempt(type(exc).__name__)
        # The refresh may have been used even though no answer came back.
        player.refresh_token = None
        return False
    tally.attempt(str(r.status_code))
    if r.status_code != 200:
        player.refresh_token = None
        return False
    body = r.json()
    player.refresh_token = body["refresh_token"]
    player.access_token = body["access_token"]
    player.answered.append(body["sign_in_id"])
    if rng.random() < 0.10:
        with tally.lock:
            tally.republish_queue.append(
                (time.monotonic() + rng.uniform(0, 3), body["sign_in_id"], player.user_id)
            )
    return True


def run_players(
    url: str, players: list[Player], tally: Tally, rate: float, seed: int, stop: threading.Event
) -> None:
    """Sign these players in, round-robin, at about `rate` sign-ins per second."""
    import httpx

    rng = random.Random(seed)
    interval = 1.0 / rate
    next_at = time.monotonic()
    with httpx.Client(base_url=url, timeout=15) as client:
        while not stop.is_set():
            todo = [p for p in players if len(p.answered) < p.target]
            if not todo:
                return
            for player in todo:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not sign_in(client, player, tally, rng):
                    time.sleep(0.1)


def run_republisher(tally: Tally, stop: threading.Event) -> None:
    """Publish ~10 % of the answered sign-ins a second time, straight to the broker."""
    from workers.tasks import process_sign_in

    while True:
        now = time.monotonic()
        with tally.lock:
            due = [item for item in tally.republish_queue if item[0] <= now]
            tally.republish_queue = [item for item in tally.republish_queue if item[0] > now]
        if not due and stop.is_set() and not tally.republish_queue:
            return
        for _, event_id, user_id in due:
            try:
                process_sign_in.apply_async((event_id,), {"user_id": user_id}, retry=False)
                tally.republished += 1
            except Exception:
                tally.republish_failures += 1
                with tally.lock:  # the broker is away: try again a little later
                    tally.republish_queue.append((time.monotonic() + 1, event_id, user_id))
        time.sleep(0.05)


def run_claimers(
    url: str, players: list[Player], quest_id: int, tally: Tally, stop: threading.Event
) -> None:
    """Bursts of concurrent claims: two with one Idempotency-Key, two with fresh keys."""
    import httpx

    rng = random.Random(7)
    burst = 0
    with httpx.Client(base_url=url, timeout=15) as client:
        while not stop.wait(0.4):
            ready = [p for p in players if p.access_token]
            if not ready:
                continue
            player = rng.choice(ready)
            burst += 1
            shared = f"chaos-{player.user_id}-{burst}"
            keys = [shared, shared, f"{shared}-a", f"{shared}-b"]
            answers: list[Any] = [None] * len(keys)
            barrier = threading.Barrier(len(keys))

            def claim(
                i: int,
                key: str,
                token: str = player.access_token or "",
                barrier: threading.Barrier = barrier,
                answers: list[Any] = answers,
            ) -> None:
                barrier.wait()
                try:
                    answers[i] = client.post(
                        f"/me/quests/{quest_id}/claim",
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                    )
                except httpx.HTTPError as exc:
                    answers[i] = exc

            threads = [threading.Thread(target=claim, args=(i, k)) for i, k in enumerate(keys)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            _tally_claims(player.user_id, keys, answers, tally)


def _tally_claims(user_id: int, keys: list[str], answers: list[Any], tally: Tally) -> None:
    by_key: dict[str, list[Any]] = collections.defaultdict(list)
    for key, answer in zip(keys, answers, strict=True):
        by_key[key].append(answer)
        status = str(answer.status_code) if hasattr(answer, "status_code") else "error"
        with tally.lock:
            tally.claim_statuses[status] += 1
    for key, same in by_key.items():
        statuses = {a.status_code if hasattr(a, "status_code") else 599 for a in same}
        if 200 in statuses:
            tally.claims_ok[user_id] += 1
        elif max(statuses) >= 500:
            tally.claims_unknown[user_id] += 1  # no clear answer: the claim may have committed
        answered = [
            (a.status_code, a.json())
            for a in same
            if hasattr(a, "status_code") and a.status_code < 500
        ]
        if any(a != answered[0] for a in answered[1:]):
            tally.replay_mismatches.append(f"{key}: {answered}")


def setup_catalog(url: str) -> dict[int, dict[str, Any]]:
    """The seed quest plus an auto-claim quest that some players cap and some do not, and an
    auto-claim counter quest (streak 1, no practical cap) that records every application."""
    import httpx

    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/auth/login", json={"user_name": "chaos-admin", "password": PASSWORD})
        r.raise_for_status()
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        specs = [
            ("Five Gold", "gold", 5, "seven-day-streak", 7, 10),
            ("One Gold", "gold", 1, "every-sign-in", 1, 1_000_000),
        ]
        for reward_name, item, qty, name, streak, dup in specs:
            r = c.post(
                "/rewards",
                headers=h,
                json={"reward_name": reward_name, "reward_item": item, "reward_qty": qty},
            )
            r.raise_for_status()
            r = c.post(
                "/quests",
                headers=h,
                json={
                    "name": name,
                    "description": "chaos run",
                    "auto_claim": True,
                    "streak": streak,
                    "duplication": dup,
                    "reward_id": r.json()["reward_id"],
                },
            )
            r.raise_for_status()
        r = c.get("/quests", headers=h)
        r.raise_for_status()
        return {q["quest_id"]: q for q in r.json()}


def setup_players(url: str, count: int, sign_ins: int) -> list[Player]:
    """Players with sign-in targets spread from 0.4x to 1.6x the mean, summing to sign_ins."""
    import httpx

    mean = sign_ins / count
    players = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(count):
            p = Player(name=f"hero{i:04d}")
            r = c.post("/auth/signup", json={"user_name": p.name, "password": PASSWORD})
            r.raise_for_status()
            p.user_id = r.json()["user_id"]
            p.target = int(mean * (0.4 + 1.2 * ((i * 37) % count) / max(1, count - 1)))
            players.append(p)
    short = sign_ins - sum(p.target for p in players)
    for i in range(max(0, short)):
        players[i % count].target += 1
    return players
