"""docker-compose.yml without a Docker engine: every service's command is a real
entry point, its settings are ones the code reads, the proxy routes every path to
its owner; then the same commands run against the local PostgreSQL and Redis."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from questline.config import Settings
from tests import support
from tests.conftest import PASSWORD

COMPOSE = yaml.safe_load((support.ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = {
    "auth": "api.auth.main:app",
    "catalog": "api.catalog.main:app",
    "processing": "api.processing.main:app",
}
OPERATIONS = {"/healthz", "/readyz", "/metrics"}
BIN = Path(sys.executable).parent


def command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    assert isinstance(cmd, list), f"{service}: command must be an exec-form list"
    return [str(part) for part in cmd]


def option(cmd: list[str], name: str) -> str:
    for i, part in enumerate(cmd):
        if part == name:
            return cmd[i + 1]
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {cmd}")


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: environment must be a mapping"
    return {k: str(v) for k, v in env.items()}


# --- the file itself --------------------------------------------------------


def test_compose_has_every_role_with_health_checks_and_start_order() -> None:
    assert set(SERVICES) >= {
        "postgres", "redis", "migrate", "keys", "worker", "webhook-worker", "flower", "proxy"
    }  # fmt: skip
    assert set(SERVICES) >= set(APP_SERVICES)
    redis_cmd = " ".join(command("redis"))
    assert "--appendonly yes" in redis_cmd
    assert "--maxmemory-policy noeviction" in redis_cmd
    assert any(v.startswith("pgdata:") for v in SERVICES["postgres"]["volumes"])
    assert any(v.startswith("redisdata:") for v in SERVICES["redis"]["volumes"])

    for name in [
        "postgres",
        "redis",
        "worker",
        "webhook-worker",
        "flower",
        "proxy",
        "catalog-grpc",
        *APP_SERVICES,
    ]:
        assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for job in ("migrate", "keys"):
        assert SERVICES[job]["restart"] == "no"

    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in APP_SERVICES:
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}
        assert deps["keys"] == {"condition": "service_completed_successfully"}
        assert deps["redis"] == {"condition": "service_healthy"}
        assert SERVICES["proxy"]["depends_on"][name] == {"condition": "service_healthy"}
        # The health check asks the port the service listens on.
        port = option(command(name), "--port")
        assert f"127.0.0.1:{port}/readyz" in " ".join(SERVICES[name]["healthcheck"]["test"])
    assert SERVICES["worker"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    # --scale worker=N needs no fixed name and no published port.
    for worker in ("worker", "webhook-worker"):
        assert "container_name" not in SERVICES[worker]
        assert "ports" not in SERVICES[worker]
    # Receivers never slow the application of events: webhooks have a worker of their own.
    assert option(command("worker"), "--queues") == "sign_ins,questline"
    assert option(command("webhook-worker"), "--queues") == "webhooks"
    ports = [option(command(n), "--port") for n in APP_SERVICES]
    assert len(set(ports)) == 3


def test_the_grpc_server_is_the_catalog_source_of_processing_and_the_workers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from questline.commands import cli

    cmd = command("catalog-grpc")
    assert cmd[:2] == ["questline", "grpc"]
    port, metrics_port = option(cmd, "--port"), option(cmd, "--metrics-port")
    assert SERVICES["catalog-grpc"]["ports"] == [
        f"127.0.0.1:{port}:{port}",
        f"127.0.0.1:{metrics_port}:{metrics_port}",
    ]
    assert f"127.0.0.1:{port}" in " ".join(SERVICES["catalog-grpc"]["healthcheck"]["test"])
    deps = SERVICES["catalog-grpc"]["depends_on"]
    assert deps["migrate"] == {"condition": "service_completed_successfully"}
    for name in ("processing", "worker"):
        assert environment(name)["QUESTLINE_CATALOG_GRPC"] == f"catalog-grpc:{port}"
        assert SERVICES[name]["depends_on"]["catalog-grpc"] == {"condition": "service_healthy"}
    # The catalog HTTP service writes the catalog: it reads the database, not itself.
    assert "QUESTLINE_CATALOG_GRPC" not in environment("catalog")
    with pytest.raises(SystemExit) as exited:
        cli.main(["grpc", "--help"])
    assert exited.value.code == 0
    usage = capsys.readouterr().out
    assert "--port" in usage
    assert "--metrics-port" in usage
    assert "COPY rpc ./rpc" in (support.ROOT / "Dockerfile").read_text()


def compose_grpc_process(grpc_port: int, metrics_port: int) -> support.Process:
    """The catalog-grpc service's command on local ports, once its health check (the
    compose one, on the same port) passes."""
    cmd = command("catalog-grpc")
    cmd[cmd.index("--port") + 1] = str(grpc_port)
    cmd[cmd.index("--metrics-port") + 1] = str(metrics_port)
    proc = support.Process([str(BIN / "questline"), *cmd[1:]], support.child_env(), "grpc")
    check = [part for part in SERVICES["catalog-grpc"]["healthcheck"]["test"] if part != "CMD"]
    port = option(command("catalog-grpc"), "--port")
    check = [sys.executable, *[p.replace(f":{port}", f":{grpc_port}") for p in check[1:]]]

    def healthy() -> bool:
        if not proc.alive():
            return True
        return subprocess.run(check, capture_output=True, timeout=30).returncode == 0

    support.wait_until(healthy, 30, "catalog-grpc to pass its health check")
    assert proc.alive(), f"catalog-grpc exited:\n{proc.output()}"
    return proc


def test_only_the_proxy_is_published_beyond_this_host() -> None:
    for name, service in SERVICES.items():
        for published in service.get("ports", []):
            if name == "proxy":
                continue
            assert published.startswith("127.0.0.1:"), f"{name} publishes {published}"
    assert SERVICES["flower"]["ports"] == ["127.0.0.1:5555:5555"]


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_services_send_no_server_header(service: str) -> None:
    assert "--no-server-header" in command(service)


def test_the_proxy_hides_its_version_and_says_nosniff_on_its_own_answers() -> None:
    conf = (support.ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"^\s*server_tokens off;", conf, re.MULTILINE)
    own = re.findall(r"location (?:= )?/\S* \{([^}]*return [^}]*)\}", conf)
    assert len(own) == 2
    for block in own:
        assert "add_header X-Content-Type-Options nosniff always;" in block


def test_only_auth_gets_the_private_key() -> None:
    def mounts(name: str) -> set[str]:
        return {v.split(":")[0] for v in SERVICES[name].get("volumes", [])}

    assert mounts("keys") == {"jwt-private", "jwt-public"}
    assert mounts("auth") == {"jwt-private", "jwt-public"}
    for name in ("catalog", "processing"):
        assert mounts(name) == {"jwt-public"}
        env = environment(name)
        assert "QUESTLINE_JWT_PRIVATE_KEY_FILE" not in env
        assert env["QUESTLINE_JWT_PUBLIC_KEY_FILE"].startswith("/keys/public/")
    for name in ("auth", "keys"):
        env = environment(name)
        assert env["QUESTLINE_JWT_PRIVATE_KEY_FILE"].startswith("/keys/private/")
        assert env["QUESTLINE_JWT_PUBLIC_KEY_FILE"].startswith("/keys/public/")
    for name in ("worker", "webhook-worker", "flower", "migrate"):
        assert not mounts(name) & {"jwt-private", "jwt-public"}


def test_flower_requires_basic_auth_from_the_environment() -> None:
    assert command("flower")[:4] == ["celery", "-A", "workers", "flower"]
    # ${VAR:?message}: compose refuses to start Flower unprotected.
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?.+\}", environment("flower")["FLOWER_BASIC_AUTH"])


def test_environment_names_are_settings_the_code_reads() -> None:
    fields = {f"QUESTLINE_{name.upper()}" for name in Settings.model_fields}
    used = {
        key
        for name in SERVICES
        for key in environment(name)
        if key.startswith("QUESTLINE_") or key.startswith("FLOWER_")
    }
    dockerfile = (support.ROOT / "Dockerfile").read_text()
    used |= set(re.findall(r"\b(QUESTLINE_[A-Z_]+)=", dockerfile))
    assert {k for k in used if k.startswith("QUESTLINE_")} <= fields, sorted(used - fields)

    from flower.options import options  # Flower reads FLOWER_<OPTION> from the environment

    for key in (k for k in used if k.startswith("FLOWER_")):
        assert key.removeprefix("FLOWER_").lower() in options, key


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_service_commands_name_importable_asgi_apps(service: str) -> None:
    from fastapi import FastAPI

    cmd = command(service)
    assert cmd[0] == "uvicorn"
    assert cmd[1] == APP_SERVICES[service]
    module, attr = cmd[1].split(":")
    assert isinstance(getattr(importlib.import_module(module), attr), FastAPI)
    published = SERVICES[service]["ports"][0].rsplit(":", 1)[1]
    assert published == option(cmd, "--port")


def test_celery_and_questline_commands_exist(capsys: pytest.CaptureFixture[str]) -> None:
    from click.testing import CliRunner

    from questline.commands import cli
    from workers import app

    assert {"questline.process_sign_in", "questline.sweep_outbox"} <= set(app.tasks)
    for service in ("worker", "webhook-worker", "flower", "migrate", "keys"):
        cmd = command(service)
        if cmd[0] == "celery":
            from celery.bin.celery import celery  # the `celery` command, its plugins included

            assert cmd[1:3] == ["-A", "workers"]
            result = CliRunner().invoke(celery, [*cmd[1:4], "--help"])
            assert result.exit_code == 0, f"{service}: {result.output}"
            assert f"Usage: celery {cmd[3]} " in result.output
        else:
            assert cmd[0] == "questline"
            with pytest.raises(SystemExit) as exited:
                cli.main([*cmd[1:], "--help"])
            assert exited.value.code == 0, service
            assert f"usage: questline {' '.join(cmd[1:])}" in capsys.readouterr().out


# --- the reverse proxy ------------------------------------------------------


def proxy_routes() -> list[tuple[re.Pattern[str], str]]:
    """(path regex, service) for each `location ~ regex { proxy_pass $service; }`."""
    conf = (support.ROOT / "deploy" / "nginx.conf").read_text()
    targets = dict(re.findall(r"set \$(\w+)\s+http://(\w+):\d+;", conf))
    routes = re.findall(r"location ~ (\S+) \{\s*proxy_pass \$(\w+);", conf)
    assert routes, "no proxied locations in deploy/nginx.conf"
    return [(re.compile(rx), targets[var]) for rx, var in routes]


def owner(path: str) -> str | None:
    """The service nginx sends `path` to (regex locations: the first match wins)."""
    return next((svc for rx, svc in proxy_routes() if rx.search(path)), None)


def test_proxy_sends_every_route_of_each_service_to_that_service() -> None:
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in SERVICES["proxy"]["volumes"]
    routed = 0
    for service, app_path in APP_SERVICES.items():
        module, attr = app_path.split(":")
        app = getattr(importlib.import_module(module), attr)
        for path in app.openapi()["paths"]:
            if path in OPERATIONS:
                continue
            concrete = re.sub(r"\{[^}]+\}", "1", path)
            assert owner(concrete) == service, f"{concrete} goes to {owner(concrete)}"
            routed += 1
    assert routed >= 15  # the paths of docs/api.md
    for stray in ("/quest", "/meta", "/authx", "/", "/docs"):
        assert owner(stray) is None, stray


# --- the same commands, run here --------------------------------------------


def compose_process(service: str, port: int, **env: str) -> support.Process:
    """Run the service's compose command on 127.0.0.1:port, as compose would."""
    cmd = command(service)
    args = [sys.executable, "-m", "uvicorn", *cmd[1:]]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    proc = support.Process(args, support.child_env(**env), service)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not proc.alive():
            return True
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    support.wait_until(ready, 30, f"{service} to be ready")
    assert proc.alive(), f"{service} exited:\n{proc.output()}"
    return proc


