"""google.api.http path templates: parsing, matching, binding, route table."""

from __future__ import annotations

import pytest

from gateway.problems import Problem
from gateway.routes import RouteTable, build_routes
from gateway.templates import TemplateError, openapi_path, parse_template


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/orders", "/v1/orders", {}),
        ("/v1/orders/{order_id}", "/v1/orders/abc", {"order_id": "abc"}),
        ("/v1/orders/{order_id}", "/v1/orders/a%2Fb", {"order_id": "a/b"}),
        ("/v1/orders/{order_id}:cancel", "/v1/orders/abc:cancel", {"order_id": "abc"}),
        ("/v1/client-orders/{id}:cancel", "/v1/client-orders/a:b:cancel", {"id": "a:b"}),
        ("/v1/client-orders/{id}", "/v1/client-orders/a:b", {"id": "a:b"}),
        ("/v1/{name=projects/*/orders/*}", "/v1/projects/p1/orders/o2", {"name": "projects/p1/orders/o2"}),
        ("/v1/{name=files/**}", "/v1/files/a/b/c.txt", {"name": "files/a/b/c.txt"}),
        ("/v1/{a.b}/x/*", "/v1/q/x/z", {"a.b": "q"}),
        ("/v1/orders:stream", "/v1/orders:stream", {}),
    ],
)
def test_templates_match_and_bind(template: str, path: str, expected: dict[str, str]) -> None:
    assert parse_template(template).match(path) == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/orders", "/v1/orders/"),
        ("/v1/orders/{order_id}", "/v1/orders"),
        ("/v1/orders/{order_id}", "/v1/orders/a/b"),
        ("/v1/orders/{order_id}:cancel", "/v1/orders/abc"),
        ("/v1/orders:stream", "/v1/orders"),
        ("/v1/{name=projects/*}", "/v1/projects"),
    ],
)
def test_templates_reject(template: str, path: str) -> None:
    assert parse_template(template).match(path) is None


@pytest.mark.parametrize(
    "template",
    ["v1/orders", "/v1//x", "/v1/{x", "/v1/{x}}", "/v1/{9bad}", "/v1/{a}/{a}", "/v1/x:", "/v1/{a=}"],
)
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(template)


def test_openapi_path_flattens_multi_segment_variables() -> None:
    assert openapi_path(parse_template("/v1/{name=projects/*}/x:go")) == "/v1/{name}/x:go"


def test_route_table_covers_every_annotated_rpc_and_prefers_verbs() -> None:
    routes = build_routes()
    table = RouteTable(routes)
    grpc_paths = {r.grpc_path for r in routes}
    assert "/trading.execution.v1.ExecutionService/PlaceOrder" in grpc_paths
    cancel, values = table.match("POST", "/v1/orders/0190a0e0-0000-7000-8000-000000000000:cancel")
    assert cancel.method.name == "CancelOrder" and values == {
        "order_id": "0190a0e0-0000-7000-8000-000000000000"
    }
    by_client, values = table.match("POST", "/v1/client-orders/c:1:cancel")
    assert by_client.binding == 1 and values == {"client_order_id": "c:1"}
    stream, _ = table.match("GET", "/v1/orders:stream")
    assert stream.method.name == "StreamOrderUpdates" and stream.streaming
    jwks, _ = table.match("GET", "/.well-known/jwks.json")
    assert jwks.method.name == "GetJwks" and jwks.policy.public
    with pytest.raises(Problem) as not_allowed:
        table.match("PATCH", "/v1/orders")
    assert not_allowed.value.http_status == 405 and not_allowed.value.headers["Allow"] == "GET, HEAD, POST"
    with pytest.raises(Problem) as missing:
        table.match("GET", "/v2/nothing")
    assert missing.value.http_status == 404


