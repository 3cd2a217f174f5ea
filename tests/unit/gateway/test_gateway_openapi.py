"""The OpenAPI 3.1 document generated from the contracts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.openapi import build_openapi
from gateway.routes import build_routes
from gateway.templates import openapi_path
from tests.support.rest import market_order


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi(build_routes(), title="t", version="1")


def test_document_validates_against_the_openapi_31_schema(document: dict[str, Any]) -> None:
    import openapi_spec_validator as validator

    validator.validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_is_documented_with_security_and_errors(document: dict[str, Any]) -> None:
    for route in build_routes():
        op = document["paths"][openapi_path(route.template)][route.http_method.lower()]
        assert op["x-grpc-method"] == route.grpc_path
        errors = {int(k): v for k, v in op["responses"].items() if k.isdigit() and int(k) >= 400}
        # Every status a gRPC code maps to, each with the problem+json schema; no catch-all.
        assert {400, 404, 409, 429, 500, 503, 504} <= set(errors) and "default" not in op["responses"]
        for response in errors.values():
            assert response["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }
        assert (413 in errors) == bool(route.body)
        if route.policy.public:
            assert op["security"] == []
        else:
            assert op["security"][0] == {"bearerAuth": list(route.policy.scopes)}
            assert "401" in op["responses"] and "403" in op["responses"]
        if route.body:
            assert "requestBody" in op


def test_protovalidate_rules_become_json_schema_constraints(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    place = schemas["trading.execution.v1.PlaceOrderRequest"]["properties"]
    assert place["clientOrderId"]["pattern"] == "^[A-Za-z0-9._:-]{1,64}$"
    assert "SIDE_UNSPECIFIED" not in place["side"]["enum"] and "SIDE_BUY" in place["side"]["enum"]
    assert "quantity" in schemas["trading.execution.v1.PlaceOrderRequest"]["required"]
    # strategy_id is ignored when empty: "" or the pattern.
    assert place["strategyId"]["anyOf"][0] == {"type": "string", "const": ""}
    listing = document["paths"]["/v1/orders"]["get"]["parameters"]
    page_size = next(p for p in listing if p["name"] == "page_size")
    assert page_size["schema"] == {"type": "integer", "format": "int32", "minimum": 0, "maximum": 500}
    assert any(p["name"] == "created.start" for p in listing)
    statuses = next(p for p in listing if p["name"] == "statuses")
    assert statuses["schema"]["type"] == "array" and statuses["explode"] is True
    cancel = document["paths"]["/v1/orders/{order_id}:cancel"]["post"]
    assert cancel["parameters"][0]["schema"]["format"] == "uuid"
    stream = document["paths"]["/v1/orders:stream"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in stream


def test_a_field_is_required_exactly_when_the_server_refuses_its_zero_value(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    place = schemas["trading.execution.v1.PlaceOrderRequest"]
    # Patterns "" does not match, enums with not_in [0], a required message;
    # limitPrice (CEL at message level) and strategyId (ignored when empty) are optional.
    assert place["required"] == ["clientOrderId", "symbol", "side", "type", "timeInForce", "quantity"]
    assert place["additionalProperties"] is False  # unknown members are refused
    listing = {p["name"]: p for p in document["paths"]["/v1/orders"]["get"]["parameters"]}
    assert listing["page_size"]["required"] is False


def test_bodies_leave_out_what_the_path_binds(document: dict[str, Any]) -> None:
    cancel = document["paths"]["/v1/orders/{order_id}:cancel"]["post"]["requestBody"]
    ref = cancel["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    body = document["components"]["schemas"][ref]
    # order_id is in the path; client_order_id shares its oneof (it would replace it).
    assert body["properties"] == {} and "orderId" not in body.get("required", [])
    roles = document["paths"]["/v1/users/{user_id}/roles"]["put"]["requestBody"]
    ref = roles["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert list(document["components"]["schemas"][ref]["properties"]) == ["roles"]


def test_descriptions_come_from_the_contract_comments(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    place = schemas["trading.execution.v1.PlaceOrderRequest"]
    assert "idempotency key" in place["properties"]["clientOrderId"]["description"]
    assert place["properties"]["quantity"]["description"].startswith("Quantity to trade")
    assert document["paths"]["/v1/orders"]["post"]["description"]


def test_streams_document_sse_resuming_and_the_websocket_variant(document: dict[str, Any]) -> None:
    orders = document["paths"]["/v1/orders:stream"]["get"]
    assert "Last-Event-ID" in {p["name"] for p in orders["parameters"]}
    assert "101" in orders["responses"] and "x-websocket" in orders["responses"]["101"]
    quotes = document["paths"]["/v1/quotes:stream"]["get"]
    assert "Last-Event-ID" not in {p["name"] for p in quotes["parameters"]}  # live only
    assert "no event ids" in quotes["responses"]["200"]["description"]


def test_links_follow_the_ids_a_reply_carries(document: dict[str, Any]) -> None:
    place = document["paths"]["/v1/orders"]["post"]["responses"]["200"]["links"]
    assert place["ExecutionService_GetOrder"] == {
        "operationId": "ExecutionService_GetOrder",
        "parameters": {"order_id": "$response.body#/order/orderId"},
    }
    assert "ExecutionService_CancelOrder" in place
    webhook = document["paths"]["/v1/webhooks"]["post"]["responses"]["200"]["links"]
    assert webhook["NotificationService_DeleteWebhook"]["parameters"] == {
        "webhook_id": "$response.body#/webhook/webhookId"
    }
    tenants = document["paths"]["/v1/tenants"]["post"]["responses"]["200"].get("links", {})
    assert "IdentityService_GetTenant" not in tenants  # not the caller's tenant
    operation_ids = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    for ops in document["paths"].values():
        for op in ops.values():
            for link in op["responses"].get("200", {}).get("links", {}).values():
                assert link["operationId"] in operation_ids


def _schema_accepts(document: dict[str, Any], name: str, body: dict[str, Any]) -> bool:
    import jsonschema  # type: ignore[import-untyped]  # no stubs pinned; used here only

    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return bool(jsonschema.Draft202012Validator(root).is_valid(body))


def _server_accepts(message: type[Any], body: dict[str, Any]) -> bool:
    import protovalidate
    from google.protobuf import json_format

    try:
        parsed = json_format.ParseDict(body, message())
    except json_format.ParseError:
        return False
    return not protovalidate.Validator().collect_violations(parsed)


_ORDER = market_order()


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"quantity": {"value": "0"}},
        {"quantity": {"value": "0.000"}},
        {"quantity": {"value": "-1"}},
        {"quantity": {"value": "0.5"}},
        {"quantity": {"value": "0.10"}},
        {"quantity": {"value": "01"}},
        {"quantity": {}},
        {"type": "ORDER_TYPE_LIMIT"},
        {"type": "ORDER_TYPE_LIMIT", "limitPrice": {"value": "10"}},
        {"type": "ORDER_TYPE_LIMIT", "limitPrice": {"value": "-10"}},
        {"limitPrice": {"value": "10"}},
        {"symbol": ""},
        {"side": "SIDE_UNSPECIFIED"},
        {"strategyId": ""},
        {"strategyId": "bad id"},
    ],
)
def test_the_schema_and_the_validator_agree_on_orders(
    document: dict[str, Any], change: dict[str, Any]
) -> None:
    """The translated CEL rules (decimal.positive, the limit price by order
    type) and the derived required fields say what the server's validator says."""
    from trading.execution.v1 import execution_service_pb2 as pb

    body = {**_ORDER, **change}
    assert _schema_accepts(document, "trading.execution.v1.PlaceOrderRequest", body) == _server_accepts(
        pb.PlaceOrderRequest, body
    ), body


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/x", "http://hooks.example.com/x", "ftp://hooks.example.com/x", "hooks"]
)
def test_the_schema_and_the_validator_agree_on_webhook_urls(document: dict[str, Any], url: str) -> None:
    from trading.notification.v1 import notification_service_pb2 as pb

    body = {"url": url}
    assert _schema_accepts(
        document, "trading.notification.v1.RegisterWebhookRequest", body
    ) == _server_accepts(pb.RegisterWebhookRequest, body), body


@given(st.integers(min_value=-(2**65), max_value=2**65), st.integers(min_value=-(2**64), max_value=2**64))
def test_integer_patterns_match_exactly_the_range(value: int, bound: int) -> None:
    import re

    from gateway.openapi import integer_pattern

    for low, high in ((min(0, bound), max(0, bound)), (-(2**63), 2**63 - 1), (0, 2**64 - 1), (1, 500)):
        pattern = re.compile(integer_pattern(low, high))
        assert bool(pattern.fullmatch(str(value))) == (low <= value <= high)
        assert not pattern.fullmatch(f"0{abs(value)}")  # never a leading zero
