"""The CheckOrder request execution's gRPC risk adapter sends for an order (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import protovalidate
from trading.common.v1 import market_pb2
from trading.common.v1 import types_pb2 as common_types

from services.execution.adapters.grpc import check_request
from services.execution.domain import Order, OrderType, Side, TimeInForce, new_order

AT = datetime(2026, 12, 1, 14, 0, 0, 250000, tzinfo=UTC)


def order(*, strategy_id: str, type: OrderType = OrderType.LIMIT) -> Order:
    return new_order(
        order_id="0190f4a2-7c1e-7d3a-9b2f-1a2b3c4d5e6f",
        tenant_id="tenant-a",
        client_order_id="c-1",
        symbol="BTC-USD",
        side=Side.SELL,
        type=type,
        time_in_force=TimeInForce.GTC,
        quantity=D("0.25"),
        limit_price=D("64000.5") if type is OrderType.LIMIT else None,
        created_at=AT,
        strategy_id=strategy_id,
    )


def test_the_request_carries_the_order_and_when_execution_accepted_it() -> None:
    request = check_request(order(strategy_id="btc-momentum"))
    assert (request.client_order_id, request.symbol, request.strategy_id) == (
        "c-1",
        "BTC-USD",
        "btc-momentum",
    )
    assert (request.side, request.order_type) == (common_types.SIDE_SELL, market_pb2.ORDER_TYPE_LIMIT)
    assert (request.quantity.value, request.limit_price.value) == ("0.25", "64000.5")
    assert request.submitted_at.ToDatetime(tzinfo=UTC) == AT
    protovalidate.validate(request)


def test_a_strategy_id_risk_would_refuse_is_left_out_and_a_market_order_has_no_price() -> None:
    request = check_request(order(strategy_id="Strategy One", type=OrderType.MARKET))
    assert request.strategy_id == ""
    assert not request.HasField("limit_price")
    protovalidate.validate(request)
