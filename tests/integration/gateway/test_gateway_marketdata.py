"""REST -> gRPC transcoding against the real marketdata service: routes,
path/query binding, proto3 JSON, problem+json, correlation ids, auth."""

from __future__ import annotations

from typing import Any

import httpx
from redis.asyncio import Redis

from runtime.config import Settings
from services.marketdata.feeds import FeedSettings
from services.marketdata.main import make_spec
from tests.support.services import running_service

SPEC = make_spec(FeedSettings(feed="none"))
PROBLEM = "application/problem+json"


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    doc: dict[str, object] = r.json()
    assert doc["status"] == status and doc["code"] == code
    assert doc["correlationId"] == r.headers["x-correlation-id"]
    return doc


async def test_reads_bind_path_and_query_and_map_errors(
    infra_settings: Settings, redis_client: Redis, gateway: Any, make_api_key: Any
) -> None:
    async with (
        running_service(SPEC, infra_settings) as address,
        gateway(infra_settings, {"marketdata": address}) as gw,
        make_api_key(redis_client, ["marketdata:read"]) as (secret, _),
    ):
        auth = {"X-Api-Key": secret}
        page = await gw.get("/v1/instruments", params={"page_size": "3"}, headers=auth)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "application/json"
        body = page.json()
        assert len(body["instruments"]) == 3 and body["nextPageToken"]
        # Enum filter by name from the query string.
        crypto = await gw.get("/v1/instruments", params={"asset_class": "ASSET_CLASS_CRYPTO"}, headers=auth)
        assert {i["symbol"] for i in crypto.json()["instruments"]} == {"BTC-USD", "ETH-USD", "SOL-USD"}

        btc = await gw.get("/v1/instruments/BTC-USD", headers={**auth, "X-Correlation-Id": "corr-123"})
        assert btc.status_code == 200 and btc.headers["x-correlation-id"] == "corr-123"
        instrument = btc.json()["instrument"]
        assert instrument["symbol"] == "BTC-USD" and instrument["status"] == "INSTRUMENT_STATUS_TRADING"
        assert instrument["tickSize"] == {"value": "0.01"}

        missing = await gw.get("/v1/instruments/NOPE", headers=auth)
        doc = _problem(missing, 404, "NOT_FOUND")
        assert doc["reason"] == "INSTRUMENT_NOT_FOUND"

        # The service's field violations come back with pointers.
        forged = await gw.get("/v1/instruments", params={"page_token": "not-a-token!"}, headers=auth)
        doc = _problem(forged, 400, "INVALID_ARGUMENT")
        assert [v["pointer"] for v in doc["fieldViolations"]] == ["/pageToken"]  # type: ignore[attr-defined]

        # Wrong type in the query string: caught by the gateway with a pointer.
        bad = await gw.get("/v1/instruments", params={"page_size": "many"}, headers=auth)
        doc = _problem(bad, 400, "INVALID_ARGUMENT")
        violation = doc["fieldViolations"][0]  # type: ignore[index]
        assert violation["field"] == "page_size" and violation["location"] == "query"
        unknown = await gw.get("/v1/instruments", params={"colour": "red"}, headers=auth)
        _problem(unknown, 400, "INVALID_ARGUMENT")


async def test_auth_errors_and_routing_problems(
    infra_settings: Settings, redis_client: Redis, gateway: Any, make_api_key: Any
) -> None:
    async with (
        running_service(SPEC, infra_settings) as address,
        gateway(infra_settings, {"marketdata": address}) as gw,
        make_api_key(redis_client, ["orders:read"]) as (wrong_scope, _),
    ):
        doc = _problem(await gw.get("/v1/instruments"), 401, "UNAUTHENTICATED")
        assert doc["reason"] == "CREDENTIALS_MISSING"
        forged = await gw.get("/v1/instruments", headers={"X-Api-Key": "tk_live_" + "x" * 43})
        assert _problem(forged, 401, "UNAUTHENTICATED")["reason"] == "API_KEY_INVALID"
        garbage = await gw.get("/v1/instruments", headers={"Authorization": "Bearer not.a.jwt"})
        _problem(garbage, 401, "UNAUTHENTICATED")
        denied = await gw.get("/v1/instruments", headers={"Authorization": f"Bearer {wrong_scope}"})
        doc = _problem(denied, 403, "PERMISSION_DENIED")
        assert doc["reason"] == "MISSING_SCOPE" and "marketdata:read" in str(doc["detail"])

        _problem(await gw.get("/v1/no-such-thing"), 404, "NOT_FOUND")
        not_allowed = await gw.delete("/v1/instruments")
        assert not_allowed.status_code == 405 and not_allowed.headers["allow"] == "GET, HEAD"
        assert (await gw.get("/healthz")).json() == {"status": "ok"}


async def test_body_limit_cors_deadlines_and_malformed_json(
    infra_settings: Settings, redis_client: Redis, gateway: Any, make_api_key: Any
) -> None:
    from gateway.config import GatewayOptions

    options = GatewayOptions(max_body_bytes=64, cors_origins=["https://app.example"])
    async with (
        gateway(infra_settings, {}, options) as gw,
        make_api_key(redis_client, ["orders:write"]) as (secret, _),
    ):
        auth = {"X-Api-Key": secret}
        big = await gw.post("/v1/orders", content=b'{"symbol":"' + b"A" * 100 + b'"}', headers=auth)
        assert _problem(big, 413, "RESOURCE_EXHAUSTED")["reason"] == "BODY_TOO_LARGE"
        malformed = await gw.post(
            "/v1/orders", content=b'{"symbol": ', headers={**auth, "content-type": "application/json"}
        )
        doc = _problem(malformed, 400, "INVALID_ARGUMENT")
        assert "line 1 column" in str(doc["detail"])
        wrong_type = await gw.post(
            "/v1/orders", content=b"symbol=x", headers={**auth, "content-type": "text/plain"}
        )
        assert wrong_type.status_code == 415
        bad_deadline = await gw.post("/v1/orders", json={}, headers={**auth, "grpc-timeout": "soon"})
        _problem(bad_deadline, 400, "INVALID_ARGUMENT")

        preflight = await gw.options(
            "/v1/orders",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = await gw.options(
            "/v1/orders", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in other.headers
