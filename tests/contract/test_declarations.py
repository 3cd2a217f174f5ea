"""Static contract rules, checked on the generated descriptors of proto/."""

from __future__ import annotations

from collections import Counter

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor
from trading.common.v1 import options_pb2

from runtime import contracts
from runtime.security.principals import PRINCIPALS

ALL_METHODS = [m for svc in contracts.services() for m in svc.methods]
METHOD_IDS = [contracts.full_method_name(m) for m in ALL_METHODS]


def _policy(method: descriptor.MethodDescriptor) -> options_pb2.MethodPolicy:
    return method.GetOptions().Extensions[options_pb2.method]


# What the gateway routes (REST): the RPCs that list it among their callers.
ROUTED = [m for m in ALL_METHODS if "gateway" in _policy(m).callers]
ROUTED_IDS = [contracts.full_method_name(m) for m in ROUTED]

# The ten gRPC services of brief.md (the eleventh, the gateway, serves REST).
EXPECTED_SERVICES = {
    "trading.identity.v1.IdentityService",
    "trading.marketdata.v1.MarketDataService",
    "trading.features.v1.FeaturesService",
    "trading.decision.v1.DecisionService",
    "trading.risk.v1.RiskService",
    "trading.execution.v1.ExecutionService",
    "trading.portfolio.v1.PortfolioService",
    "trading.analytics.v1.AnalyticsService",
    "trading.audit.v1.AuditService",
    "trading.notification.v1.NotificationService",
}


def _http_rule(method: descriptor.MethodDescriptor) -> http_pb2.HttpRule | None:
    options = method.GetOptions()
    return options.Extensions[annotations_pb2.http] if options.HasExtension(annotations_pb2.http) else None


def test_every_service_of_the_brief_is_declared() -> None:
    assert {s.full_name for s in contracts.services()} == EXPECTED_SERVICES


@pytest.mark.parametrize("method", ROUTED, ids=ROUTED_IDS)
def test_every_rpc_the_gateway_routes_has_an_http_annotation(method: descriptor.MethodDescriptor) -> None:
    rule = _http_rule(method)
    assert rule is not None, "missing google.api.http"
    pattern = rule.WhichOneof("pattern")
    assert pattern in {"get", "post", "put", "patch", "delete"}
    path = getattr(rule, pattern)
    assert path.startswith("/v1/"), path
    if pattern == "get":
        assert not rule.body, "GET must not have a body"


@pytest.mark.parametrize("method", ALL_METHODS, ids=METHOD_IDS)
def test_every_rpc_declares_its_policy(method: descriptor.MethodDescriptor) -> None:
    options = method.GetOptions()
    assert options.HasExtension(options_pb2.method), "missing (trading.common.v1.method)"
    policy = options.Extensions[options_pb2.method]
    if _http_rule(method) is not None:
        # A user reaches it through the gateway: the user's scopes decide.
        assert policy.public or policy.scopes, "a non-public RPC must name the scopes it needs"
    else:
        # Internal (services acting as themselves, e.g. IssueDelegation): its
        # callers list is its authorization (test_every_rpc_names_its_callers).
        assert not policy.public, "an internal RPC is never public"
    if method.server_streaming or (_http_rule(method) and _http_rule(method).WhichOneof("pattern") == "get"):  # type: ignore[union-attr]
        assert policy.idempotent, "reads are safe to retry and must say so"


@pytest.mark.parametrize("method", ALL_METHODS, ids=METHOD_IDS)
def test_every_rpc_names_its_callers(method: descriptor.MethodDescriptor) -> None:
    """(trading.common.v1.method).callers: who may call it, by principal (the
    service names and "operator"); the server refuses everyone else."""
    callers = list(_policy(method).callers)
    assert callers, "(trading.common.v1.method).callers is empty"
    assert set(callers) <= set(PRINCIPALS), sorted(set(callers) - set(PRINCIPALS))
    assert len(callers) == len(set(callers)), "a caller is listed twice"
    service_domain = method.containing_service.full_name.split(".")[1]
    assert service_domain not in callers, "a service does not call itself over gRPC"


@pytest.mark.parametrize("method", ALL_METHODS, ids=METHOD_IDS)
def test_an_rpc_is_routed_exactly_when_the_gateway_may_call_it(method: descriptor.MethodDescriptor) -> None:
    policy = _policy(method)
    assert (_http_rule(method) is not None) == ("gateway" in policy.callers)
    contracts.check_callers(method, policy)  # what the servers check at start-up


