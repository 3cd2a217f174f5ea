"""Request bodies the REST tests share."""

from __future__ import annotations

from typing import Any

import httpx


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


async def login_demo(gw: httpx.AsyncClient) -> dict[str, str]:
    """The seeded demo user's Authorization header."""
    from services.identity.seed import DEMO_EMAIL, DEMO_PASSWORD, DEMO_SLUG

    login = await gw.post(
        "/v1/auth/login", json={"tenantSlug": DEMO_SLUG, "email": DEMO_EMAIL, "password": DEMO_PASSWORD}
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