def test_three_services_and_two_workers_share_one_story(tmp_path: Path) -> None:
    """keys and migrate jobs, then auth, catalog and processing each in its own process
    with its compose command, two workers; the client goes through the proxy's routes."""
    private = tmp_path / "private" / "jwt-private.pem"
    public = tmp_path / "public" / "jwt-public.pem"
    empty_data = tmp_path / "data"
    keys_env = {
        "QUESTLINE_JWT_PRIVATE_KEY_FILE": str(private),
        "QUESTLINE_JWT_PUBLIC_KEY_FILE": str(public),
        "QUESTLINE_DATA_DIR": str(empty_data),
    }
    for job in ("keys", "migrate"):
        done = subprocess.run(
            [str(BIN / "questline"), *command(job)[1:]],
            env=support.child_env(**keys_env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{job}: {done.stderr}"
    assert private.stat().st_mode & 0o077 == 0

    verify_only = {
        "QUESTLINE_JWT_PUBLIC_KEY_FILE": str(public),
        "QUESTLINE_JWT_PRIVATE_KEY_FILE": str(tmp_path / "absent" / "jwt-private.pem"),
        "QUESTLINE_DATA_DIR": str(empty_data),
    }
    ports = {name: support.free_port() for name in APP_SERVICES}
    grpc_port = support.free_port()
    # Processing and the workers read the catalog over gRPC, as in compose.
    grpc_env = {"QUESTLINE_CATALOG_GRPC": f"127.0.0.1:{grpc_port}"}
    procs: list[support.Process] = []
    try:
        procs.append(compose_grpc_process(grpc_port, support.free_port()))
        procs.append(compose_process("auth", ports["auth"], **keys_env))
        procs.append(compose_process("catalog", ports["catalog"], **verify_only))
        procs.append(
            compose_process("processing", ports["processing"], **verify_only, **grpc_env)
        )
        procs.append(support.start_worker(name="compose-a", **grpc_env))
        procs.append(support.start_worker(name="compose-b", **grpc_env))

        def url(path: str) -> str:
            service = owner(path.split("?")[0])
            assert service is not None, path
            return f"http://127.0.0.1:{ports[service]}{path}"

        with httpx.Client(timeout=30) as http:
            r = http.post(url("/auth/signup"), json={"user_name": "erin", "password": PASSWORD})
            assert r.status_code == 201, r.text
            assert "server" not in r.headers
            assert r.headers["x-content-type-options"] == "nosniff"
            creds = {"user_name": "erin", "password": PASSWORD}
            signs = [http.post(url("/auth/login"), json=creds).json()]
            for _ in range(2):
                body = {"refresh_token": signs[-1]["refresh_token"]}
                signs.append(http.post(url("/auth/refresh"), json=body).json())
            token = signs[-1]["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            kid = jwt.get_unverified_header(token)["kid"]
            assert [k["kid"] for k in http.get(url("/.well-known/jwks.json")).json()["keys"]] == [
                kid
            ]

            # Catalog and processing verify auth's token with the public key alone.
            assert http.get(url("/quests/1"), headers=auth).json()["name"] == (
                "sign-in-three-times"
            )
            for s in signs:
                support.wait_until(
                    lambda s=s: (
                        http.get(url(f"/sign-ins/{s['sign_in_id']}"), headers=auth).json()["status"]
                        == "processed"
                    ),
                    20,
                    f"sign-in {s['sign_in_id']} to be processed",
                )
            r = http.post(url("/me/quests/1/claim"), headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["balance"] == {"gold": 0, "diamond": 10}
            assert http.get(url("/auth/me"), headers=auth).json()["diamond"] == 10

            # A token signed with any other key is refused everywhere.
            claims = jwt.decode(token, options={"verify_signature": False})
            forged = jwt.encode(
                claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
            )
            for path in ("/auth/me", "/quests", "/me/quests"):
                r = http.get(url(path), headers={"Authorization": f"Bearer {forged}"})
                assert r.status_code == 401, (path, r.text)

        # Nobody made up a key: the verify-only services read the public file only.
        assert not (tmp_path / "absent").exists()
        assert not list(empty_data.glob("jwt-*"))
    finally:
        for p in procs:
            p.stop()
