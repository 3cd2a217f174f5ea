"""Which requests take the gateway's direct contract path (gateway.app.GatewayAPI)
and which go through FastAPI: the answers are the same either way, and the
hand-written routes, the docs' assets, CORS and the framework's own refusals
keep working."""

from __future__ import annotations

from typing import Any

import httpx
from redis.asyncio import Redis

from gateway.app import GatewayAPI
from gateway.config import GatewayOptions
from gateway.problems import PROBLEM_CONTENT_TYPE
from runtime.config import Settings


def _scope(path: str, *, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": headers or []}


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE)
    assert response.headers["x-correlation-id"]
    doc: dict[str, Any] = response.json()
    return doc


async def test_contract_requests_go_direct_and_the_rest_through_fastapi(
    infra_settings: Settings, redis_client: Redis, gateway: Any, make_api_key: Any
) -> None:
    options = GatewayOptions(cors_origins=["https://app.example"])
    async with (
        gateway(infra_settings, {}, options) as gw,
        make_api_key(redis_client, ["orders:read"]) as (secret, _),
    ):
        transport = gw._transport
        assert isinstance(transport, httpx.ASGITransport)
        app = transport.app
        assert isinstance(app, GatewayAPI)
        direct = app._direct
        assert direct(_scope("/v1/orders", method="POST"))
        assert direct(_scope("/v1/quotes/BTC-USD"))
        assert direct(_scope("/v1/no-such-thing"))
        assert direct(_scope("/healthz/"))  # not the hand-written route: the table answers 404
        for own in ("/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/static-offline-docs/x.js"):
            assert not direct(_scope(own)) and not direct(_scope(own, method="DELETE"))
        assert not direct(_scope("/v1/\nx"))  # the catch-all cannot match it: FastAPI answers
        assert not direct(_scope("/v1/orders", headers=[(b"origin", b"https://app.example")]))
        assert not direct({**_scope("/v1/orders"), "type": "websocket"})

        # Direct: problem+json with a correlation id, the route table's 404 and 405.
        auth = {"X-Api-Key": secret}
        assert _problem(await gw.get("/v1/no-such-thing", headers=auth), 404)["reason"] == "ROUTE_NOT_FOUND"
        not_allowed = await gw.put("/v1/instruments", headers=auth)
        assert _problem(not_allowed, 405)["reason"] == "METHOD_NOT_ALLOWED"
        assert not_allowed.headers["allow"] == "GET, HEAD"
        assert _problem(await gw.get("/v1/orders"), 401)["reason"] == "CREDENTIALS_MISSING"
        given = await gw.get("/v1/orders", headers={"X-Correlation-Id": "cid-direct-1"})
        assert given.headers["x-correlation-id"] == "cid-direct-1"

        # Through FastAPI: its own routes, their 405, the docs and their assets.
        assert (await gw.get("/healthz")).json() == {"status": "ok"}
        assert (await gw.get("/openapi.json")).json()["paths"]["/v1/orders"]
        assert "swagger" in (await gw.get("/docs")).text.lower()
        assert (await gw.get("/static-offline-docs/swagger-ui.css")).status_code == 200
        wrong_method = await gw.post("/healthz")
        assert _problem(wrong_method, 405)["reason"] == "METHOD_NOT_ALLOWED"
        assert wrong_method.headers["allow"] == "GET"
        assert _problem(await gw.get("/v1/%0Ax"), 404)["code"] == "NOT_FOUND"

        # Cross-origin requests get the CORS middleware's headers.
        origin = {"Origin": "https://app.example"}
        cross = await gw.get("/v1/no-such-thing", headers={**auth, **origin})
        assert _problem(cross, 404)["reason"] == "ROUTE_NOT_FOUND"
        assert cross.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-correlation-id" in cross.headers["access-control-expose-headers"].lower()
