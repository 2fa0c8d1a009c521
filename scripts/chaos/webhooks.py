"""Webhooks under the same faults: a receiver on loopback subscribed to quest.completed
and reward.earned (answering 500 to a tenth of the requests, so retries happen too),
and after the drain the check that every such occurrence of the run reached it at
least once with a valid signature; extra copies are counted, not failed."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import harness
from harness.receiver import Received, Receiver

from . import log
from .checks import Verdict

EVENTS = ["quest.completed", "reward.earned"]
HISTORY_TYPES = ("quest_completed", "reward_earned")
REFUSED_SHARE = 0.1

# What the workers and the API read for webhooks in the run: receivers on loopback
# allowed, retries quick enough to finish within the drain.
SETTINGS = {
    "QUESTLINE_WEBHOOK_ALLOW_PRIVATE": "true",
    "QUESTLINE_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "QUESTLINE_WEBHOOK_REQUEUE_AFTER_SECONDS": "5",
    # The run's workers take every queue (in production webhooks have workers of their
    # own): two batches at once leave the drain four of the six slots.
    "QUESTLINE_WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT": "2",
}
# Deliveries settle after the drain within the drain timeout plus this per occurrence
# (the full run announces about two per sign-in). A bound for a stuck run, not a speed
# test: sent in batches, the full run's ~24,000 deliveries kept up with the load and
# were all delivered by the end of the drain; one at a time they went out at ~15 per
# second on two shared cores, which this bound still allows.
SECONDS_PER_OCCURRENCE = 0.15


@dataclass
class Hook:
    receiver: Receiver
    webhook_id: int
    secret: str
    bad_signatures: list[str] = field(default_factory=list)
    # History written before the webhook existed announces nothing: only later ids count.
    after_event_id: int = 0


def start(url: str, admin_password: str) -> Hook:
    """Start the receiver and register it (as the run's admin). The receiver checks each
    signature as it arrives (Standard Webhooks refuses timestamps over 5 minutes old, so
    not after the run), answers 400 to a bad one, and 500 to a tenth of the rest."""
    import httpx
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    rng = random.Random(11)
    lock = threading.Lock()
    verifier: list[Webhook] = []
    hook: list[Hook] = []

    def answer(request: Received) -> int:
        if not verifier:
            return 503  # not registered yet
        try:
            verifier[0].verify(request.body, request.headers)
        except WebhookVerificationError as exc:
            hook[0].bad_signatures.append(f"{request.message_id}: {exc}")
            return 400
        with lock:
            return 500 if rng.random() < REFUSED_SHARE else 200

    receiver = Receiver(answer).start()
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/auth/login", json={"user_name": "chaos-admin", "password": admin_password})
        r.raise_for_status()
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = c.post("/webhooks", headers=h, json={"url": receiver.url, "events": EVENTS})
        r.raise_for_status()
        body = r.json()
    from sqlalchemy import text

    from questline.infra import db

    with db.get_engine().connect() as conn:
        last = conn.execute(text("SELECT coalesce(max(event_id), 0) FROM events")).scalar_one()
    hook.append(Hook(receiver, int(body["webhook_id"]), str(body["secret"]), after_event_id=last))
    verifier.append(Webhook(hook[0].secret))
    return hook[0]


def verify(engine: Any, hook: Hook, timeout: float, verdict: Verdict, t0: float) -> None:
    """Wait until no delivery is pending, then compare the run's occurrences with what the
    receiver got: each at least once, signed; duplicates and failures counted."""
    from sqlalchemy import text

    def settled() -> bool:
        with engine.connect() as conn:
            pending = conn.execute(
                text("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            ).scalar_one()
        return pending == 0

    with engine.connect() as conn:
        announced = conn.execute(
            text(f"SELECT count(*) FROM webhook_deliveries WHERE event_id > {hook.after_event_id}")
        ).scalar_one()
    timeout += announced * SECONDS_PER_OCCURRENCE
    started = time.monotonic()
    try:
        harness.wait_until(settled, timeout, "webhook deliveries to settle", 0.5, (Exception,))
    except TimeoutError as exc:
        verdict.failures.append(str(exc))
    settle_seconds = time.monotonic() - started
    with engine.connect() as conn:
        for row in conn.execute(
            text(
                "SELECT delivery_id, attempts, last_error, next_attempt_at, sending_until, "
                "enqueued_at FROM webhook_deliveries WHERE status = 'pending' "
                "ORDER BY delivery_id LIMIT 5"
            )
        ):
            log(f"still pending: {tuple(row)}", t0)
    log(f"webhook deliveries settled in {settle_seconds:.0f} s", t0)
    hook.receiver.stop()

    with engine.connect() as conn:
        occurrences = {
            f"msg_{row[0]}": row[1]
            for row in conn.execute(
                text(
                    "SELECT event_id, type FROM events WHERE type IN ('{}', '{}') "
                    "AND event_id > {}".format(*HISTORY_TYPES, hook.after_event_id)
                )
            )
        }
        statuses = dict(
            conn.execute(
                text("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
            ).all()
        )
        rows = conn.execute(
            text(f"SELECT count(*) FROM webhook_deliveries WHERE event_id > {hook.after_event_id}")
        ).scalar_one()
    accepted: dict[str, int] = {}
    for request in hook.receiver.requests():
        if request.status is not None and 200 <= request.status < 300:
            accepted[request.message_id] = accepted.get(request.message_id, 0) + 1
    bad_signatures = len(hook.bad_signatures)
    missing = [m for m in occurrences if m not in accepted]
    duplicates = sum(n - 1 for m, n in accepted.items() if m in occurrences and n > 1)
    strangers = [m for m in accepted if m not in occurrences and int(m[4:]) > hook.after_event_id]
    verdict.check(not missing, f"{len(missing)} webhook occurrences never delivered: {missing[:5]}")
    verdict.check(
        bad_signatures == 0,
        f"{bad_signatures} webhook requests failed verification: {hook.bad_signatures[:3]}",
    )
    verdict.check(not strangers, f"{len(strangers)} webhooks for no occurrence: {strangers[:5]}")
    verdict.check(rows == len(occurrences), f"{rows} delivery rows for {len(occurrences)} events")
    verdict.check(not statuses.get("failed"), f"{statuses.get('failed')} deliveries failed")
    verdict.figures.update(
        webhook_occurrences=len(occurrences),
        webhook_delivered=len(occurrences) - len(missing),
        webhook_duplicates=duplicates,
        webhook_requests=len(hook.receiver.requests()),
        webhook_statuses=statuses,
        webhook_settle_seconds=round(settle_seconds, 1),
    )
