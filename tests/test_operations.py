"""What operators meet: the schema revision at start and in readiness, health and readiness
that never wait behind the thread pool, each role's own metrics, response headers,
offline API docs, and documentation that lives in the repository."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter

from tests import support
from tests.conftest import PASSWORD

QUESTLINE = str(Path(sys.executable).parent / "questline")
UPGRADE_HINT = "questline db upgrade"
SIGNUP = {"user_name": "alice", "password": PASSWORD}


def head_revision() -> str:
    """The newest migration, read from Alembic's script directory."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def questline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QUESTLINE, *args],
        env=env,
        cwd=support.ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A PostgreSQL database of its own with no table at all."""
    name = f"{support.TEST_DB}_unmigrated"
    admin = sa.create_engine(f"{support.PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield f"{support.PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def start_app(env: dict[str, str]) -> support.Process:
    """The all-in-one app in its own process with exactly this environment."""
    port = support.free_port()
    proc = support.Process(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)], env, "schema"
    )
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]

    def answers() -> bool:
        if not proc.alive():
            return True
        try:
            return httpx.get(f"{proc.url}/healthz", timeout=1).status_code == 200  # type: ignore[attr-defined]
        except httpx.HTTPError:
            return False

    support.wait_until(answers, 60, "the app to answer")
    assert proc.alive(), proc.output()
    return proc


def assert_refuses_until_upgraded(app: support.Process, env: dict[str, str]) -> None:
    """Readiness names the schema, requests are a 503 that says what to run, the
    process says so once; after `questline db upgrade` everything answers."""
    url: str = app.url  # type: ignore[attr-defined]
    support.wait_until(
        lambda: UPGRADE_HINT in app.output(), 60, "the app to log the missing schema at start"
    )
    r = httpx.get(f"{url}/readyz", timeout=30)
    assert r.status_code == 503, r.text
    assert r.json()["failed"] == ["schema"]
    assert r.json()["checks"] == {"database": "ok", "schema": "failed", "broker": "ok"}

    for answer in (
        httpx.post(f"{url}/auth/signup", json=SIGNUP, timeout=30),
        httpx.post(f"{url}/auth/login", json=SIGNUP, timeout=30),
        httpx.post(f"{url}/auth/refresh", json={"refresh_token": "not-a-token"}, timeout=30),
    ):
        assert answer.status_code == 503, answer.text
        detail = answer.json()["detail"]
        assert UPGRADE_HINT in detail
        assert "retry shortly" not in detail  # retrying never creates the tables
        assert "Traceback" not in answer.text
    httpx.get(f"{url}/readyz", timeout=30)
    output = app.output()
    assert output.count(UPGRADE_HINT) == 1, output
    assert "Traceback" not in output

    upgraded = questline(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert head_revision() in upgraded.stdout

    r = httpx.get(f"{url}/readyz", timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "schema": "ok", "broker": "ok"}
    r = httpx.post(f"{url}/auth/signup", json=SIGNUP, timeout=30)
    assert r.status_code == 201, r.text
    r = httpx.post(f"{url}/auth/login", json=SIGNUP, timeout=30)
    assert r.status_code == 200, r.text
    assert (
        httpx.get(
            f"{url}/quests",
            headers={"Authorization": "Bearer " + r.json()["access_token"]},
            timeout=30,
        ).status_code
        == 200
    )
    assert app.output().count(UPGRADE_HINT) == 1


def test_an_unmigrated_postgresql_database_is_a_503_that_says_to_upgrade(
    empty_database: str,
) -> None:
    env = support.child_env(QUESTLINE_DATABASE_URL=empty_database)
    app = start_app(env)
    try:
        assert_refuses_until_upgraded(app, env)
    finally:
        app.stop()


def test_an_unmigrated_sqlite_file_is_a_503_that_says_to_upgrade(tmp_path: Path) -> None:
    env = support.child_env(QUESTLINE_DATA_DIR=str(tmp_path / "data"))
    del env["QUESTLINE_DATABASE_URL"], env["QUESTLINE_REDIS_URL"]  # the embedded stores
    app = start_app(env)
    try:
        assert_refuses_until_upgraded(app, env)
    finally:
        app.stop()


def test_schema_state_names_missing_current_and_unknown_revisions(empty_database: str) -> None:
    from questline.infra import migrate

    engine = sa.create_engine(empty_database)
    try:
        with engine.connect() as conn:
            state = migrate.schema_state(conn)
        assert (state.ready, state.current, state.head) == (False, None, head_revision())
        assert UPGRADE_HINT in state.problem

        migrate.upgrade(empty_database)
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == head_revision()
            state = migrate.schema_state(conn)
        assert (state.ready, state.current, state.problem) == (True, head_revision(), "")

        # A revision this code does not know was written by newer code: the schema has
        # what this code needs (migrations only add), so it stays ready.
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
        with engine.connect() as conn:
            assert migrate.schema_state(conn).ready
    finally:
        engine.dispose()


def test_a_schema_behind_the_code_is_not_ready(empty_database: str) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import migrations
    from questline.infra import migrate

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    revisions = [r.revision for r in ScriptDirectory.from_config(cfg).walk_revisions()]
    assert len(revisions) >= 2, "needs a migration below the head"
    older = revisions[1]
    migrate.upgrade(empty_database, older)
    engine = sa.create_engine(empty_database)
    try:
        with engine.connect() as conn:
            state = migrate.schema_state(conn)
    finally:
        engine.dispose()
    assert (state.ready, state.current, state.head) == (False, older, head_revision())
    assert UPGRADE_HINT in state.problem


# --- health and readiness -------------------------------------------------------


def test_readiness_lists_its_checks_as_ok(client: httpx.Client) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ok",
        "checks": {"database": "ok", "schema": "ok", "broker": "ok"},
    }


def test_health_and_readiness_answer_while_the_thread_pool_is_full() -> None:
    """Every `def` route waits for a thread of anyio's pool; health and readiness must
    not. The pool is cut to one thread and that thread is held by a slow request."""
    from api.factory import create_app

    entered, release = threading.Event(), threading.Event()
    probe = APIRouter()

    @probe.post("/test/pool-size")
    async def pool_size(size: int) -> dict[str, int]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = size
        return {"size": int(limiter.total_tokens)}

    @probe.get("/test/slow")
    def slow() -> dict[str, bool]:
        entered.set()
        return {"released": release.wait(300)}

    @probe.get("/test/quick")
    def quick() -> dict[str, bool]:
        return {"ok": True}

    app = create_app("pool test", "test", [probe])
    with support.LiveServer(app) as live, httpx.Client(base_url=live.url) as http:
        assert http.post("/test/pool-size", params={"size": 1}).json() == {"size": 1}
        holder = threading.Thread(target=lambda: httpx.get(f"{live.url}/test/slow", timeout=330))
        holder.start()
        try:
            assert entered.wait(60), "the slow request never started"
            # Negative control: a `def` route is stuck behind the held thread.
            with pytest.raises(httpx.ReadTimeout):
                http.get("/test/quick", timeout=1)
            r = http.get("/healthz", timeout=60)
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
            r = http.get("/readyz", timeout=60)
            assert r.status_code == 200, r.text
        finally:
            release.set()
            holder.join(60)


def test_readiness_hides_the_failure_and_logs_it() -> None:
    dead = f"postgresql+psycopg2://nobody@127.0.0.1:{support.free_port()}/questline"
    server = support.start_server("api.main:app", QUESTLINE_DATABASE_URL=dead)
    try:
        url: str = server.url  # type: ignore[attr-defined]
        r = httpx.get(f"{url}/readyz", timeout=30)
        assert r.status_code == 503
        assert r.json() == {
            "status": "unavailable",
            "failed": ["database"],
            "checks": {"database": "failed", "broker": "ok"},
        }
        assert "nobody" not in r.text
        assert "127.0.0.1" not in r.text
        support.wait_until(
            lambda: "OperationalError" in server.output(), 30, "the failure in the log"
        )
    finally:
        server.stop()


# --- metrics, headers, docs -----------------------------------------------------

WORKER_METRICS = (
    "questline_sign_ins_processed_total",
    "questline_rewards_earned_total",
    "questline_sign_in_lag_seconds",
)


def test_api_metrics_export_api_metrics_only(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    assert "questline_http_requests_total" in text
    assert "questline_outbox_pending" in text
    assert "process_resident_memory_bytes" in text
    for name in WORKER_METRICS:
        assert name not in text


def test_worker_metrics_export_worker_metrics_only() -> None:
    from prometheus_client import generate_latest

    from workers import metrics

    text = generate_latest(metrics.REGISTRY).decode()
    for name in WORKER_METRICS:
        assert name in text
    assert "questline_http_requests_total" not in text
    assert "questline_outbox_pending" not in text


NOSNIFF = ("x-content-type-options", "nosniff")


def test_every_answer_says_nosniff(client: httpx.Client) -> None:
    answers = [
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/metrics"),
        client.get("/openapi.json"),
        client.get("/docs"),
        client.get("/auth/me"),  # 401
        client.get("/no-such-path"),  # 404
        client.post("/auth/signup", json={"user_name": "x"}),  # 422
        client.post("/auth/signup", content=b"{" * 70_000),  # 413
    ]
    for r in answers:
        assert (NOSNIFF[0], r.headers.get(NOSNIFF[0])) == NOSNIFF, (r.request.url, r.status_code)


def test_an_unhandled_error_also_says_nosniff() -> None:
    from api.factory import create_app

    broken = APIRouter()

    @broken.get("/test/broken")
    async def fails() -> None:
        raise RuntimeError("a bug")

    with support.LiveServer(create_app("t", "test", [broken])) as live:
        r = httpx.get(f"{live.url}/test/broken", timeout=30)
    assert r.status_code == 500
    assert r.headers.get(NOSNIFF[0]) == NOSNIFF[1]
    assert "a bug" not in r.text


def test_the_embedded_server_sends_no_server_header() -> None:
    import uvicorn

    from questline.commands import embedded

    port = support.free_port()
    server = uvicorn.Server(embedded.uvicorn_config("127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        support.wait_until(lambda: server.started, 60, "the embedded app to start")
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert r.status_code == 200
        assert "server" not in r.headers
        assert r.headers.get(NOSNIFF[0]) == NOSNIFF[1]
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_test_servers_send_no_server_header(client: httpx.Client) -> None:
    assert "server" not in client.get("/healthz").headers
    app = support.start_server("api.main:app")
    try:
        assert "server" not in httpx.get(f"{app.url}/healthz", timeout=30).headers  # type: ignore[attr-defined]
    finally:
        app.stop()


EXTERNAL = re.compile(r"(?:https?:)?//[a-z0-9.-]+", re.IGNORECASE)


@pytest.mark.parametrize(("page", "script"), [("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")])
def test_api_docs_load_nothing_from_another_host(
    client: httpx.Client, page: str, script: str
) -> None:
    r = client.get(page)
    assert r.status_code == 200
    assert EXTERNAL.findall(r.text) == []
    sources = re.findall(r'<script src="([^"]+)"', r.text)
    assert sources
    for src in sources:
        js = client.get(src)
        assert js.status_code == 200, src
        assert "javascript" in js.headers["content-type"]
        assert script in js.text
    for href in re.findall(r'<link[^>]+href="([^"]+)"', r.text):
        assert client.get(href).status_code == 200, href


# --- documentation in the repository ------------------------------------------


def markdown_links(path: Path) -> list[str]:
    return [
        target.split("#")[0]
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text())
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    ]


def test_readme_and_docs_link_only_files_in_the_repository() -> None:
    pages = [support.ROOT / "README.md", *sorted((support.ROOT / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for target in markdown_links(page):
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(support.ROOT), f"{page.name} links {target}"
            assert resolved.exists(), f"{page.name} links {target}, which is missing"
            checked += 1
    assert "docs/api.md" in markdown_links(support.ROOT / "README.md")
    assert checked >= 3


def test_the_contract_is_in_the_repository_and_the_openapi_document_links_it(
    client: httpx.Client,
) -> None:
    contract = (support.ROOT / "docs" / "api.md").read_text()
    assert "public contract" in contract.splitlines()[0].lower()
    for promise in ("GET /healthz", "POST /auth/signup", "questline db upgrade", "# v2"):
        assert promise in contract
    assert "docs/api.md" in client.get("/openapi.json").json()["info"]["description"]
