"""The OpenAPI 3.1 document generated from the contracts."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.openapi import build_openapi
from gateway.routes import build_routes
from gateway.templates import openapi_path


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
        assert op["responses"]["default"]["content"]["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }
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
