"""protovalidate rules of the execution contracts: a valid request passes and
typical bad input is reported on the right field with the right rule."""

from __future__ import annotations

import pytest
from trading.common.v1 import market_pb2, types_pb2
from trading.execution.v1 import events_pb2, execution_service_pb2
from trading.execution.v1 import types_pb2 as execution_types_pb2

from tests.support.validation import violations

ORDER_ID = "0190f4a2-7c1e-7d3a-9b2f-1a2b3c4d5e6f"
# A number no OrderStatus value has.
UNDEFINED_STATUS = execution_types_pb2.OrderStatus.ValueType(42)


def place_order(**overrides: object) -> execution_service_pb2.PlaceOrderRequest:
    """A valid LIMIT order, with some fields replaced."""
    fields: dict[str, object] = {
        "client_order_id": "strat-7:2024-06-01.0001",
        "symbol": "BTC-USD",
        "side": types_pb2.SIDE_BUY,
        "type": market_pb2.ORDER_TYPE_LIMIT,
        "time_in_force": execution_types_pb2.TIME_IN_FORCE_GTC,
        "quantity": {"value": "0.5"},
        "limit_price": {"value": "64210.50"},
    }
    fields.update(overrides)
    return execution_service_pb2.PlaceOrderRequest(**fields)  # type: ignore[arg-type]


def test_valid_limit_and_market_orders_pass() -> None:
    assert violations(place_order()) == set()
    assert violations(place_order(strategy_id="momentum-v1")) == set()
    market = place_order(
        type=market_pb2.ORDER_TYPE_MARKET, time_in_force=execution_types_pb2.TIME_IN_FORCE_IOC
    )
    market.ClearField("limit_price")
    assert violations(market) == set()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"quantity": {"value": "0"}}, ("quantity", "decimal.positive")),
        ({"quantity": {"value": "0.000"}}, ("quantity", "decimal.positive")),
        ({"quantity": {"value": "-1"}}, ("quantity", "decimal.positive")),
        ({"quantity": {"value": "1e3"}}, ("quantity.value", "string.pattern")),
        ({"limit_price": {"value": "0"}}, ("limit_price", "decimal.positive")),
        ({"symbol": "btc-usd"}, ("symbol", "string.pattern")),
        ({"symbol": ""}, ("symbol", "string.pattern")),
        ({"symbol": "BTC/USD"}, ("symbol", "string.pattern")),
        ({"client_order_id": ""}, ("client_order_id", "string.pattern")),
        ({"client_order_id": "has space"}, ("client_order_id", "string.pattern")),
        ({"client_order_id": "x" * 65}, ("client_order_id", "string.pattern")),
        ({"side": types_pb2.SIDE_UNSPECIFIED}, ("side", "enum.not_in")),
        ({"side": 7}, ("side", "enum.defined_only")),
        ({"time_in_force": execution_types_pb2.TIME_IN_FORCE_UNSPECIFIED}, ("time_in_force", "enum.not_in")),
        ({"strategy_id": "no spaces allowed"}, ("strategy_id", "string.pattern")),
    ],
)
def test_bad_place_order_fields(overrides: dict[str, object], expected: tuple[str, str]) -> None:
    assert expected in violations(place_order(**overrides))


def test_quantity_is_required() -> None:
    request = place_order()
    request.ClearField("quantity")
    assert violations(request) == {("quantity", "required")}


def test_limit_order_needs_a_limit_price() -> None:
    request = place_order()
    request.ClearField("limit_price")
    assert violations(request) == {("", "place_order.limit_price_required")}


def test_market_order_must_not_carry_a_limit_price() -> None:
    request = place_order(type=market_pb2.ORDER_TYPE_MARKET)
    assert violations(request) == {("", "place_order.limit_price_forbidden")}


def test_unspecified_order_type_is_rejected() -> None:
    assert ("type", "enum.not_in") in violations(place_order(type=market_pb2.ORDER_TYPE_UNSPECIFIED))