def test_request_binding_body_path_and_query() -> None:
    table = RouteTable(build_routes())
    place, _ = table.match("POST", "/v1/orders")
    body = {"clientOrderId": "c1", "symbol": "BTC-USD", "side": "SIDE_BUY", "quantity": {"value": "1"}}
    request = place.build_request({}, [], body)
    assert (request.client_order_id, request.symbol, request.quantity.value) == ("c1", "BTC-USD", "1")  # type: ignore[attr-defined]

    listing, _ = table.match("GET", "/v1/orders")
    request = listing.build_request(
        {},
        [
            ("page_size", "10"),
            ("statuses", "ORDER_STATUS_FILLED"),
            ("statuses", "ORDER_STATUS_CANCELED"),
            ("created.start", "2026-01-01T00:00:00Z"),
        ],
        None,
    )
    assert request.page_size == 10 and len(request.statuses) == 2  # type: ignore[attr-defined]
    assert request.created.start.seconds == 1767225600  # type: ignore[attr-defined]

    get, values = table.match("GET", "/v1/orders/abc")
    assert get.build_request(values, [], None).order_id == "abc"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("query", "field", "location"),
    [
        ([("page_size", "x")], "page_size", "query"),
        ([("page_size", "1"), ("page_size", "2")], "page_size", "query"),
        ([("page_size", "99999999999")], "page_size", "query"),
        ([("nope", "1")], "nope", "query"),
        ([("statuses", "ORDER_STATUS_NOPE")], "statuses", "query"),
        ([("created.start", "yesterday")], "created.start", "query"),
        ([("created", "x")], "created", "query"),
    ],
)
def test_bad_query_parameters_are_400_with_the_field(
    query: list[tuple[str, str]], field: str, location: str
) -> None:
    listing, _ = RouteTable(build_routes()).match("GET", "/v1/orders")
    with pytest.raises(Problem) as bad:
        listing.build_request({}, query, None)
    assert bad.value.http_status == 400
    assert bad.value.field_violations[0]["field"] == field
    assert bad.value.field_violations[0]["location"] == location


@pytest.mark.parametrize(
    ("body", "pointer", "reason"),
    [
        ({"colour": "red"}, "/colour", "unknown_field"),
        ({"symbol": 5}, "/symbol", "type"),
        ({"side": "SIDE_SIDEWAYS"}, "/side", "enum"),
        ({"side": True}, "/side", "type"),
        ({"quantity": "1"}, "/quantity", "type"),
        ({"quantity": {"value": 1}}, "/quantity/value", "type"),
        ({"quantity": {"amount": "1"}}, "/quantity/amount", "unknown_field"),
        ({"client_order_id": "a", "clientOrderId": "b"}, "/clientOrderId", "duplicate"),
        ([1, 2], "", "type"),
        ("text", "", "type"),
    ],
)
def test_bad_bodies_are_400_with_a_pointer(body: object, pointer: str, reason: str) -> None:
    place, _ = RouteTable(build_routes()).match("POST", "/v1/orders")
    with pytest.raises(Problem) as bad:
        place.build_request({}, [], body)
    assert bad.value.http_status == 400
    violation = bad.value.field_violations[0]
    assert (violation["pointer"], violation["reason"]) == (pointer, reason)


def test_body_routes_refuse_query_parameters() -> None:
    place, _ = RouteTable(build_routes()).match("POST", "/v1/orders")
    with pytest.raises(Problem) as bad:
        place.build_request({}, [("symbol", "X")], {})
    assert bad.value.http_status == 400


@pytest.mark.parametrize(
    "body",
    [
        {"orderId": "4f1c1d1e-0000-4000-8000-000000000000"},  # the path's own field
        {"order_id": "4f1c1d1e-0000-4000-8000-000000000000"},  # by its proto name
        {"clientOrderId": "c-1"},  # its oneof sibling: would replace the path's id
    ],
)
def test_a_body_member_the_path_binds_is_refused(body: dict[str, str]) -> None:
    cancel, values = RouteTable(build_routes()).match(
        "POST", "/v1/orders/4f1c1d1e-0000-4000-8000-00000000000a:cancel"
    )
    with pytest.raises(Problem) as bad:
        cancel.build_request(values, [], body)
    assert bad.value.http_status == 400
    (only,) = bad.value.field_violations
    assert only["reason"] == "duplicate" and only["pointer"] == "/" + next(iter(body))
    assert cancel.build_request(values, [], {}).order_id.endswith("0a")  # type: ignore[attr-defined]
