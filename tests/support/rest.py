"""Request bodies the REST tests share."""

from __future__ import annotations

from typing import Any


def market_order(
    client_order_id: str = "c-1", symbol: str = "BTC-USD", quantity: str = "1"
) -> dict[str, Any]:
    """A valid PlaceOrder body (proto3 JSON names): a market buy, IOC."""
    return {
        "clientOrderId": client_order_id,
        "symbol": symbol,
        "side": "SIDE_BUY",
        "type": "ORDER_TYPE_MARKET",
        "timeInForce": "TIME_IN_FORCE_IOC",
        "quantity": {"value": quantity},
    }