def test_the_callers_check_refuses_incomplete_or_inconsistent_policies() -> None:
    pool = contracts.default_pool()
    routed = pool.FindMethodByName("trading.execution.v1.ExecutionService.PlaceOrder")
    internal = pool.FindMethodByName("trading.identity.v1.IdentityService.IssueDelegation")
    good = _policy(routed)
    contracts.check_callers(routed, good)
    bad: list[tuple[descriptor.MethodDescriptor, list[str], str]] = [
        (routed, [], "callers is empty"),
        (routed, ["gateway", "root"], "unknown caller"),
        (routed, ["decision"], "google.api.http"),  # routed, but the gateway may not call it
        (internal, ["gateway", "decision"], "google.api.http"),  # the gateway, but no route
    ]
    for method, callers, message in bad:
        policy = options_pb2.MethodPolicy()
        policy.CopyFrom(good)
        del policy.callers[:]
        policy.callers.extend(callers)
        with pytest.raises(contracts.ContractPolicyError, match=message):
            contracts.check_callers(method, policy)


def test_the_internal_edges_are_the_documented_ones() -> None:
    """docs/security.md lists the service-to-service calls; any new edge is a
    reviewed change of both."""
    edges = {
        (caller, contracts.full_method_name(m))
        for m in ALL_METHODS
        for caller in _policy(m).callers
        if caller != "gateway"
    }
    assert edges == {
        ("decision", "/trading.execution.v1.ExecutionService/PlaceOrder"),
        ("execution", "/trading.risk.v1.RiskService/CheckOrder"),
        ("audit", "/trading.execution.v1.ExecutionService/ListOrders"),
        ("audit", "/trading.execution.v1.ExecutionService/GetOrder"),
        ("audit", "/trading.portfolio.v1.PortfolioService/GetPositions"),
        ("audit", "/trading.portfolio.v1.PortfolioService/GetPortfolio"),
        ("decision", "/trading.identity.v1.IdentityService/IssueDelegation"),
        ("audit", "/trading.identity.v1.IdentityService/IssueDelegation"),
        ("operator", "/trading.audit.v1.AuditService/QueryEvents"),
        ("operator", "/trading.audit.v1.AuditService/VerifyChain"),
        ("operator", "/trading.audit.v1.AuditService/ReplayTenant"),
        ("operator", "/trading.notification.v1.NotificationService/ListDeadLetters"),
        ("operator", "/trading.notification.v1.NotificationService/RedriveDeadLetter"),
    }


def test_rpc_names_follow_the_conventions() -> None:
    for method in ALL_METHODS:
        assert method.input_type.name == f"{method.name}Request", method.full_name
        assert method.output_type.name == f"{method.name}Response", method.full_name


def test_every_event_type_maps_to_exactly_one_destination() -> None:
    registry = contracts.event_registry()
    names = registry.event_types()
    assert names, "no event types declared"
    assert len(names) == len(set(names))
    for name in names:
        route = registry.route(name)
        assert route.kafka_topic or route.nats_subject, f"{name} has no destination"
        assert route.schema_version >= 1, f"{name} needs a schema_version"
        assert route.kafka_topic.startswith("trading.") or not route.kafka_topic, name
        if route.kafka_topic:
            assert route.partition_key, f"{name}: a Kafka event needs a partition key"
            payload_fields = registry.message_class(name).DESCRIPTOR.fields_by_name
            assert route.partition_key == "tenant" or route.partition_key in payload_fields, (
                f"{name}: partition key {route.partition_key!r} is not a payload field"
            )
        for placeholder in registry.get(name).subject_fields:
            assert (
                placeholder == "tenant"
                or placeholder in registry.message_class(name).DESCRIPTOR.fields_by_name
            ), f"{name}: subject placeholder {{{placeholder}}} is not a payload field"


def test_every_event_type_of_the_brief_exists() -> None:
    """brief.md names these event families; each must have at least one type."""
    packages = Counter(name.rsplit(".", 1)[0] for name in contracts.event_registry().event_types())
    for package in (
        "trading.identity",
        "trading.marketdata",
        "trading.features",
        "trading.decision",
        "trading.risk",
        "trading.execution",
        "trading.portfolio",
    ):
        assert packages[package + ".v1"] >= 1, f"no events in {package}.v1"


def test_metadata_keys_are_declared_once_and_distinct() -> None:
    keys = [
        contracts.METADATA.tenant_id,
        contracts.METADATA.correlation_id,
        contracts.METADATA.idempotency_key,
        contracts.METADATA.context_token,
    ]
    assert len(set(keys)) == len(keys)
    assert all(k == k.lower() for k in keys), "gRPC metadata keys are lower case"
