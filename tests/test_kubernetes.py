"""deploy/kubernetes/ without a cluster: the base and the overlays, built with
kustomize (`kubectl kustomize`), validate against the Kubernetes schemas
(kubernetes-validate, offline) and KEDA's resources against tests/schemas/keda.json;
then, as tests/test_compose.py does for docker-compose.yml, every command, setting,
port, probe and route is checked against the code."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sqlalchemy import create_engine, text

from questline.config import Settings
from tests import support

KUBERNETES = support.ROOT / "deploy" / "kubernetes"
OVERLAYS = ["example", "rabbitmq"]
# The oldest Kubernetes the manifests must suit (gRPC probes are GA since 1.27;
# managed clusters still offer 1.30) and the newest bundled schema.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
KEDA_SCHEMA = json.loads((support.ROOT / "tests" / "schemas" / "keda.json").read_text())
# Metadata each KEDA scaler requires (KEDA's documentation of each scaler).
KEDA_REQUIRED = {
    "redis": {"listName", "listLength"},
    "postgresql": {"query", "targetQueryValue"},
    "rabbitmq": {"queueName", "mode", "value"},
}
APPS = {
    "auth": "api.auth.main:app",
    "catalog": "api.catalog.main:app",
    "processing": "api.processing.main:app",
}
# Named by the contract (API.md) and being built on other branches: the gRPC server
# (`questline grpc`) and the broker setting (QUESTLINE_BROKER_URL). Once they are in
# the code, the test below says so: remove them from here, and they are checked too.
NOT_YET_MERGED_COMMANDS: set[str] = set()
NOT_YET_MERGED_SETTINGS: set[str] = set()
# Not Questline's settings, read by what runs it: uvicorn's trusted proxies.
OTHER_VARIABLES = {"FORWARDED_ALLOW_IPS"}


def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, "kubectl (with its built-in kustomize) is needed: apt-get install kubectl"
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def prepared_copy(tmp: Path) -> Path:
    """deploy/kubernetes copied, each overlay's secrets/ made as the README says:
    the example files copied, the JWT pair created by `questline keys`."""
    root = tmp / "kubernetes"
    shutil.copytree(KUBERNETES, root, ignore=shutil.ignore_patterns("secrets"))
    for overlay in OVERLAYS:
        shutil.copytree(root / "overlays" / overlay / "secrets-example",
                        root / "overlays" / overlay / "secrets")  # fmt: skip
    secrets = root / "overlays" / "example" / "secrets"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "questline"), "keys"],
        env=support.child_env(
            QUESTLINE_JWT_PRIVATE_KEY_FILE=str(secrets / "jwt-private.pem"),
            QUESTLINE_JWT_PUBLIC_KEY_FILE=str(secrets / "jwt-public.pem"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    root = prepared_copy(tmp_path_factory.mktemp("k8s"))
    found = {"base": kustomize(root / "base")}
    for overlay in OVERLAYS:
        found[overlay] = kustomize(root / "overlays" / overlay)
    return found


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) of every Deployment and Job."""
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            pod = d["spec"]["template"]["spec"]
            for c in pod["containers"]:
                yield d["metadata"]["name"], pod, c


def container(docs: list[dict[str, Any]], workload: str) -> dict[str, Any]:
    return next(c for name, _, c in containers(docs) if name == workload)


def option(cmd: list[str], name: str) -> str:
    for i, part in enumerate(cmd):
        if part == name:
            return cmd[i + 1]
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {cmd}")


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    assert port in named, f"{c['name']}: no container port named {port}"
    return int(named[port])


# --- the schemas --------------------------------------------------------------------


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
def test_every_manifest_validates_against_its_schema(
    built: dict[str, list[dict[str, Any]]], build: str
) -> None:
    docs = built[build]
    assert len(docs) >= 20
    for doc in docs:
        where = f"{build}: {doc['kind']} {doc['metadata']['name']}"
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, KEDA_SCHEMA)
            continue
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{where} on Kubernetes {version}: {exc.message}") from exc


