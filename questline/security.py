"""Password hashing (argon2id, a capped number at once) and access tokens (EdDSA JWTs
with a kid). Only the signing side (auth service, all-in-one app, `questline serve`,
`questline keys`) may create the key pair; verifying services only read the public key."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.users import Role
from questline.config import Settings, get_settings
from questline.errors import HashingBusy, Unauthorized

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "jti", "role"]


# --- passwords -------------------------------------------------------------


@lru_cache
def password_hasher() -> PasswordHasher:
    s = get_settings()
    return PasswordHasher(
        time_cost=s.argon2_time_cost,
        memory_cost=s.argon2_memory_kib,
        parallelism=s.argon2_parallelism,
    )


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@lru_cache
def hashing_slots() -> threading.BoundedSemaphore:
    """How many password hashes may run at once in this process
    (QUESTLINE_HASHING_CONCURRENCY, by default one per core)."""
    return threading.BoundedSemaphore(get_settings().hashing_concurrency or usable_cores())


@contextmanager
def _hashing_slot() -> Iterator[None]:
    # Each argon2 hash holds a core and 19 MiB: past one per core, more at once only
    # add memory and delay everything else. Excess requests wait briefly for a turn,
    # then are told to come back (503) rather than pile up.
    slots = hashing_slots()
    if not slots.acquire(timeout=get_settings().hashing_wait_seconds):
        raise HashingBusy(retry_after=1)
    try:
        yield
    finally:
        slots.release()


def hash_password(password: str) -> str:
    """An argon2id hash; HashingBusy when no hashing slot frees up in time."""
    with _hashing_slot():
        return password_hasher().hash(password)


@lru_cache
def _dummy_hash() -> str:
    return password_hasher().hash(secrets.token_urlsafe(16))


def verify_password(password: str, password_hash: str | None) -> bool:
    """Verify in constant work: unknown users are checked against a dummy hash.
    HashingBusy when no hashing slot frees up in time."""
    with _hashing_slot():
        try:
            return password_hasher().verify(password_hash or _dummy_hash(), password) and (
                password_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False


# --- refresh tokens --------------------------------------------------------


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# --- signing keys ----------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint of the public key."""
    canonical = f'{{"crv":"Ed25519","kty":"OKP","x":"{_b64url(_raw_public(key))}"}}'
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _write_once(path: Path, data: bytes, mode: int) -> None:
    # Several processes may start at once: write aside, then link into place;
    # whoever links first wins and the others keep the winner's key.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def ensure_keypair(settings: Settings) -> None:
    """Generate the signing key pair when neither file exists (first start)."""
    priv, pub = settings.private_key_path, settings.public_key_path
    if priv.exists() or pub.exists():
        return
    key = Ed25519PrivateKey.generate()
    _write_once(
        priv,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    stored = serialization.load_pem_private_key(priv.read_bytes(), None)
    assert isinstance(stored, Ed25519PrivateKey)
    _write_once(
        pub,
        stored.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )


class KeyFileMissing(RuntimeError):
    """A key this process needs is not there; it is never made up on the spot."""


@dataclass(frozen=True)
class VerifyingKey:
    key: Ed25519PublicKey
    kid: str


def _default_keys(settings: Settings) -> bool:
    """True when no key file is configured: the keys live in the data dir, and the
    signing side (auth service, all-in-one app, `questline serve`) creates them on
    first start. A configured key is never made up."""
    return settings.jwt_private_key_file is None and settings.jwt_public_key_file is None


def prepare_signing_keys() -> None:
    """At the start of a process that signs tokens: create the default key pair if
    there is none yet, then load both keys, so that a missing or unreadable key stops
    the start rather than the first login."""
    signing_key()
    verifying_key()


def require_verifying_key() -> None:
    """At the start of a process that only verifies tokens: load the public key now,
    so that a missing one stops the start with KeyFileMissing. Never creates a key."""
    verifying_key()


@lru_cache
def verifying_key() -> VerifyingKey:
    settings = get_settings()
    path = settings.public_key_path
    if path.exists():
        key = serialization.load_pem_public_key(path.read_bytes())
    elif settings.private_key_path.exists():
        key = signing_key().public_key()  # the auth service may hold the private key only
    else:
        raise KeyFileMissing(
            f"JWT public key {path} not found (QUESTLINE_JWT_PUBLIC_KEY_FILE): create the "
            "key pair with `questline keys`, or start the auth service first"
        )
    if not isinstance(key, Ed25519PublicKey):
        raise RuntimeError(f"{path} is not an Ed25519 public key")
    return VerifyingKey(key, key_id(key))


@lru_cache
def signing_key() -> Ed25519PrivateKey:
    """The private key; only the signing side calls this, and it creates the default
    pair on first use."""
    settings = get_settings()
    path = settings.private_key_path
    if _default_keys(settings):
        ensure_keypair(settings)
    if not path.exists():
        raise KeyFileMissing(
            f"JWT private key {path} not found (QUESTLINE_JWT_PRIVATE_KEY_FILE): create "
            "the key pair with `questline keys`"
        )
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"{path} is not an Ed25519 private key")
    return key


