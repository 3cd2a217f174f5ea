"""The REST edge takes exactly what its OpenAPI document allows: the forms
proto3 JSON parsers also tolerate (enum numbers, null members, integers with
leading zeros, "1" for true, float text like " 1e3 ") are refused with a 400
and a pointer, so schema and server agree in both directions."""

from __future__ import annotations

from typing import Any

import pytest
from trading.execution.v1 import execution_service_pb2 as pb

from gateway.problems import Problem
from gateway.routes import RouteTable, build_routes
from gateway.transcode import merge_json
from tests.support.rest import market_order

ORDER = market_order()


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"side": 1}, "/side"),  # enum by number
        ({"strategyId": None}, "/strategyId"),  # null member
        ({"quantity": None}, "/quantity"),
    ],
)
def test_forms_the_document_does_not_allow_are_refused(change: dict[str, Any], pointer: str) -> None:
    with pytest.raises(Problem) as bad:
        merge_json({**ORDER, **change}, pb.PlaceOrderRequest())
    assert bad.value.http_status == 400
    assert [v["pointer"] for v in bad.value.field_violations] == [pointer]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ([("page_size", "010")], "page_size"),  # leading zero
        ([("page_size", "+10")], "page_size"),
        ([("statuses", "1")], "statuses"),  # enum by number
    ],
)
def test_query_text_is_canonical(query: list[tuple[str, str]], field: str) -> None:
    listing, _ = RouteTable(build_routes()).match("GET", "/v1/orders")
    with pytest.raises(Problem) as bad:
        listing.build_request({}, query, None)
    assert bad.value.field_violations[0]["field"] == field


def test_a_custom_verb_belongs_to_its_route() -> None:
    """GET /v1/client-orders/x:cancel is the cancel route's URL (405, Allow: POST),
    not GetOrder of a client order id "x:cancel"."""
    table = RouteTable(build_routes())
    with pytest.raises(Problem) as wrong:
        table.match("GET", "/v1/client-orders/x:cancel")
    assert wrong.value.http_status == 405 and wrong.value.headers["Allow"] == "POST"
    route, values = table.match("POST", "/v1/client-orders/x:cancel")
    assert route.method.name == "CancelOrder" and values == {"client_order_id": "x"}
    route, values = table.match("GET", "/v1/client-orders/x")
    assert route.method.name == "GetOrder"
