"""docker-compose.yml checked structurally (no Docker engine runs on these machines),
and by `docker-compose config` where that binary is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.config import DEFAULT_GRPC_PORTS, SERVICE_NAMES, Settings, all_settings

ROOT = Path(__file__).resolve().parents[2]
NATS_NODES = ("nats-1", "nats-2", "nats-3")
INFRA = (
    "kafka",
    *NATS_NODES,
    "postgres",
    "clickhouse",
    "dragonfly",
    "weaviate",
    "arangodb",
    "jaeger",
    "prometheus",
    "grafana",
)
# One-shot jobs of the platform image: `tradingctl security init` (files), then
# the PostgreSQL roles, migrations and passwords.
JOBS = ("init", "init-db")
# Named volumes of the credentials and where each is mounted (and how).
SECRETS_VOLUME, ADMIN_VOLUME, CONFIG_VOLUME = "secrets", "admin-secrets", "server-config"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svcs = compose["services"]
    assert isinstance(svcs, dict)
    return svcs


def settings_env_names() -> set[str]:
    """Every TRADING_* name the settings tree reads (runtime.config.all_settings:
    Settings and the services' own sections)."""
    return {setting.env for setting in all_settings()}


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def settings_of(svc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a service's container reads from its environment."""
    for key, value in env_of(svc).items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_every_application_service_is_built_and_started(services: dict[str, dict[str, Any]]) -> None:
    assert len(SERVICE_NAMES) == 11
    for name in SERVICE_NAMES:
        svc = services.get(name)
        assert svc is not None, f"{name} missing"
        assert "build" in svc or "image" in svc, name
        module = "gateway" if name == "gateway" else f"services.{name}"
        assert svc["command"] == ["python", "-m", module], name
    assert (ROOT / "Dockerfile").is_file()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "python:3.11-slim" in dockerfile
    assert "-c constraints.txt -e . -e gen/python" in dockerfile


def test_every_infrastructure_component_is_present(services: dict[str, dict[str, Any]]) -> None:
    for name in INFRA:
        assert name in services, name
        assert "image" in services[name], name
    assert set(services) == set(SERVICE_NAMES) | set(INFRA) | set(JOBS)


def test_the_init_jobs_run_security_init_once(services: dict[str, dict[str, Any]]) -> None:
    for name in JOBS:
        job = services[name]
        assert job["image"] == services["identity"]["image"] and "build" in job, name
        assert job["command"][:3] == ["tradingctl", "security", "init"], name
        assert job.get("restart") == "no", f"{name} is one-shot: restarting it would never complete"
        assert "ports" not in job and "healthcheck" not in job, name
    init, init_db = services["init"]["command"], services["init-db"]["command"]
    assert "--postgres" not in init and "--migrate" not in init  # PostgreSQL is not up yet
    assert "--allow-local-ca" in init  # compose is no development environment
    assert {"--migrate", "--skip-files"} <= set(init_db)
    assert services["init-db"]["depends_on"] == {
        "init": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
    }


def test_health_checks_everywhere(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if name in JOBS:
            continue
        check = svc.get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name
    for name in SERVICE_NAMES:
        # mTLS as the operator (its certificate is in the secrets volume), the server
        # proving it is `name`, at the address the service binds (its compose host).
        port = DEFAULT_GRPC_PORTS[name]
        assert services[name]["healthcheck"]["test"] == [
            "CMD",
            "tradingctl",
            "health",
            "--callee",
            name,
            "--address",
            f"{name}:{port}",
        ]


def test_the_health_check_flags_are_the_clis(services: dict[str, dict[str, Any]]) -> None:
    from tools import cli

    help_text = subprocess.run(
        [str(Path(cli.BIN) / "tradingctl"), "health", "--help"], capture_output=True, text=True, check=False
    ).stdout
    for flag in ("--callee", "--address"):
        assert flag in help_text


def _condition(dep: str) -> str:
    return "service_completed_successfully" if dep in JOBS else "service_healthy"


def test_depends_on_is_known_healthy_and_acyclic(services: dict[str, dict[str, Any]]) -> None:
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: use the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert dep != name
            assert spec == {"condition": _condition(dep)}, f"{name} -> {dep}"
        graph[name] = set(deps)
    for name in SERVICE_NAMES:
        assert {"init", "init-db", "postgres", "kafka", *NATS_NODES, "dragonfly", "jaeger"} <= graph[name], (
            name
        )
    # The servers that read the init job's files start after it.
    for name in (*NATS_NODES, "dragonfly", "postgres"):
        assert "init" in graph[name], name
    assert set(SERVICE_NAMES) - {"gateway"} <= graph["gateway"]
    assert "clickhouse" in graph["analytics"]

    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"dependency cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        for dep in graph[node]:
            visit(dep, (*path, node))
        done.add(node)

    for node in graph:
        visit(node, ())


def test_env_var_names_match_runtime_config(services: dict[str, dict[str, Any]]) -> None:
    known = settings_env_names()
    assert "TRADING_POSTGRES__DSN" in known and "TRADING_SERVICE_ADDRESSES" in known
    used: set[str] = set()
    for name, svc in services.items():
        for key in env_of(svc):
            if key.startswith("TRADING_"):
                assert key in known, f"{name}: {key} is not a setting (docs/settings.md)"
                used.add(key)
    required = {
        "TRADING_ENVIRONMENT",
        "TRADING_SECURITY__PKI_DIR",
        "TRADING_SECURITY__SECRETS_DIR",
        "TRADING_POSTGRES__MIGRATE_ON_START",
        "TRADING_POSTGRES__DSN",
        "TRADING_KAFKA__BOOTSTRAP_SERVERS",
        "TRADING_KAFKA__ENABLE_IDEMPOTENCE",
        "TRADING_CLICKHOUSE__URL",
        "TRADING_REDIS__URL",
        "TRADING_NATS__URL",
        "TRADING_SERVICE_ADDRESSES",
        "TRADING_TELEMETRY__OTLP_ENDPOINT",
        "TRADING_HOST",
    }
    assert required <= used


def test_service_environment_parses_into_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SERVICE_NAMES:
        s = settings_of(services[name], monkeypatch)
        assert s.host == "0.0.0.0"
        # Not a development environment: nothing is generated in a service
        # (a missing secret or certificate stops it), plaintext is refused.
        assert not s.security.is_development(s.environment)
        assert s.security.pki_dir == Path("/secrets/pki") and s.security.secrets_dir == Path("/secrets")
        assert s.security.cert_file is None and not s.security.plaintext
        # Services never migrate (init-db does), so they need no migrator password.
        assert s.postgres.migrate_on_start is False
        assert s.kafka.enable_idempotence is True
        assert s.kafka.bootstrap_servers == "kafka:9092"
        assert s.clickhouse.url.startswith("http://")
        assert s.postgres.dsn.startswith("postgresql://") and "@postgres:5432/" in s.postgres.dsn
        # Every service dials every other by compose host name, on its declared port.
        assert json.loads(env_of(services[name])["TRADING_SERVICE_ADDRESSES"]) == s.service_addresses
        for other in SERVICE_NAMES:
            assert s.address_of(other) == f"{other}:{DEFAULT_GRPC_PORTS[other]}"
        # The address host names are compose services, exposing that port.
        for other, address in s.service_addresses.items():
            host, port = address.rsplit(":", 1)
            assert host == other and host in services
            assert any(p.split(":")[-1] == port for p in services[host]["ports"])
        hosts = {
            "postgres": s.postgres.dsn,
            "dragonfly": s.redis.url,
            "nats": s.nats.url,
            "clickhouse": s.clickhouse.url,
            "jaeger": s.telemetry.otlp_endpoint,
        }
        for host, url in hosts.items():
            assert re.search(rf"[/@]{host}:\d+", url), f"{name}: {url} does not point at {host}"


def test_published_host_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[int, str] = {}
    for name, svc in services.items():
        for mapping in svc.get("ports", []):
            parts = str(mapping).split(":")
            assert len(parts) in (2, 3), f"{name}: publish host:container explicitly ({mapping})"
            host_port = int(parts[-2])
            assert host_port not in seen, f"host port {host_port} used by {seen.get(host_port)} and {name}"
            seen[host_port] = name
    assert seen[8080] == "gateway"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = str(vol).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"


# ------------------------------------------------------------------ credentials


def _mounts(svc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """volume name -> (container path, mode) of a service's named-volume mounts."""
    out: dict[str, tuple[str, str]] = {}
    for vol in svc.get("volumes", []):
        parts = str(vol).split(":")
        if not parts[0].startswith((".", "/")):
            out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "rw")
    return out


def _flag(command: list[str], name: str) -> str:
    """The value of --name=VALUE or --name VALUE in an argv."""
    for i, arg in enumerate(command):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return command[i + 1]
    raise AssertionError(f"{name} not in {command}")


def test_every_service_mounts_the_secrets_read_only_and_depends_on_init(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in SERVICE_NAMES:
        svc = services[name]
        assert _mounts(svc) == {SECRETS_VOLUME: ("/secrets", "ro")}, name
        assert svc["depends_on"]["init"] == {"condition": "service_completed_successfully"}, name
        assert svc["depends_on"]["init-db"] == {"condition": "service_completed_successfully"}, name
        env = env_of(svc)
        # Certificates and secrets are read from the mounted volume.
        for key in ("TRADING_SECURITY__PKI_DIR", "TRADING_SECURITY__SECRETS_DIR"):
            assert Path(env[key]).is_relative_to("/secrets"), (name, key)
    # The init job writes that volume, with the settings the services read it with.
    init = services["init"]
    assert _mounts(init)[SECRETS_VOLUME] == ("/secrets", "rw")
    for key in ("TRADING_SECURITY__PKI_DIR", "TRADING_SECURITY__SECRETS_DIR", "TRADING_ENVIRONMENT",
                "TRADING_SERVICE_ADDRESSES", "TRADING_NATS__URL"):  # fmt: skip
        assert env_of(init)[key] == env_of(services["risk"])[key], key


def test_credential_volumes_reach_only_who_needs_them(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    holders: dict[str, dict[str, str]] = {}
    for name, svc in services.items():
        for volume, (_, mode) in _mounts(svc).items():
            holders.setdefault(volume, {})[name] = mode
    # The CA key, Redis admin and PostgreSQL superuser: the init jobs and the database server only.
    assert holders[ADMIN_VOLUME] == {"init": "rw", "init-db": "ro", "postgres": "ro"}
    # NATS's config (every NATS password) and Dragonfly's ACL file: their servers only.
    assert holders[CONFIG_VOLUME] == {"init": "rw", **{n: "ro" for n in NATS_NODES}, "dragonfly": "ro"}
    # Only the init job writes the services' secrets.
    assert holders[SECRETS_VOLUME] == {"init": "rw", "init-db": "ro", **{n: "ro" for n in SERVICE_NAMES}}
    for volume in (SECRETS_VOLUME, ADMIN_VOLUME, CONFIG_VOLUME):
        assert volume in (compose.get("volumes") or {}), volume
    # The image creates the mount points the volumes take their owner from.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "mkdir -p /app/var /secrets /admin /config" in dockerfile


def test_nats_is_a_cluster_of_three_running_the_generated_config(services: dict[str, dict[str, Any]]) -> None:
    init = services["init"]["command"]
    listen_port = _flag(init, "--nats-listen").rsplit(":", 1)[1]
    routes: set[str] = set()
    for node in NATS_NODES:
        nats = services[node]
        config = _flag(nats["command"], "-c")
        assert config == _flag(init, "--nats-config")
        path, mode = _mounts(nats)[CONFIG_VOLUME]
        assert Path(config).is_relative_to(path) and mode == "ro"
        assert "-js" not in nats["command"]  # JetStream and its store come from the config
        # Each node its own JetStream store.
        assert _flag(init, "--nats-store-dir") == _mounts(nats)[f"{node}-data"][0]
        # Clustered: a unique server name, one cluster name, routes to every node.
        assert _flag(nats["command"], "--name") == node
        assert _flag(nats["command"], "--cluster_name") == "trading"
        cluster = _flag(nats["command"], "--cluster")
        assert cluster.startswith("nats://0.0.0.0:")
        route_port = cluster.rsplit(":", 1)[1]
        node_routes = set(_flag(nats["command"], "--routes").split(","))
        assert node_routes == {f"nats://{n}:{route_port}" for n in NATS_NODES}
        routes |= node_routes
        # Every node answers to the name the services dial.
        assert services[node]["networks"]["default"]["aliases"] == ["nats"]
        assert services[node]["depends_on"] == {"init": {"condition": "service_completed_successfully"}}
    assert len(routes) == 3
    env = env_of(services["risk"])
    assert env["TRADING_NATS__URL"] == f"nats://nats:{listen_port}"
    assert env["TRADING_NATS__STREAM_REPLICAS"] == str(len(NATS_NODES))
    assert f"{listen_port}:{listen_port}" in services["nats-1"]["ports"]


def test_the_production_servers_of_the_adr_are_there(services: dict[str, dict[str, Any]]) -> None:
    kafka = env_of(services["kafka"])
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "ZOOKEEPER" not in " ".join(kafka)
    images = {name: services[name]["image"].rsplit("/", 1)[-1].split(":")[0] for name in INFRA}
    assert images["postgres"] == "pgvector" and images["clickhouse"] == "clickhouse-server"
    assert images["dragonfly"] == "dragonfly" and images["jaeger"] == "all-in-one"
    assert images["prometheus"] == "prometheus"


def test_every_server_binds_all_interfaces_and_is_checked_where_it_listens(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SERVICE_NAMES:
        s = settings_of(services[name], monkeypatch)
        assert s.host == "0.0.0.0"
        port = DEFAULT_GRPC_PORTS[name]
        # The server listens on every interface of its container, on its port ...
        assert s.bind_address(name) == f"0.0.0.0:{port}"
        # ... which is the port the others dial and the health check calls.
        test = services[name]["healthcheck"]["test"]
        checked = _flag(test, "--address")
        assert checked == s.address_of(name) and checked.rsplit(":", 1)[1] == str(port)
        assert _flag(test, "--callee") == name
        for key in env_of(services[name]):
            monkeypatch.delenv(key)
    assert env_of(services["gateway"])["TRADING_GATEWAY__HOST"] == "0.0.0.0"


# What each service needs beyond the core (README, "Architecture": its dependencies).
EXTRA_DEPENDENCIES = {
    "analytics": {"clickhouse"},
    "decision": {"weaviate", "features", "risk", "execution"},
    "audit": {"arangodb"},
    "features": {"marketdata"},
    "risk": {"marketdata"},
    "execution": {"marketdata", "risk"},
    "portfolio": {"marketdata"},
    "gateway": set(SERVICE_NAMES) - {"gateway"},
}


def test_every_service_declares_its_dependencies(services: dict[str, dict[str, Any]]) -> None:
    core = {"init", "init-db", "postgres", "kafka", *NATS_NODES, "dragonfly", "jaeger"}
    for name in SERVICE_NAMES:
        declared = set(services[name]["depends_on"])
        assert core | EXTRA_DEPENDENCIES.get(name, set()) <= declared, name
        env = env_of(services[name])
        # A server named in a service's own settings is one it waits for.
        for key in ("TRADING_VECTORS__WEAVIATE_URL", "TRADING_GRAPH__ARANGO_URL"):
            if key in env:
                host = re.sub(r"^\w+://([^@/]*@)?", "", env[key]).split(":", 1)[0]
                assert host in declared, (name, host)


def test_dragonfly_runs_with_the_acl_file(services: dict[str, dict[str, Any]]) -> None:
    dragonfly = services["dragonfly"]
    acl = _flag(dragonfly["command"], "--aclfile")
    assert acl == _flag(services["init"]["command"], "--redis-acl")
    path, mode = _mounts(dragonfly)[CONFIG_VOLUME]
    assert Path(acl).is_relative_to(path) and mode == "ro"
    assert not any(arg.startswith("--requirepass") for arg in dragonfly["command"])


def test_postgres_takes_the_superuser_password_from_the_init_job(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["postgres"])
    assert "POSTGRES_PASSWORD" not in env
    admin = _flag(services["init"]["command"], "--admin-dir")
    assert env["POSTGRES_PASSWORD_FILE"] == f"{admin}/postgres/migrator"  # tools.security_init.MIGRATOR
    assert _mounts(services["postgres"])[ADMIN_VOLUME] == (admin, "ro")
    assert _flag(services["init-db"]["command"], "--admin-dir") == admin


# Passwords this file still carries, outside the platform's per-principal
# credentials (docs/security.md "Deploying with compose", limits): the ClickHouse
# user analytics logs in as (its URL carries it) and ArangoDB's root (audit's
# lineage graph logs in with it, its URL carries it). Listed so that no other
# one can slip in.
NOT_YET_FROM_SECRETS = {
    "clickhouse": {"CLICKHOUSE_PASSWORD"},
    "arangodb": {"ARANGO_ROOT_PASSWORD"},
}


def test_no_secret_values_in_the_file(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text
    assert "TRADING_SECRET__" not in text  # secrets come from the volume, never the environment
    for name, svc in services.items():
        env = env_of(svc)
        for key, value in env.items():
            if key.startswith("TRADING_"):
                assert "ENCRYPTION_KEY" not in key and "PASSWORD" not in key, (name, key)
                if key not in ("TRADING_CLICKHOUSE__URL", "TRADING_GRAPH__ARANGO_URL"):
                    # No credentials in a DSN or URL: postgres://user@host, redis://host, nats://host.
                    assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), (name, key)
            elif re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", key) and not key.endswith("_FILE"):
                assert key in NOT_YET_FROM_SECRETS.get(name, set()), (name, key)
        for arg in [*(svc.get("command") or []), *(svc.get("entrypoint") or [])]:
            assert not re.search(r"(?i)pass(word)?=|requirepass|--user=.*:", str(arg)), (name, arg)
    # And none of what the init job would generate (the same settings, paths under tmp_path).
    from tools.security_init import InitOptions, run_init

    settings = Settings(environment="compose", var_dir=tmp_path / "var")
    settings.security.pki_dir = tmp_path / "secrets" / "pki"
    settings.security.secrets_dir = tmp_path / "secrets"
    run_init(settings, InitOptions(admin_dir=tmp_path / "admin", allow_local_ca=True))
    systems = ("nats", "redis", "postgres", "kafka", "identity", "notification")
    generated = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name in systems and not p.suffix]
    assert len(generated) > 30
    for path in generated:
        assert path.read_text().strip() not in text, path


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    done = subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == set(SERVICE_NAMES) | set(INFRA) | set(JOBS)
    assert resolved["services"]["risk"]["depends_on"]["init"] == {
        "condition": "service_completed_successfully"
    }
