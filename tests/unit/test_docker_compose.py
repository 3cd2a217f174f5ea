"""docker-compose.yml checked structurally (no Docker engine runs on these machines)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from runtime.config import DEFAULT_GRPC_PORTS, SERVICE_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ("kafka", "nats", "postgres", "clickhouse", "dragonfly", "weaviate", "arangodb", "jaeger")


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
    """Every TRADING_* name pydantic-settings reads, from walking the Settings model."""
    names: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for field, info in model.model_fields.items():
            name = f"{prefix}{field.upper()}"
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{name}__")
            else:
                names.add(name)

    walk(Settings, "TRADING_")
    return names


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


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
    assert set(services) == set(SERVICE_NAMES) | set(INFRA)


def test_health_checks_everywhere(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name
    for name in SERVICE_NAMES:
        port = DEFAULT_GRPC_PORTS[name]
        assert services[name]["healthcheck"]["test"] == [
            "CMD",
            "tradingctl",
            "health",
            "--address",
            f"127.0.0.1:{port}",
        ]


def test_depends_on_is_known_healthy_and_acyclic(services: dict[str, dict[str, Any]]) -> None:
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: use the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert dep != name
            assert spec == {"condition": "service_healthy"}, f"{name} -> {dep}"
        graph[name] = set(deps)
    for name in SERVICE_NAMES:
        assert {"postgres", "kafka", "nats", "dragonfly"} <= graph[name], name
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
                assert key in known, f"{name}: {key} is not a field of runtime.config.Settings"
                used.add(key)
    required = {
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
        env = env_of(services[name])
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        s = Settings()
        assert s.host == "0.0.0.0"
        assert s.kafka.enable_idempotence is True
        assert s.kafka.bootstrap_servers == "kafka:9092"
        assert s.clickhouse.url.startswith("http://")
        assert s.postgres.dsn.startswith("postgresql://") and "@postgres:5432/" in s.postgres.dsn
        # Every service dials every other by compose host name, on its declared port.
        assert json.loads(env["TRADING_SERVICE_ADDRESSES"]) == s.service_addresses
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
