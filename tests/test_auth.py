"""The User Authentication service over real HTTP: signup, login, refresh, /auth/me,
bans, JWKS, and the access-token checks every service applies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select, text

from models import User
from questline import security
from questline.config import get_settings
from questline.infra import db
from tests import factories as f
from tests import support

SIGN_IN_FIELDS = {
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "user_id",
    "sign_in_id",
}
USER_FIELDS = {
    "user_id",
    "user_name",
    "status",
    "gold",
    "diamond",
    "created_at",
    "last_login_at",
    "timezone",
    "wallet",
}


def signup(client: httpx.Client, name: str, password: str = f.PASSWORD) -> httpx.Response:
    return client.post("/auth/signup", json={"user_name": name, "password": password})


def login(client: httpx.Client, name: str, password: str = f.PASSWORD) -> httpx.Response:
    return client.post("/auth/login", json={"user_name": name, "password": password})


def stored_user(name: str = "", **columns: Any) -> int:
    """A committed user who logs in with f.PASSWORD (no signup round trip)."""
    with db.transaction() as session:
        return f.add_user(session, name or None, **columns).user_id


# --- signup -----------------------------------------------------------------


def test_signup_creates_a_new_player_with_an_empty_wallet(client: httpx.Client) -> None:
    r = signup(client, "Alice_01.x-y")
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"user_id", "user_name", "status", "gold", "diamond"}
    assert isinstance(body["user_id"], int)
    assert body | {"user_id": 0} == {
        "user_id": 0,
        "user_name": "Alice_01.x-y",
        "status": "new",
        "gold": 0,
        "diamond": 0,
    }


def test_signup_refuses_a_name_taken_in_any_letter_case(client: httpx.Client) -> None:
    assert signup(client, "Alice").status_code == 201
    for name in ("Alice", "alice", "ALICE"):
        r = signup(client, name, password="another-password")
        assert r.status_code == 409, r.text
        assert "taken" in r.json()["detail"]
    assert login(client, "alice", "another-password").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"user_name": "ab", "password": "long-enough"},
        {"user_name": "x" * 33, "password": "long-enough"},
        {"user_name": "with space", "password": "long-enough"},
        {"user_name": "émile", "password": "long-enough"},
        {"user_name": "nul\x00byte", "password": "long-enough"},
        {"user_name": "bob", "password": "short"},
        {"user_name": "bob", "password": "p" * 129},
        {"user_name": "bob"},
        {"password": "long-enough"},
        {"user_name": 12345, "password": "long-enough"},
        {"user_name": "bob", "password": "long-enough", "role": "admin"},
    ],
)
def test_signup_refuses_an_invalid_body_and_stores_nothing(
    client: httpx.Client, body: dict[str, Any]
) -> None:
    r = client.post("/auth/signup", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
    assert login(client, "bob", "long-enough").status_code == 401


def test_a_refused_body_does_not_echo_the_password(client: httpx.Client) -> None:
    secret = "hunter2-" + "x" * 130  # too long: refused
    r = client.post("/auth/signup", json={"user_name": "echo-check", "password": secret})
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "password"]]
    assert "hunter2" not in r.text
    r = client.post("/auth/login", json={"user_name": "echo-check", "password": secret})
    assert r.status_code == 422
    assert "hunter2" not in r.text


def test_signup_accepts_the_boundary_lengths(client: httpx.Client) -> None:
    assert signup(client, "abc", password="p" * 8).status_code == 201
    assert signup(client, "y" * 32, password="p" * 128).status_code == 201
    assert login(client, "y" * 32, "p" * 128).status_code == 200


# --- login ------------------------------------------------------------------


def test_login_answers_tokens_and_a_stored_sign_in(client: httpx.Client) -> None:
    user_id = signup(client, "alice").json()["user_id"]
    r = login(client, "ALICE")  # names match without regard to case
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == SIGN_IN_FIELDS
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == get_settings().token_ttl_seconds
    assert body["user_id"] == user_id
    claims = jwt.decode(
        body["access_token"],
        security.verifying_key().key,
        algorithms=["EdDSA"],
        issuer="questline",
    )
    assert claims["sub"] == str(user_id)
    assert claims["role"] == "player"
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert {"iat", "exp", "iss", "jti"} <= set(claims)
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    sign_in = client.get(f"/sign-ins/{body['sign_in_id']}", headers=headers)
    assert sign_in.status_code == 200  # durable before the answer


def test_wrong_password_and_unknown_user_get_the_same_401(client: httpx.Client) -> None:
    stored_user("alice")
    wrong = login(client, "alice", "wrong-password")
    unknown = login(client, "nobody", "wrong-password")
    invalid_name = login(client, "no such name!", "wrong-password")
    for r in (wrong, unknown, invalid_name):
        assert r.status_code == 401
        assert r.json() == wrong.json()
        assert r.headers["www-authenticate"] == "Bearer"


def test_login_turns_a_new_player_into_not_new(client: httpx.Client) -> None:
    assert signup(client, "alice").json()["status"] == "new"
    token = login(client, "alice").json()["access_token"]
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["status"] == "not_new"
    assert me["last_login_at"] is not None


def test_repeated_failures_for_a_name_are_limited_with_retry_after(client: httpx.Client) -> None:
    stored_user("alice")
    limit = get_settings().login_max_failures_per_name_and_client  # all from one client
    for _ in range(limit):
        assert login(client, "alice", "wrong-password").status_code == 401
    for password in ("wrong-password", f.PASSWORD):  # even the right one waits now
        r = login(client, "Alice", password)
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= get_settings().login_failure_window_seconds
        assert "too many" in r.json()["detail"]
    # Other names are not affected.
    stored_user("bob")
    assert login(client, "bob").status_code == 200


def test_a_successful_login_clears_the_failure_count(client: httpx.Client) -> None:
    stored_user("alice")
    limit = get_settings().login_max_failures_per_name_and_client
    for _ in range(limit - 1):
        assert login(client, "alice", "wrong-password").status_code == 401
    assert login(client, "alice").status_code == 200
    for _ in range(limit - 1):
        assert login(client, "alice", "wrong-password").status_code == 401
    assert login(client, "alice").status_code == 200


@pytest.mark.parametrize(
    "body", [{}, {"user_name": "alice"}, {"user_name": "a" * 65, "password": "x"}, []]
)
def test_login_refuses_an_invalid_body(client: httpx.Client, body: Any) -> None:
    assert client.post("/auth/login", json=body).status_code == 422


# --- refresh ----------------------------------------------------------------


def refresh(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/auth/refresh", json={"refresh_token": token})


def test_refresh_rotates_the_token_and_is_a_sign_in(client: httpx.Client) -> None:
    stored_user("alice")
    first = login(client, "alice").json()
    r = refresh(client, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert set(second) == SIGN_IN_FIELDS
    assert second["refresh_token"] != first["refresh_token"]
    assert second["sign_in_id"] > first["sign_in_id"]
    assert second["user_id"] == first["user_id"]
    headers = {"Authorization": f"Bearer {second['access_token']}"}
    assert client.get("/auth/me", headers=headers).status_code == 200

    # The presented token stops working ...
    assert refresh(client, first["refresh_token"]).status_code == 401
    # ... and presenting a used one revoked its descendants too.
    r = refresh(client, second["refresh_token"])
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def test_reuse_revokes_only_that_login_s_family(client: httpx.Client) -> None:
    stored_user("alice")
    phone = login(client, "alice").json()["refresh_token"]
    laptop = login(client, "alice").json()["refresh_token"]
    phone_next = refresh(client, phone).json()["refresh_token"]
    assert refresh(client, phone).status_code == 401  # reuse
    assert refresh(client, phone_next).status_code == 401
    assert refresh(client, laptop).status_code == 200


@pytest.mark.parametrize("token", ["unknown-token", "x" * 512])
def test_refresh_refuses_unknown_tokens(client: httpx.Client, token: str) -> None:
    r = refresh(client, token)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("body", [{}, {"refresh_token": ""}, {"refresh_token": "x" * 513}])
def test_refresh_refuses_an_invalid_body(client: httpx.Client, body: Any) -> None:
    assert client.post("/auth/refresh", json=body).status_code == 422


def test_refresh_refuses_an_expired_token(client: httpx.Client) -> None:
    stored_user("alice")
    token = login(client, "alice").json()["refresh_token"]
    with db.transaction() as session:
        session.execute(text("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'"))
    assert refresh(client, token).status_code == 401


# --- /auth/me and bans ------------------------------------------------------


def test_me_shows_the_token_user_with_the_wallet(client: httpx.Client) -> None:
    user_id = stored_user("alice")
    with db.transaction() as session:
        f.set_balance(session, user_id, "gold", 3)
        f.set_balance(session, user_id, "diamond", 4)
    r = client.get("/auth/me", headers=f.bearer(user_id))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == USER_FIELDS
    assert (body["user_id"], body["user_name"], body["gold"], body["diamond"]) == (
        user_id,
        "alice",
        3,
        4,
    )
    assert (body["status"], body["last_login_at"]) == ("new", None)
    assert (body["timezone"], body["wallet"]) == ("UTC", {"gold": 3, "diamond": 4})
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None


def test_ban_is_for_admins_and_locks_the_user_out(client: httpx.Client) -> None:
    admin_id = stored_user("root", role="admin")
    player_id = stored_user("alice")
    other_id = stored_user("bob")
    session = login(client, "alice").json()
    player = {"Authorization": f"Bearer {session['access_token']}"}

    r = client.post(f"/auth/users/{other_id}/ban", headers=player)
    assert r.status_code == 403
    assert client.get("/auth/me", headers=f.bearer(other_id)).json()["status"] == "new"
    assert client.post("/auth/users/999999/ban", headers=f.bearer(admin_id)).status_code == 404
    assert client.post("/auth/users/0/ban", headers=f.bearer(admin_id)).status_code == 422

    r = client.post(f"/auth/users/{player_id}/ban", headers=f.bearer(admin_id))
    assert r.status_code == 200, r.text
    assert set(r.json()) == USER_FIELDS
    assert r.json()["status"] == "banned"
    assert r.json()["user_id"] == player_id

    # Existing access tokens, refresh tokens and passwords all stop working.
    for path in ("/auth/me", "/me/quests", "/quests", "/me/rewards"):
        r = client.get(path, headers=player)
        assert r.status_code == 403, (path, r.text)
        assert "banned" in r.json()["detail"]
    assert refresh(client, session["refresh_token"]).status_code == 403
    assert login(client, "alice").status_code == 403
    assert client.get("/auth/me", headers=f.bearer(other_id)).status_code == 200


def test_an_admin_cannot_ban_themselves(client: httpx.Client) -> None:
    admin_id = stored_user("root", role="admin")
    r = client.post(f"/auth/users/{admin_id}/ban", headers=f.bearer(admin_id, "admin"))
    assert r.status_code == 409, r.text
    assert "yourself" in r.json()["detail"]
    assert client.get("/auth/me", headers=f.bearer(admin_id, "admin")).json()["status"] == "new"


CHAINS = 8


def ban_during_refresh_chains(
    client: httpx.Client, admin: dict[str, str], name: str
) -> tuple[httpx.Response, list[list[int]]]:
    """Log `name` in CHAINS times, refresh each session in a loop on its own connection
    until refused, and ban the user once every chain is going: the ban's answer and
    each chain's answers."""
    user_id = stored_user(name)
    tokens = [login(client, name).json()["refresh_token"] for _ in range(CHAINS)]
    answers: list[list[int]] = [[] for _ in range(CHAINS)]
    start = threading.Barrier(CHAINS)
    abort = threading.Event()  # the ban failed: nothing will end the chains

    def chain(i: int) -> None:
        with httpx.Client(base_url=client.base_url, timeout=120) as c:
            token = tokens[i]
            start.wait()
            while not abort.is_set():
                r = refresh(c, token)
                answers[i].append(r.status_code)
                if r.status_code != 200:
                    return
                token = r.json()["refresh_token"]

    threads = [threading.Thread(target=chain, args=(i,)) for i in range(CHAINS)]
    for t in threads:
        t.start()
    ban = None
    try:
        support.wait_until(
            lambda: all(len(a) >= 2 for a in answers), 120, "every chain to be refreshing"
        )
        ban = client.post(f"/auth/users/{user_id}/ban", headers=admin)
    finally:
        if ban is None or ban.status_code != 200:
            abort.set()
        for t in threads:
            t.join(120)  # a hang detector: once the user is banned, every chain ends
        abort.set()
    assert not any(t.is_alive() for t in threads), "a refresh chain never ended"
    return ban, answers


