"""Creating, listing, revoking and checking API keys. Never commits."""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from models import ApiKey
from models.base import utcnow
from questline.credentials import repository
from questline.errors import DomainError, Forbidden, Invalid, NotFound, Unauthorized

KEY_PREFIX = "qlk_"


class Scope(enum.StrEnum):
    EVENTS_WRITE = "events:write"
    # Events older than QUESTLINE_EVENT_MAX_AGE_SECONDS (imports, late game servers).
    EVENTS_BACKFILL = "events:backfill"


class ApiKeyRequired(Unauthorized):
    detail = "missing or unknown API key"
    headers = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}


@dataclass(frozen=True)
class CallingKey:
    """The live key a request came with: its id and scopes. `remembered`: taken from this
    process's memory of verified keys, not read in this transaction, so the caller has
    still to check that it is live (authenticate_remembered)."""

    key_id: int
    scopes: frozenset[str]
    remembered: bool = False


@dataclass(frozen=True)
class NewKey:
    """A key just created: the row, and the secret that is shown this once."""

    key: ApiKey
    api_key: str


def hash_key(api_key: str) -> str:
    # The secret is 256 random bits: a fast hash cannot be brute-forced, and it keeps
    # checking a key on every event batch cheap.
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


def create(
    session: Session, *, name: str, scopes: Sequence[str], created_by: int | None = None
) -> NewKey:
    """A new key with the given scopes (at least one, each a known Scope)."""
    if not scopes:
        raise Invalid("scopes: give at least one of " + ", ".join(s.value for s in Scope))
    unknown = sorted(set(scopes) - {s.value for s in Scope})
    if unknown:
        raise Invalid(
            f"scopes: unknown scope {unknown[0]!r}; known: " + ", ".join(s.value for s in Scope)
        )
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    ordered = [s.value for s in Scope if s.value in set(scopes)]
    key = repository.add(
        session, name=name, scopes=ordered, key_hash=hash_key(api_key), created_by=created_by
    )
    return NewKey(key=key, api_key=api_key)


def list_keys(session: Session) -> Sequence[ApiKey]:
    """Live keys, oldest first; never their secrets (only hashes are stored)."""
    return repository.live(session)


def revoke(session: Session, *, key_id: int) -> None:
    """Revoke a key: it stops working for every request that starts after the commit."""
    if not repository.revoke(session, key_id, now=utcnow()):
        raise NotFound("API key not found")
    forget(key_id)


def authenticate(session: Session, api_key: str | None, *, scope: Scope | None) -> CallingKey:
    """The live key behind a secret, if it holds `scope` (None: any live key will do): 401
    for a missing, unknown or revoked key, 403 for a key without the scope. One indexed
    query (the hash is unique)."""
    if not api_key:
        raise ApiKeyRequired()
    key_hash = hash_key(api_key)
    row = repository.live_by_hash(session, key_hash)
    if row is None:
        raise ApiKeyRequired()
    key = CallingKey(key_id=int(row.key_id), scopes=frozenset(row.scopes))
    if len(_verified) >= _VERIFIED_LIMIT:
        _verified.clear()
    _verified[key_hash] = CallingKey(key.key_id, key.scopes, remembered=True)
    if scope is not None and scope.value not in key.scopes:
        raise Forbidden(f"API key lacks the {scope.value} scope")
    return key


# Keys this process has verified, by hash: a key's id and scopes never change, only
# whether it is live, which a remembered key's user checks in its own transaction.
_verified: dict[str, CallingKey] = {}
_VERIFIED_LIMIT = 10_000


def authenticate_remembered(session: Session, api_key: str | None, *, scope: Scope) -> CallingKey:
    """As `authenticate`, without its read for a key this process has verified before.

    For the event write paths, whose one statement stores nothing for a revoked key
    (questline.events.repository.insert_new): revocation still applies to every request
    that starts after it commits, in every process. A remembered key comes back with
    `remembered` set; run the request inside `live_key_first` so that any refusal goes
    to a revoked key as 401, as it would have without the memory.
    """
    if api_key:
        key = _verified.get(hash_key(api_key))
        if key is not None and scope.value in key.scopes:
            return key
    return authenticate(session, api_key, scope=scope)


@contextmanager
def live_key_first(session: Session, key: CallingKey) -> Iterator[None]:
    """Refusals (domain errors) raised inside are preceded by a check that a remembered
    `key` is still live: a revoked key gets 401, not what its request would have got."""
    try:
        yield
    except DomainError as exc:
        if key.remembered and not isinstance(exc, Unauthorized):
            if repository.live_by_id(session, key.key_id) is None:
                forget(key.key_id)
                raise ApiKeyRequired() from None
        raise


def forget(key_id: int) -> None:
    """Drop a key from this process's memory (revoked here, or found revoked)."""
    for key_hash, key in list(_verified.items()):
        if key.key_id == key_id:
            _verified.pop(key_hash, None)


def has_scope(key: CallingKey, scope: Scope) -> bool:
    """Whether a key holds a scope."""
    return scope.value in key.scopes
