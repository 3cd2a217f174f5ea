"""How replicas are addressed (runtime.config) and planned (tools.supervisor.plan_replicas)."""

from __future__ import annotations

import pytest

from runtime.config import Settings, grpc_target
from tools.supervisor import plan_replicas


def test_grpc_target_of_each_address_form() -> None:
    assert grpc_target("127.0.0.1:50051") == "127.0.0.1:50051"
    assert grpc_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert grpc_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    assert grpc_target("dns:///trading-risk-headless:50054") == "dns:///trading-risk-headless:50054"


def test_a_replica_binds_its_own_address_and_refuses_to_guess() -> None:
    settings = Settings(service_addresses={"risk": "127.0.0.1:1,127.0.0.1:2"})
    with pytest.raises(ValueError, match="listen_address"):
        settings.bind_address("risk")
    assert settings.model_copy(update={"listen_address": "127.0.0.1:2"}).bind_address("risk") == "127.0.0.1:2"
    named = Settings(service_addresses={"risk": "dns:///risk-headless:50054"})
    with pytest.raises(ValueError):
        named.bind_address("risk")
    assert Settings().bind_address("risk") == Settings().address_of("risk")


def test_one_replica_changes_nothing() -> None:
    settings = Settings()
    plan = plan_replicas(settings, ["risk", "gateway"])
    assert [(r.name, r.env) for r in plan] == [("risk", {}), ("gateway", {})]
    assert settings.service_addresses == {}


def test_replicas_get_ports_names_and_gateway_ports_of_their_own() -> None:
    settings = Settings()
    settings.clickhouse.url = ""
    plan = plan_replicas(settings, ["risk", "gateway", "analytics"], replicas=3)
    risk = [r for r in plan if r.service == "risk"]
    addresses = settings.replica_addresses("risk")
    assert [r.name for r in risk] == ["risk-1", "risk-2", "risk-3"]
    assert [r.env["TRADING_LISTEN_ADDRESS"] for r in risk] == addresses
    assert addresses[0] == Settings().address_of("risk") and len(set(addresses)) == 3
    assert [r.env["TRADING_REPLICA_ID"] for r in risk] == ["risk-1", "risk-2", "risk-3"]
    gateways = [r for r in plan if r.service == "gateway"]
    assert "TRADING_GATEWAY__HTTP_PORT" not in gateways[0].env  # the first keeps the configured ports
    assert len({g.env["TRADING_GATEWAY__HTTP_PORT"] for g in gateways[1:]}) == 2
    # Embedded ClickHouse (chdb) lives inside one process: analytics runs once.
    assert [r.name for r in plan if r.service == "analytics"] == ["analytics"]


def test_replicas_must_be_positive() -> None:
    with pytest.raises(ValueError):
        plan_replicas(Settings(), ["risk"], replicas=0)
