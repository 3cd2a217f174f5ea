"""Which RPCs the client SDK treats as mutating (idempotency key, retried with
it) and public (no credential): read from the descriptors' google.api.http
and trading.common.v1.method options, never from a list."""

from __future__ import annotations

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from trading_client.methods import IDEMPOTENCY_KEY, MUTATING_VERBS, describe, edge_methods, method_info

from runtime import contracts

EXECUTION = "/trading.execution.v1.ExecutionService/"
IDENTITY = "/trading.identity.v1.IdentityService/"


@pytest.mark.parametrize(
    ("path", "verb", "mutating", "public", "streaming"),
    [
        (EXECUTION + "PlaceOrder", "post", True, False, False),
        (EXECUTION + "CancelOrder", "post", True, False, False),
        (EXECUTION + "GetOrder", "get", False, False, False),
        (EXECUTION + "ListOrders", "get", False, False, False),
        (EXECUTION + "StreamOrderUpdates", "get", False, False, True),
        (IDENTITY + "Login", "post", True, True, False),
        (IDENTITY + "RefreshToken", "post", True, True, False),
        (IDENTITY + "GetJwks", "get", False, True, False),
        (IDENTITY + "RevokeApiKey", "delete", True, False, False),
        (IDENTITY + "UpdateUserRoles", "put", True, False, False),
        ("/trading.marketdata.v1.MarketDataService/GetQuote", "get", False, False, False),
        ("/trading.portfolio.v1.PortfolioService/GetPortfolio", "get", False, False, False),
        # Internal only (no google.api.http): not at the edge, not mutating.
        (IDENTITY + "IssueDelegation", None, False, False, False),
    ],
)
def test_known_methods(path: str, verb: str | None, mutating: bool, public: bool, streaming: bool) -> None:
    info = method_info(path)
    assert (info.http_verb, info.mutating, info.public, info.server_streaming) == (
        verb,
        mutating,
        public,
        streaming,
    )
    assert method_info(path.encode()) == info  # grpc.aio passes the path as bytes


def test_every_contract_method_agrees_with_its_http_rule() -> None:
    edge = 0
    for service in contracts.services():
        for method in service.methods:
            info = describe(method)
            options = method.GetOptions()
            has_rule = options.HasExtension(annotations_pb2.http)
            assert (info.http_verb is not None) == has_rule, info.path
            if has_rule:
                edge += 1
                pattern = options.Extensions[annotations_pb2.http].WhichOneof("pattern")
                assert info.mutating == (pattern in {"post", "put", "patch", "delete"}), info.path
            else:
                assert not info.mutating
            assert info.public == contracts.method_policy(info.path).public, info.path
        assert {m.path for m in edge_methods(service)} <= {
            f"/{service.full_name}/{m.name}" for m in service.methods
        }
    assert edge > 40


def test_an_unknown_method_is_a_read_that_needs_a_credential() -> None:
    info = method_info("/nowhere.v1.Nothing/Do")
    assert not info.mutating and not info.public and info.http_verb is None


def _synthetic_service() -> descriptor_pb2.FileDescriptorProto:
    """A service whose rules use every verb, custom ones and none."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="synthetic/v1/s.proto", package="synthetic.v1", syntax="proto3"
    )
    proto.message_type.add(name="M")
    service = proto.service.add(name="S")
    rules: dict[str, tuple[str, str] | None] = {
        "Get": ("get", "/a"),
        "Post": ("post", "/a"),
        "Put": ("put", "/a"),
        "Patch": ("patch", "/a"),
        "Delete": ("delete", "/a"),
        "Purge": ("custom", "PURGE"),
        "Remove": ("custom", "DELETE"),
        "None": None,
    }
    for name, rule in rules.items():
        method = service.method.add(name=name, input_type=".synthetic.v1.M", output_type=".synthetic.v1.M")
        if rule is None:
            continue
        http = method.options.Extensions[annotations_pb2.http]
        verb, value = rule
        if verb == "custom":
            http.custom.kind, http.custom.path = value, "/a"
        else:
            setattr(http, verb, value)
    return proto


def test_the_verb_decides_not_the_name() -> None:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_synthetic_service())
    service = pool.FindServiceByName("synthetic.v1.S")
    found = {m.name: describe(m) for m in service.methods}
    assert {name for name, info in found.items() if info.mutating} == {
        "Post",
        "Put",
        "Patch",
        "Delete",
        "Remove",
    }
    assert found["Purge"].http_verb == "purge" and not found["Purge"].mutating
    assert found["None"].http_verb is None
    assert [m.path for m in edge_methods(service)] == [f"/synthetic.v1.S/{n}" for n in list(found)[:-1]]
    assert {"post", "put", "patch", "delete"} == MUTATING_VERBS


def test_the_idempotency_key_header_comes_from_the_contract() -> None:
    assert IDEMPOTENCY_KEY == contracts.METADATA.idempotency_key == "idempotency-key"