def jwks() -> dict[str, Any]:
    vk = verifying_key()
    return {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64url(_raw_public(vk.key)),
                "kid": vk.kid,
                "alg": ALGORITHM,
                "use": "sig",
            }
        ]
    }


# --- access tokens ---------------------------------------------------------


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    role: Role
    jti: str
    # When verification stops accepting the token (exp plus the leeway), epoch seconds.
    valid_until: float = 0.0


def mint_access_token(user_id: int, role: str) -> tuple[str, int]:
    """A signed access token and its lifetime in seconds."""
    settings = get_settings()
    key = signing_key()  # first: on the signing side it creates the default pair
    now = int(time.time())
    ttl = settings.token_ttl_seconds
    claims = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + ttl,
        "iss": settings.jwt_issuer,
        "jti": uuid.uuid4().hex,
        "role": role,
    }
    vk = verifying_key()
    token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": vk.kid})
    return token, ttl


# Tokens this process has verified, with their claims and expiry: a client sends the
# same token with every request, and checking an Ed25519 signature again costs more than
# the rest of a cached read. Only exp changes its verdict over time, and it is checked
# on every use. Cleared when full (a burst of new tokens only costs their first check).
_verified: dict[str, tuple[TokenClaims, int]] = {}
_VERIFIED_LIMIT = 10_000


def decode_access_token(token: str) -> TokenClaims:
    """Verify signature, algorithm, kid, exp and iss; anything off is Unauthorized.
    iat and exp are allowed QUESTLINE_JWT_LEEWAY_SECONDS of clock skew between hosts."""
    known = _verified.get(token)
    if known is None:
        claims, exp = _decode_access_token(token)
        if len(_verified) >= _VERIFIED_LIMIT:
            _verified.clear()
        _verified[token] = (claims, exp)
        return claims
    claims, exp = known
    if exp <= time.time() - get_settings().jwt_leeway_seconds:  # PyJWT's rule
        raise Unauthorized("token expired")
    return claims


def _decode_access_token(token: str) -> tuple[TokenClaims, int]:
    vk = verifying_key()
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM or header.get("kid") != vk.kid:
            raise Unauthorized("invalid token")
        settings = get_settings()
        claims = jwt.decode(
            token,
            vk.key,
            algorithms=[ALGORITHM],
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": REQUIRED_CLAIMS},
        )
        user_id = int(claims["sub"])
        role = Role(claims["role"])  # ValueError for any other role
        exp = int(claims["exp"])
        return (
            TokenClaims(
                user_id=user_id,
                role=role,
                jti=str(claims["jti"]),
                valid_until=float(claims["exp"]) + settings.jwt_leeway_seconds,
            ),
            exp,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise Unauthorized("invalid token") from None
