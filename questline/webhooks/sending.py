"""A batch of attempts over HTTP: resolve the receiver's name, check every address,
connect to the checked one, POST each signed body in turn over that connection, follow
no redirect, give up on an attempt after the timeout.

Each attempt (the first with the resolving) runs under one deadline, so a receiver
that answers a byte at a time cannot hold a worker past it. Proxies from the environment
are ignored: the request must go to the address that was checked.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from typing import Any

import httpx

from questline.webhooks import addresses, signing
from questline.webhooks.service import Answer, Attempt, Batch

USER_AGENT = "Questline-Webhooks/1"
# Loading the CA bundle costs tens of milliseconds: once per process, not per attempt.
_tls: list[ssl.SSLContext] = []


def tls_context() -> ssl.SSLContext:
    if not _tls:
        _tls.append(httpx.create_ssl_context())
    return _tls[0]


# What is kept of a receiver's answer (only its status counts).
MAX_ANSWER_BYTES = 4096


def body_of(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def send_batch(
    batch: Batch,
    *,
    timeout: float,
    allow_private: bool,
    resolve: addresses.Resolver = addresses.system_resolver,
) -> list[Answer | None]:
    """Make a batch's attempts one after another over one connection; the answer of
    each, or None for those not tried: attempts start only during the first `timeout`
    seconds, and the batch stops at the first attempt with no answer (the receiver
    hangs or is down: the others would wait as long). Never raises for the receiver's
    faults (they are the answers)."""
    return asyncio.run(_send_batch(batch, timeout, allow_private, resolve))


async def _send_batch(
    batch: Batch, timeout: float, allow_private: bool, resolve: addresses.Resolver
) -> list[Answer | None]:
    answers: list[Answer | None] = [None] * len(batch.attempts)
    started = time.monotonic()
    target = addresses.parse(batch.url)
    try:
        # Resolving and checking count against the first attempt's deadline.
        found = await asyncio.wait_for(_checked_address(target, allow_private, resolve), timeout)
    except NO_ANSWER as exc:
        answers[0] = Answer(None, _no_answer(exc, target, timeout), time.monotonic() - started)
        return answers
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=timeout, verify=tls_context()
    ) as client:
        for i, attempt in enumerate(batch.attempts):
            began = started if i == 0 else time.monotonic()
            if began - started > timeout:
                break
            deadline = timeout - (time.monotonic() - started) if i == 0 else timeout
            try:
                status = await asyncio.wait_for(
                    _post(client, attempt, target, found), max(deadline, 0.001)
                )
            except NO_ANSWER as exc:
                lost = _no_answer(exc, target, timeout)
                answers[i] = Answer(None, lost, time.monotonic() - began)
                break
            refused = None if 200 <= status < 300 else _describe(status)
            answers[i] = Answer(status, refused, time.monotonic() - began)
    return answers


# What an attempt that got no answer raises (resolving, connecting, the receiver).
NO_ANSWER = (TimeoutError, addresses.AddressRefused, OSError, UnicodeError, httpx.HTTPError)


def _no_answer(exc: Exception, target: addresses.Target, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, addresses.AddressRefused):
        return f"refused: {exc.detail}"
    if isinstance(exc, OSError | UnicodeError):
        return f"could not resolve {target.host}: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _describe(status: int) -> str:
    if 300 <= status < 400:
        return f"HTTP {status} (redirects are not followed)"
    return f"HTTP {status}"


async def _checked_address(
    target: addresses.Target, allow_private: bool, resolve: addresses.Resolver
) -> str:
    """The address to connect to, once every address of the name passed the check."""
    literal = addresses.literal(target.host)
    if literal is not None:
        found = [str(literal)]
    else:
        loop = asyncio.get_running_loop()
        found = list(await loop.run_in_executor(None, resolve, target.host, target.port))
        if not found:
            raise OSError("no address")
    addresses.check_addresses(target, found, allow_private=allow_private)
    return found[0]


async def _post(
    client: httpx.AsyncClient, attempt: Attempt, target: addresses.Target, address: str
) -> int:
    body = body_of(attempt.payload)
    headers = {
        **signing.headers(attempt.secret, str(attempt.payload["id"]), int(time.time()), body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": target.host_header,
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    async with client.stream(
        "POST",
        target.pinned_url(address),
        content=body,
        headers=headers,
        extensions=extensions,
    ) as response:
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= MAX_ANSWER_BYTES:
                break
        return response.status_code