def test_the_schemas_refuse_a_broken_manifest(built: dict[str, list[dict[str, Any]]]) -> None:
    """The validation above can fail: a misspelt field and a wrong type are caught."""
    deployment = json.loads(json.dumps(of_kind(built["base"], "Deployment")["questline-auth"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = (
        "/healthz"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
    scaled = json.loads(json.dumps(of_kind(built["base"], "ScaledObject")["questline-worker"]))
    scaled["spec"]["triggers"][0]["metadata"]["targetQueryValue"] = 2000
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMA)
    scaled["spec"]["triggers"][0]["metadata"]["targetQueryValue"] = "2000"
    scaled["spec"]["maxReplicas"] = 20
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMA)


# --- what is deployed ---------------------------------------------------------------


def test_every_role_is_deployed_with_its_scaling_and_budget(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    docs = built["base"]
    deployments = of_kind(docs, "Deployment")
    apis = {f"questline-{n}" for n in [*APPS, "grpc"]}
    assert set(deployments) == apis | {"questline-worker", "questline-flower"}
    job = of_kind(docs, "Job")["questline-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "questline",
        "db",
        "upgrade",
    ]
    # The APIs scale on CPU, the workers on the backlog; both have a disruption budget.
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == apis
    for h in hpas.values():
        assert h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert h["spec"]["minReplicas"] >= 2
        (metric,) = h["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        # Utilization is a share of the request: every container must request CPU.
        target = deployments[h["spec"]["scaleTargetRef"]["name"]]
        for c in target["spec"]["template"]["spec"]["containers"]:
            assert c["resources"]["requests"]["cpu"], h["metadata"]["name"]
    scaled = of_kind(docs, "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == {"questline-worker"}
    # The sweeper and the pruner run in workers: never scale them to zero.
    assert scaled["questline-worker"]["spec"]["minReplicaCount"] >= 1
    budgets = of_kind(docs, "PodDisruptionBudget")
    covered = set()
    for pdb in budgets.values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [
            n
            for n, d in deployments.items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, (pdb["metadata"]["name"], matched)
        covered |= set(matched)
    assert covered == apis | {"questline-worker"}
    # An autoscaled Deployment leaves its replica count to the autoscaler: a count in
    # the manifest would be put back by every apply.
    for name in apis | {"questline-worker"}:
        assert "replicas" not in deployments[name]["spec"], name
    # Each Deployment's selector picks its own pods, and only them.
    for name, d in deployments.items():
        selector = d["spec"]["selector"]["matchLabels"]
        assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        others = [
            n
            for n, o in deployments.items()
            if selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert others == [name]


def test_every_container_has_requests_and_limits_and_runs_unprivileged(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    uid = re.search(r"useradd --uid (\d+)", (support.ROOT / "Dockerfile").read_text())
    assert uid is not None
    units = {"Mi": 2**20, "Gi": 2**30}

    def memory(v: str) -> int:
        return int(v[:-2]) * units[v[-2:]]

    def cpu(v: str) -> float:
        return float(v[:-1]) / 1000 if v.endswith("m") else float(v)

    for name, pod, c in containers(built["base"]):
        res = c["resources"]
        assert memory(res["requests"]["memory"]) <= memory(res["limits"]["memory"]), name
        if "cpu" in res["limits"]:
            assert cpu(res["requests"]["cpu"]) <= cpu(res["limits"]["cpu"]), name
        # The API processes measured 90 MiB idle; a limit below twice that is a crash loop.
        assert memory(res["limits"]["memory"]) >= 2 * 90 * 2**20, name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == uid.group(1)
        assert pod["automountServiceAccountToken"] is False
        # The "restricted" Pod Security Standard (the example namespace enforces it).
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {next(k for k in v if k != "name") for v in pod["volumes"]} <= {
            "emptyDir",
            "secret",
        }
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        assert {"/tmp", "/data"} <= mounts, name  # the only places a process writes


# --- commands, settings, ports and probes against the code ------------------------------


def test_commands_are_real_entry_points(
    built: dict[str, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    from click.testing import CliRunner
    from fastapi import FastAPI

    from questline.commands import cli

    seen = set()
    for name, _, c in containers(built["base"]):
        cmd = [str(p) for p in c["command"]]
        seen.add(cmd[0])
        if cmd[0] == "uvicorn":
            component = name.removeprefix("questline-")
            assert cmd[1] == APPS[component]
            module, attr = cmd[1].split(":")
            assert isinstance(getattr(importlib.import_module(module), attr), FastAPI)
            assert option(cmd, "--host") == "0.0.0.0"
            assert port_number(c, "http") == int(option(cmd, "--port"))
            assert "--no-server-header" in cmd
            assert "--proxy-headers" in cmd
        elif cmd[0] == "celery":
            from celery.bin.celery import celery

            assert cmd[1:3] == ["-A", "workers"]
            result = CliRunner().invoke(celery, [*cmd[1:4], "--help"])
            assert result.exit_code == 0, f"{name}: {result.output}"
            for opt in cmd[4:]:
                flag = opt.split("=")[0]
                if cmd[3] == "flower":  # Flower's options are its own (tornado's)
                    from flower.options import options

                    assert flag.removeprefix("--") in options, f"{name}: Flower has no {flag}"
                else:
                    assert flag in result.output, f"{name}: celery {cmd[3]} has no {flag}"
        else:
            assert cmd[0] == "questline", name
            if cmd[1] in NOT_YET_MERGED_COMMANDS:
                with pytest.raises(SystemExit) as exited:
                    cli.main([cmd[1], "--help"])
                assert exited.value.code != 0, (
                    f"`questline {cmd[1]}` exists now: remove it from NOT_YET_MERGED_COMMANDS"
                )
                capsys.readouterr()
                continue
            words = [p for p in cmd[1:] if not p.startswith("-") and not p.isdigit()]
            with pytest.raises(SystemExit) as exited:
                cli.main([*cmd[1:], "--help"])
            assert exited.value.code == 0, name
            assert f"usage: questline {' '.join(words)}" in capsys.readouterr().out
    assert seen == {"uvicorn", "celery", "questline"}


def _variables(docs: list[dict[str, Any]]) -> dict[str, str]:
    """Every environment variable a container gets: env, and the keys of each
    ConfigMap and Secret it takes whole (envFrom); Secret values decoded."""
    import base64

    config_maps, secrets = of_kind(docs, "ConfigMap"), of_kind(docs, "Secret")
    found: dict[str, str] = {}
    for _, _, c in containers(docs):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                found[e["name"]] = e["value"]
            elif ref["name"] in secrets:  # the base names Secrets that an overlay makes
                found[e["name"]] = base64.b64decode(
                    secrets[ref["name"]]["data"][ref["key"]]
                ).decode()
            else:
                found.setdefault(e["name"], "")
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                found.update(config_maps[source["configMapRef"]["name"]]["data"])
            else:
                secret = secrets.get(source["secretRef"]["name"])
                if secret is None:
                    continue
                for key, value in secret.get("data", {}).items():
                    found[key] = base64.b64decode(value).decode()
    return found


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
def test_environment_names_are_settings_the_code_reads(
    built: dict[str, list[dict[str, Any]]], build: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {f"QUESTLINE_{name.upper()}" for name in Settings.model_fields}
    landed = NOT_YET_MERGED_SETTINGS & fields
    assert not landed, f"{landed} are settings now: remove them from NOT_YET_MERGED_SETTINGS"
    variables = _variables(built[build])
    names = set(variables)
    questline = {n for n in names if n.startswith("QUESTLINE_")}
    unknown = questline - NOT_YET_MERGED_SETTINGS - fields
    assert not unknown, sorted(unknown)

    from flower.options import options

    for key in (n for n in names if n.startswith("FLOWER_")):
        assert key.removeprefix("FLOWER_").lower() in options, key
    other = names - questline - {n for n in names if n.startswith("FLOWER_")}
    assert other <= OTHER_VARIABLES, sorted(other - OTHER_VARIABLES)
    import uvicorn.config

    assert '"FORWARDED_ALLOW_IPS"' in inspect.getsource(uvicorn.config)

    # The values parse as the settings they set (a wrong one stops every pod).
    for key in questline - NOT_YET_MERGED_SETTINGS:
        monkeypatch.setenv(key, variables[key])
    Settings()
    if build != "base":
        assert variables["QUESTLINE_DATABASE_URL"].startswith("postgresql+psycopg2://")
        assert variables["QUESTLINE_REDIS_URL"].startswith("redis://")


def test_only_auth_gets_the_private_key(built: dict[str, list[dict[str, Any]]]) -> None:
    docs = built["example"]
    secrets = of_kind(docs, "Secret")
    private = next(n for n in secrets if n.startswith("questline-jwt-private-"))
    public = next(n for n in secrets if n.startswith("questline-jwt-public-"))
    assert set(secrets[private]["data"]) == {"jwt-private.pem"}
    assert set(secrets[public]["data"]) == {"jwt-public.pem"}
    for name, pod, c in containers(docs):
        volumes = {
            v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v
        }
        mounted = {volumes[m["name"]]: m["mountPath"] for m in c.get("volumeMounts", [])
                   if m["name"] in volumes}  # fmt: skip
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if name == "questline-auth":
            assert set(mounted) == {private, public}
            assert env["QUESTLINE_JWT_PRIVATE_KEY_FILE"] == f"{mounted[private]}/jwt-private.pem"
        else:
            assert private not in mounted, name
            assert "QUESTLINE_JWT_PRIVATE_KEY_FILE" not in env, name
        if public in mounted:
            assert env["QUESTLINE_JWT_PUBLIC_KEY_FILE"] == f"{mounted[public]}/jwt-public.pem"
        # A verifying service with no key file would make up a key pair of its own.
        if name in {f"questline-{n}" for n in APPS}:
            assert public in mounted, name


def test_mounted_secrets_are_readable_by_the_unprivileged_user(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    """Secret files belong to root; the process (not root) reads them through the
    other-read bit or, with fsGroup, the group-read bit. The private key is not
    world-readable."""
    for name, pod, _ in containers(built["base"]):
        for v in pod.get("volumes", []):
            if "secret" not in v:
                continue
            mode = v["secret"].get("defaultMode", 0o644)
            group_reads = mode & 0o040 and pod["securityContext"].get("fsGroup") is not None
            assert mode & 0o004 or group_reads, (name, v["name"], oct(mode))
            if v["secret"]["secretName"] == "questline-jwt-private":
                assert not mode & 0o007, (name, oct(mode))


def _routes(app_path: str) -> set[str]:
    module, attr = app_path.split(":")
    app = getattr(importlib.import_module(module), attr)
    return set(app.openapi()["paths"])


def test_probes_ask_real_routes_on_the_ports_the_processes_listen_on(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    from flower.urls import handlers

    flower_paths = {h[0] if isinstance(h, tuple) else h.regex.pattern for h in handlers}
    for name, _, c in containers(built["base"]):
        cmd = [str(p) for p in c["command"]]
        probes = {k: c[k] for k in ("livenessProbe", "readinessProbe", "startupProbe") if k in c}
        if name == "questline-migrate":
            assert not probes
            continue
        assert "livenessProbe" in probes, name
        for kind, probe in probes.items():
            if cmd[0] == "uvicorn":
                path = probe["httpGet"]["path"]
                assert path in _routes(cmd[1]), (name, path)
                assert path == ("/readyz" if kind == "readinessProbe" else "/healthz")
                assert port_number(c, probe["httpGet"]["port"]) == int(option(cmd, "--port"))
            elif cmd[:2] == ["questline", "grpc"]:
                from rpc.server import SERVICES as GRPC_SERVICES

                assert probe["grpc"]["port"] == int(option(cmd, "--port"))
                # Readiness asks a service (its status follows the database), liveness
                # the server itself (it must not restart the pod during an outage).
                service = probe["grpc"].get("service", "")
                assert service == (GRPC_SERVICES[0] if kind == "readinessProbe" else ""), kind
            elif cmd[3] == "flower":
                assert probe["httpGet"]["path"] in {p.rstrip("$") for p in flower_paths}
                assert port_number(c, probe["httpGet"]["port"]) == int(option(cmd, "--port"))
            else:
                # The worker's main process serves its metrics on this port.
                assert cmd[3] == "worker"
                env = {e["name"]: e.get("value") for e in c["env"]}
                port = port_number(c, probe["httpGet"]["port"])
                assert int(env["QUESTLINE_WORKER_METRICS_PORT"]) == port


def test_services_reach_the_named_ports_of_their_pods(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    docs = built["base"]
    deployments = of_kind(docs, "Deployment")
    for name, svc in of_kind(docs, "Service").items():
        selector = svc["spec"]["selector"]
        (target,) = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        c = target["spec"]["template"]["spec"]["containers"][0]
        for port in svc["spec"]["ports"]:
            assert port_number(c, port["targetPort"]) == port["port"], name


def test_the_ingress_sends_every_route_of_each_service_to_that_service(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    (ingress,) = of_kind(built["base"], "Ingress").values()
    rules = [
        (p["path"], p["backend"]["service"]["name"])
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    ]
    services = of_kind(built["base"], "Service")
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            backend = p["backend"]["service"]
            names = {port["name"] for port in services[backend["name"]]["spec"]["ports"]}
            assert backend["port"]["name"] in names, p
    assert all(p["pathType"] == "Prefix" for r in ingress["spec"]["rules"]
               for p in r["http"]["paths"])  # fmt: skip

    def owner(path: str) -> str | None:
        """Prefix matching as Kubernetes defines it: whole segments, longest wins."""
        matches = [
            (len(prefix), svc)
            for prefix, svc in rules
            if path == prefix or path.startswith(prefix.rstrip("/") + "/")
        ]
        return max(matches)[1] if matches else None

    routed = 0
    for service, app_path in APPS.items():
        module, attr = app_path.split(":")
        app = getattr(importlib.import_module(module), attr)
        for path in app.openapi()["paths"]:
            if path in {"/healthz", "/readyz", "/metrics"}:
                continue
            concrete = re.sub(r"\{[^}]+\}", "1", path)
            assert owner(concrete) == f"questline-{service}", concrete
            routed += 1
    assert routed >= 15
    for stray in ("/quest", "/meta", "/authx", "/", "/docs", "/metrics"):
        assert owner(stray) is None, stray


# --- KEDA -----------------------------------------------------------------------------


@pytest.mark.parametrize("build", OVERLAYS)
def test_keda_triggers_name_real_queues_secrets_and_a_query_that_runs(
    built: dict[str, list[dict[str, Any]]], build: str
) -> None:
    import celeryconfig

    docs = built[build]
    scaled = of_kind(docs, "ScaledObject")["questline-worker"]
    auths = of_kind(docs, "TriggerAuthentication")
    secrets = of_kind(docs, "Secret")
    assert scaled["spec"]["scaleTargetRef"]["name"] in of_kind(docs, "Deployment")
    queue_of = {task: r["queue"] for task, r in celeryconfig.task_routes.items()}
    types = set()
    for trigger in scaled["spec"]["triggers"]:
        types.add(trigger["type"])
        meta = trigger["metadata"]
        assert KEDA_REQUIRED[trigger["type"]] <= set(meta), trigger
        auth = auths[trigger["authenticationRef"]["name"]]
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets[ref["name"]]["data"], ref
        if trigger["type"] == "postgresql":
            # The query runs on a migrated database and counts the outbox.
            engine = create_engine(support.DATABASE_URL)
            try:
                with engine.connect() as conn:
                    (count,) = conn.execute(text(meta["query"])).one()
                    assert isinstance(count, int)
                    # It can be answered from the outbox's partial index alone.
                    conn.execute(text("SET enable_seqscan = off"))
                    plan = "\n".join(
                        r[0] for r in conn.execute(text(f"EXPLAIN {meta['query']}")).all()
                    )
            finally:
                engine.dispose()
            assert "ix_events_pending_inputs" in plan, plan
        else:
            # The broker queue the input tasks go to.
            name = meta.get("listName") or meta.get("queueName")
            assert name == queue_of["questline.process_sign_in"]
            assert name == queue_of["questline.drain_outbox"]
    expected = {"postgresql", "redis" if build == "example" else "rabbitmq"}
    assert types == expected