def test_a_ban_racing_8_refresh_chains_wins_every_time(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ban and refresh lock the same rows in the same order: a ban under refresh load
    neither deadlocks nor answers 503, and each chain sees 200s, then 403."""
    monkeypatch.setattr(get_settings(), "sign_ins_per_user_per_minute", 1_000_000)
    admin = f.bearer(stored_user("root", role="admin"), "admin")
    for trial in range(20):
        ban, answers = ban_during_refresh_chains(client, admin, f"racer{trial}")
        assert ban.status_code == 200, (trial, ban.status_code, ban.text)
        assert ban.json()["status"] == "banned"
        for seen in answers:
            assert seen[-1] == 403, (trial, Counter(seen))
            assert set(seen[:-1]) == {200}, (trial, Counter(seen))
        with db.transaction() as session:
            user = session.get_one(User, ban.json()["user_id"])
            assert user.status == "banned"


def test_jwks_publishes_the_verifying_key(client: httpx.Client) -> None:
    r = client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    [key] = r.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=="))
    user_id = stored_user("alice")
    token = f.bearer(user_id)["Authorization"].split()[1]
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]
    assert jwt.decode(token, public, algorithms=["EdDSA"], issuer="questline")["sub"] == str(
        user_id
    )


# --- access tokens ----------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def claims_for(user_id: int, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + 600,
        "iss": "questline",
        "jti": uuid.uuid4().hex,
        "role": "admin",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def bad_tokens(user_id: int) -> dict[str, str]:
    kid = security.verifying_key().kid
    header = {"alg": "EdDSA", "typ": "JWT", "kid": kid}
    key = security.signing_key()
    public_pem = get_settings().public_key_path.read_bytes()
    good = claims_for(user_id)

    def hs256(data: bytes) -> bytes:
        return hmac.new(public_pem, data, hashlib.sha256).digest()

    stranger = Ed25519PrivateKey.generate()
    return {
        "alg none": forge({"alg": "none", "typ": "JWT", "kid": kid}, good, lambda _d: b""),
        "alg none, no kid": forge({"alg": "none"}, good, lambda _d: b""),
        "HS256 with the public key": forge({"alg": "HS256", "kid": kid}, good, hs256),
        "expired": forge(header, claims_for(user_id, iat=1000, exp=2000), key.sign),
        "wrong issuer": forge(header, claims_for(user_id, iss="someone-else"), key.sign),
        "no exp": forge(header, claims_for(user_id, exp=None), key.sign),
        "no iss": forge(header, claims_for(user_id, iss=None), key.sign),
        "no sub": forge(header, claims_for(user_id, sub=None), key.sign),
        "unknown role": forge(header, claims_for(user_id, role="root"), key.sign),
        "unknown user": forge(header, claims_for(987654), key.sign),
        "unknown kid": forge({**header, "kid": "not-our-key"}, good, key.sign),
        "signed by another key": forge(header, good, stranger.sign),
        "bad signature": forge(header, good, key.sign)[:-6] + "AAAAAA",
        "claims changed after signing": _swap_claims(forge(header, good, key.sign), user_id),
        "garbage": "not.a.jwt",
        "empty parts": "..",
        "one word": "garbage",
    }


def _swap_claims(token: str, user_id: int) -> str:
    header, _claims, signature = token.split(".")
    other = b64(json.dumps(claims_for(user_id + 1)).encode())
    return f"{header}.{other}.{signature}"


def test_every_forged_or_broken_token_is_401(client: httpx.Client) -> None:
    user_id = stored_user("alice", role="admin")
    # The control: the same construction with the real key and claims is accepted.
    good = forge(
        {"alg": "EdDSA", "typ": "JWT", "kid": security.verifying_key().kid},
        claims_for(user_id),
        security.signing_key().sign,
    )
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {good}"}).status_code == 200

    for what, token in bad_tokens(user_id).items():
        for path in ("/auth/me", "/quests", "/me/quests"):
            r = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, (what, path, r.text)
            assert r.headers["www-authenticate"] == "Bearer", what
        r = client.post("/rewards", headers={"Authorization": f"Bearer {token}"}, json={})
        assert r.status_code == 401, (what, r.text)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Token abc", "bearer", "Bearer a b"],
)
def test_missing_or_malformed_authorization_is_401(
    client: httpx.Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in ("/auth/me", "/quests", "/rewards/1", "/me/events", "/sign-ins/1"):
        r = client.get(path, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["detail"]


def test_a_valid_token_of_a_banned_user_is_403(client: httpx.Client) -> None:
    user_id = stored_user("alice", status="banned")
    r = client.get("/auth/me", headers=f.bearer(user_id))
    assert r.status_code == 403
    assert r.json() == {"detail": "user is banned"}


def test_create_admin_refuses_a_name_the_api_would_refuse(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from questline.commands import cli
    from questline.infra import db
    from questline.users import repository

    monkeypatch.setenv("QUESTLINE_ADMIN_PASSWORD", "admin-password-1")
    assert cli.main(["create-admin", "boss\n"]) == 2  # `$` alone would let the newline in
    assert "name must be" in capsys.readouterr().err
    assert cli.main(["create-admin", "boss"]) == 0
    with db.transaction() as session:
        assert repository.get_by_name(session, "boss\n") is None
        user = repository.get_by_name(session, "BOSS")
        assert user is not None
        assert user.role == "admin"


def test_a_token_issued_slightly_ahead_of_this_clock_is_accepted(client: httpx.Client) -> None:
    """Hosts' clocks differ by a few seconds: iat in the near future is within the leeway."""
    user_id = stored_user("alice")
    leeway = get_settings().jwt_leeway_seconds
    assert 5 <= leeway <= 300
    header = {"alg": "EdDSA", "typ": "JWT", "kid": security.verifying_key().kid}
    now = int(time.time())

    def token(**changes: Any) -> dict[str, str]:
        claims = claims_for(user_id, role="player", **changes)
        forged = forge(header, claims, security.signing_key().sign)
        return {"Authorization": f"Bearer {forged}"}

    assert client.get("/auth/me", headers=token(iat=now + 5)).status_code == 200
    assert client.get("/auth/me", headers=token(iat=now + leeway + 60)).status_code == 401
    expired = token(iat=now - 3600, exp=now - leeway - 60)
    assert client.get("/auth/me", headers=expired).status_code == 401


def test_answers_carrying_secrets_are_not_stored_by_caches(client: httpx.Client) -> None:
    r = signup(client, "alice")
    assert r.status_code == 201
    assert r.headers["cache-control"] == "no-store"
    r = login(client, "alice")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    r = refresh(client, r.json()["refresh_token"])
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"


# --- signing keys: who may create them -------------------------------------------


def start_app(app: str, data_dir: Path) -> support.Process:
    """uvicorn serving `app` with an empty data dir and no key files configured."""
    env = support.child_env(QUESTLINE_DATA_DIR=str(data_dir))
    env.pop("QUESTLINE_JWT_PUBLIC_KEY_FILE", None)
    env.pop("QUESTLINE_JWT_PRIVATE_KEY_FILE", None)
    port = support.free_port()
    args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    proc = support.Process(args, env, name=app.split(".")[1])
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return proc


@pytest.mark.parametrize("app", ["api.catalog.main:app", "api.processing.main:app"])
def test_a_verifying_service_without_the_public_key_stops_at_start(
    app: str, tmp_path: Path
) -> None:
    proc = start_app(app, tmp_path)
    try:
        support.wait_until(lambda: not proc.alive(), 60, f"{app} to stop")
        out = proc.output()
        assert proc.proc.returncode != 0
        assert str(tmp_path / "jwt-public.pem") in out, out
        assert "questline keys" in out, out
    finally:
        proc.stop()
    assert list(tmp_path.iterdir()) == []  # it made up no key


def test_the_auth_service_creates_the_key_pair_on_first_start(tmp_path: Path) -> None:
    proc = start_app("api.auth.main:app", tmp_path)
    try:

        def answering() -> bool:
            assert proc.alive(), proc.output()
            try:
                return httpx.get(f"{proc.url}/healthz", timeout=2).status_code == 200  # type: ignore[attr-defined]
            except httpx.HTTPError:
                return False

        support.wait_until(answering, 60, "the auth service to answer")
        assert (tmp_path / "jwt-private.pem").exists()
        assert (tmp_path / "jwt-public.pem").exists()
        # Now a verifying service starts on the same data dir.
        other = start_app("api.catalog.main:app", tmp_path)
        try:
            support.wait_until(
                lambda: not other.alive() or "startup complete" in other.output(),
                60,
                "the catalog service to start",
            )
            assert other.alive(), other.output()
        finally:
            other.stop()
    finally:
        proc.stop()