@pytest.mark.parametrize(
    "cls", [execution_service_pb2.CancelOrderRequest, execution_service_pb2.GetOrderRequest]
)
def test_order_is_named_by_exactly_one_valid_id(
    cls: type[execution_service_pb2.CancelOrderRequest] | type[execution_service_pb2.GetOrderRequest],
) -> None:
    assert violations(cls(order_id=ORDER_ID)) == set()
    assert violations(cls(client_order_id="abc-1")) == set()
    assert violations(cls()) == {("order_ref", "required")}
    assert violations(cls(order_id="not-a-uuid")) == {("order_id", "string.uuid")}
    assert violations(cls(client_order_id="bad id")) == {("client_order_id", "string.pattern")}


def test_list_orders_filters() -> None:
    valid = execution_service_pb2.ListOrdersRequest(
        page_size=500,
        statuses=[execution_types_pb2.ORDER_STATUS_FILLED, execution_types_pb2.ORDER_STATUS_CANCELED],
        symbol="AAPL",
    )
    valid.created.start.FromSeconds(1_700_000_000)
    valid.created.end.FromSeconds(1_700_086_400)
    assert violations(valid) == set()
    assert violations(execution_service_pb2.ListOrdersRequest()) == set()

    assert violations(execution_service_pb2.ListOrdersRequest(page_size=10000)) == {
        ("page_size", "int32.gte_lte")
    }
    assert violations(execution_service_pb2.ListOrdersRequest(page_size=-1)) == {
        ("page_size", "int32.gte_lte")
    }
    assert violations(
        execution_service_pb2.ListOrdersRequest(statuses=[execution_types_pb2.ORDER_STATUS_UNSPECIFIED])
    ) == {("statuses[0]", "enum.not_in")}
    assert ("statuses[1]", "enum.defined_only") in violations(
        execution_service_pb2.ListOrdersRequest(
            statuses=[execution_types_pb2.ORDER_STATUS_NEW, UNDEFINED_STATUS]
        )
    )
    assert violations(
        execution_service_pb2.ListOrdersRequest(statuses=[execution_types_pb2.ORDER_STATUS_FILLED] * 2)
    ) == {("statuses", "repeated.unique")}
    assert violations(execution_service_pb2.ListOrdersRequest(symbol="bad symbol")) == {
        ("symbol", "string.pattern")
    }

    reversed_range = execution_service_pb2.ListOrdersRequest()
    reversed_range.created.start.FromSeconds(1_700_086_400)
    reversed_range.created.end.FromSeconds(1_700_000_000)
    assert violations(reversed_range) == {("created", "time_range.ordered")}
    open_ended = execution_service_pb2.ListOrdersRequest()
    open_ended.created.start.FromSeconds(1_700_000_000)
    assert violations(open_ended) == set()


def test_stream_order_updates_symbol_filter() -> None:
    assert violations(execution_service_pb2.StreamOrderUpdatesRequest()) == set()
    assert violations(execution_service_pb2.StreamOrderUpdatesRequest(symbol="ETH-USD")) == set()
    assert violations(execution_service_pb2.StreamOrderUpdatesRequest(symbol="eth")) == {
        ("symbol", "string.pattern")
    }


def test_order_events_need_an_order_snapshot() -> None:
    order = execution_types_pb2.Order(order_id=ORDER_ID, symbol="BTC-USD")
    assert violations(events_pb2.OrderAccepted(order_id=ORDER_ID, order=order)) == set()
    assert violations(events_pb2.OrderAccepted(order_id=ORDER_ID)) == {("order", "required")}
    fill = execution_types_pb2.Fill(execution_id=ORDER_ID, order_id=ORDER_ID)
    assert violations(events_pb2.OrderFillReported(order_id=ORDER_ID, fill=fill, order=order)) == set()
    assert violations(events_pb2.OrderFillReported(order_id="x", order=order)) == {
        ("order_id", "string.uuid"),
        ("fill", "required"),
    }
    changed = events_pb2.OrderStatusChanged(order_id=ORDER_ID, symbol="BTC-USD", order=order)
    assert violations(changed) == set()
