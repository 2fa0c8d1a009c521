"""One attempt over HTTP: resolve the receiver's name, check every address, connect to
the checked one, POST the signed body, follow no redirect, give up after the timeout.

The whole attempt (resolving included) runs under one deadline, so a receiver that
answers a byte at a time cannot hold a worker past it. Proxies from the environment
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
from questline.webhooks.service import Answer, Attempt

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


def send(
    attempt: Attempt,
    *,
    timeout: float,
    allow_private: bool,
    resolve: addresses.Resolver = addresses.system_resolver,
) -> Answer:
    """Make one attempt; never raises for the receiver's faults (they are the answer)."""
    started = time.monotonic()
    try:
        status = asyncio.run(
            asyncio.wait_for(_post(attempt, timeout, allow_private, resolve), timeout)
        )
        error = None if 200 <= status < 300 else _describe(status)
        return Answer(status_code=status, error=error, seconds=time.monotonic() - started)
    except TimeoutError:
        error = f"no answer within {timeout:g} s"
    except addresses.AddressRefused as exc:
        error = f"refused: {exc.detail}"
    except (OSError, UnicodeError) as exc:
        error = f"could not resolve {addresses.parse(attempt.url).host}: {exc}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Answer(status_code=None, error=error, seconds=time.monotonic() - started)


def _describe(status: int) -> str:
    if 300 <= status < 400:
        return f"HTTP {status} (redirects are not followed)"
    return f"HTTP {status}"


async def _post(
    attempt: Attempt, timeout: float, allow_private: bool, resolve: addresses.Resolver
) -> int:
    target = addresses.parse(attempt.url)
    literal = addresses.literal(target.host)
    if literal is not None:
        found = [str(literal)]
    else:
        loop = asyncio.get_running_loop()
        found = list(await loop.run_in_executor(None, resolve, target.host, target.port))
        if not found:
            raise OSError("no address")
    addresses.check_addresses(target, found, allow_private=allow_private)
    body = body_of(attempt.payload)
    headers = {
        **signing.headers(attempt.secret, str(attempt.payload["id"]), int(time.time()), body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": target.host_header,
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=timeout, verify=tls_context()
    ) as client:
        async with client.stream(
            "POST",
            target.pinned_url(found[0]),
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
