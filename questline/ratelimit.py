"""Rate limits of the auth service: failed logins, sign-ups per client, sign-ins per user.

Failed logins are limited per (name, client), per client, and per name alone at a
much higher bar (README, "Login limits"): a stranger's guesses lock only the stranger
out, while a guesser spread over many addresses still meets the per-name limit. An
attempt is admitted before its password is hashed, in one atomic step that counts it
as in flight: a limit is reached by failures plus attempts in flight, so parallel
attempts cannot all slip under it (later ones wait for those in flight to settle). A
failure then counts; a success counts on nothing and clears the failures of that name
from that client.

Counters live in the key-value store (Redis, or memory in the embedded mode) in fixed
windows. When the store does not answer, limits fail open: an outage of the cache must
not lock every player out.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from questline.config import get_settings
from questline.errors import TooManyAttempts, TooManySignIns, TooManySignups
from questline.infra.kv import Counted, KeyValue, KeyValueError, get_kv

log = logging.getLogger(__name__)


def _login_keys(user_name: str, client: str) -> dict[str, int]:
    """The failed-login counters an attempt on `user_name` from `client` counts on,
    with their limits."""
    s = get_settings()
    name = user_name.casefold()
    return {
        f"ql:login-fail:pair:{client}:{name}": s.login_max_failures_per_name_and_client,
        f"ql:login-fail:client:{client}": s.login_max_failures_per_client,
        f"ql:login-fail:name:{name}": s.login_max_failures_per_name,
    }


# How long an attempt counts as in flight at most (a process that died mid-attempt
# frees its place after this), and how long a login waits for attempts in flight
# on the same name or client to settle before it is refused.
_IN_FLIGHT_SECONDS = 60
_WAIT_FOR_OTHERS_SECONDS = 10.0


@dataclass
class LoginAttempt:
    """One password check under the failed-login limits; the caller marks how it ended,
    and names the user who signs in (`sign_in_of`) to count the sign-in in the same step."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    failed: bool = False
    succeeded: bool = False
    sign_in_of: int | None = None


@contextmanager
def login_attempt(user_name: str, client: str) -> Iterator[LoginAttempt]:
    """Admit one password check on `user_name` from `client`, or raise TooManyAttempts
    (with Retry-After) when a limit is spent.

    The attempt counts as in flight until the block ends, and a limit is reached by
    failures plus attempts in flight: so however many arrive at once, no more are
    checked than could still fail within the limit (the others wait for them, then go
    ahead or are refused). Set `failed` or `succeeded` inside the block: a failure
    counts on every limit; a success clears the failures of that name from that
    client and counts on nothing.

    With `sign_in_of` set, the block's end also counts a sign-in of that user
    (count_sign_in) and raises TooManySignIns past that limit: the store is asked once
    before the password is hashed and once after.
    """
    limits = _login_keys(user_name, client)
    attempt = LoginAttempt()
    window = get_settings().login_failure_window_seconds
    kv = get_kv()
    try:
        wait: int | None = _begin(kv, limits, attempt.id, window)
    except KeyValueError:
        log.warning("login rate limiter unavailable; allowing attempt")
        wait = None
    if wait:
        raise TooManyAttempts(retry_after=wait)
    try:
        yield attempt
    except BaseException:
        if wait is not None:
            _settle(kv, limits, attempt, window)
        raise
    if wait is None:  # the store did not answer: the sign-in limit fails open alone
        if attempt.sign_in_of is not None:
            count_sign_in(attempt.sign_in_of)
        return
    refused = _settle(kv, limits, attempt, window)
    if refused:
        raise TooManySignIns(retry_after=refused)


def _begin(kv: KeyValue, limits: dict[str, int], attempt: str, window: int) -> int:
    # 0 (go ahead) or seconds to wait; waits out attempts in flight that could spend a limit.
    deadline = time.monotonic() + _WAIT_FOR_OTHERS_SECONDS
    while (
        wait := kv.begin_attempt(limits, attempt, window=window, in_flight=_IN_FLIGHT_SECONDS)
    ) < 0:
        if time.monotonic() > deadline:
            return 1
        time.sleep(random.uniform(0.01, 0.05))
    return wait


def _settle(kv: KeyValue, limits: dict[str, int], attempt: LoginAttempt, window: int) -> int:
    # 0, or the seconds to wait when the sign-in counted now is over its limit.
    pair = next(iter(limits))  # failures of this name from this client
    count = None if attempt.sign_in_of is None else _sign_ins(attempt.sign_in_of)
    try:
        return kv.settle_attempt(
            list(limits),
            attempt.id,
            failed=attempt.failed,
            window=window,
            clear=pair if attempt.succeeded else None,
            count=count,
        )
    except KeyValueError:
        log.warning("login rate limiter unavailable; attempt not settled")
        return 0


def count_signup(client: str) -> None:
    """Count a sign-up from `client`; TooManySignups past the hourly limit."""
    _count(f"ql:signups:{client}", get_settings().signups_per_client_per_hour, 3600, TooManySignups)


def _sign_ins(user_id: int) -> Counted:
    return Counted(f"ql:sign-ins:{user_id}", get_settings().sign_ins_per_user_per_minute, 60)


def count_sign_in(user_id: int) -> None:
    """Count a sign-in (login or refresh) of the user; TooManySignIns past the limit."""
    counted = _sign_ins(user_id)
    _count(counted.key, counted.limit, counted.window, TooManySignIns)


def _count(key: str, limit: int, window: int, refusal: type[TooManyAttempts]) -> None:
    kv = get_kv()
    try:
        if kv.incr(key, window) <= limit:
            return
        wait = kv.ttl(key)
    except KeyValueError:
        log.warning("rate limiter unavailable; not counting %s", key.split(":")[1])
        return
    raise refusal(retry_after=max(1, min(wait, window)))
