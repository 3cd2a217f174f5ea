"""The gateway in front of the real identity, risk, execution and marketdata
services: login with the seeded demo user, JWT and API key auth (401/403
problem+json), idempotent order placement over REST, and server-sent events
(order updates, quotes)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from trading.common.v1 import decimal_pb2, market_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.config import Settings
from runtime.messaging import new_envelope
from runtime.messaging.nats.connect import connect_nats
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from services.execution.main import SPEC as EXECUTION
from services.identity.main import make_spec as identity_spec
from services.identity.seed import DEMO_EMAIL, DEMO_PASSWORD, DEMO_SLUG
from services.identity.settings import IdentitySettings
from services.marketdata.feeds import FeedSettings
from services.marketdata.main import make_spec as marketdata_spec
from tests.support.risk import risk_spec
from tests.support.services import running_service

PROBLEM = "application/problem+json"
FAST_IDENTITY = IdentitySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


@dataclass
class Stack:
    settings: Settings
    addresses: dict[str, str]
    redis: Redis


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(infra_settings: Settings) -> AsyncIterator[Stack]:
    async with (
        running_service(identity_spec(FAST_IDENTITY), infra_settings) as identity,
        running_service(risk_spec(), infra_settings) as risk,
        running_service(marketdata_spec(FeedSettings(feed="none")), infra_settings) as marketdata,
    ):
        routed = infra_settings.model_copy(update={"service_addresses": {"risk": risk}})
        async with running_service(EXECUTION, routed) as execution:
            redis = open_redis(infra_settings, REDIS_ADMIN)
            try:
                yield Stack(
                    infra_settings,
                    {"identity": identity, "risk": risk, "execution": execution, "marketdata": marketdata},
                    redis,
                )
            finally:
                await redis.aclose()


async def login(gw: httpx.AsyncClient) -> dict[str, Any]:
    r = await gw.post(
        "/v1/auth/login", json={"tenantSlug": DEMO_SLUG, "email": DEMO_EMAIL, "password": DEMO_PASSWORD}
    )
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def bearer(doc: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {doc['tokens']['accessToken']}"}


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status and doc["correlationId"] == r.headers["x-correlation-id"]
    return doc


def _forge(token: str, *, header: dict[str, Any] | None = None, signature: bool = False) -> str:
    head, payload, sig = token.split(".")
    if header is not None:
        head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    if signature:
        raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
        raw[5] ^= 0xFF
        sig = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return f"{head}.{payload}.{sig}"


async def test_login_tokens_and_scopes(stack: Stack, gateway: Any) -> None:
    async with gateway(stack.settings, stack.addresses) as gw:
        jwks = await gw.get("/.well-known/jwks.json")
        assert jwks.status_code == 200 and jwks.json()["keys"][0]["alg"] == "ES256"
        session = await login(gw)
        assert "orders:write" in session["tokens"]["scopes"]
        mine = await gw.get("/v1/api-keys", headers=bearer(session))
        assert mine.status_code == 200, mine.text

        assert problem(await gw.get("/v1/api-keys"), 401)["reason"] == "CREDENTIALS_MISSING"
        denied = problem(await gw.get("/v1/tenants", headers=bearer(session)), 403)
        assert denied["code"] == "PERMISSION_DENIED" and denied["reason"] == "MISSING_SCOPE"

        token = session["tokens"]["accessToken"]
        tampered = await gw.get(
            "/v1/api-keys", headers={"Authorization": f"Bearer {_forge(token, signature=True)}"}
        )
        assert problem(tampered, 401)["reason"] == "TOKEN_BAD_SIGNATURE"
        unknown = _forge(token, header={"alg": "ES256", "typ": "JWT", "kid": "no-such-key"})
        assert (
            problem(await gw.get("/v1/api-keys", headers={"Authorization": f"Bearer {unknown}"}), 401)[
                "reason"
            ]
            == "TOKEN_UNKNOWN_KEY"
        )
        none_alg = _forge(token, header={"alg": "none", "kid": "x"})
        problem(await gw.get("/v1/api-keys", headers={"Authorization": f"Bearer {none_alg}"}), 401)

        wrong = await gw.post(
            "/v1/auth/login", json={"tenantSlug": DEMO_SLUG, "email": DEMO_EMAIL, "password": "not-it-at-all"}
        )
        assert problem(wrong, 401)["code"] == "UNAUTHENTICATED"
        bad = problem(await gw.post("/v1/auth/login", json={"tenantSlug": DEMO_SLUG, "email": 7}), 400)
        assert bad["fieldViolations"][0]["pointer"] == "/email"


async def test_api_key_works_until_revoked(stack: Stack, gateway: Any) -> None:
    async with gateway(stack.settings, stack.addresses) as gw:
        session = await login(gw)
        created = await gw.post(
            "/v1/api-keys",
            json={"name": f"k-{uuid.uuid4().hex[:8]}", "scopes": ["orders:read"]},
            headers=bearer(session),
        )
        assert created.status_code == 200, created.text
        secret, key_id = created.json()["secret"], created.json()["apiKey"]["apiKeyId"]
        listed = await gw.get("/v1/orders", params={"page_size": "1"}, headers={"X-Api-Key": secret})
        assert listed.status_code == 200, listed.text
        denied = await gw.post("/v1/orders", json={}, headers={"X-Api-Key": secret})
        assert problem(denied, 403)["reason"] == "MISSING_SCOPE"
        revoked = await gw.delete(f"/v1/api-keys/{key_id}", headers=bearer(session))
        assert revoked.status_code == 200, revoked.text
        after = await gw.get("/v1/orders", headers={"Authorization": f"Bearer {secret}"})
        assert problem(after, 401)["reason"] == "API_KEY_INVALID"


async def _quote(redis: Redis, symbol: str, bid: str, ask: str) -> None:
    quote = market_pb2.Quote(
        symbol=symbol,
        bid_price=decimal_pb2.Decimal(value=bid),
        bid_size=decimal_pb2.Decimal(value="100"),
        ask_price=decimal_pb2.Decimal(value=ask),
        ask_size=decimal_pb2.Decimal(value="100"),
        sequence=1,
        source="gateway-test",
    )
    now = datetime.now(UTC)
    quote.exchange_time.FromDatetime(now)
    quote.receive_time.FromDatetime(now)
    await redis.set(f"md:quote:{symbol}", quote.SerializeToString(), ex=600)


def _order(symbol: str, client_order_id: str) -> dict[str, Any]:
    return {
        "clientOrderId": client_order_id,
        "symbol": symbol,
        "side": "SIDE_BUY",
        "type": "ORDER_TYPE_LIMIT",
        "timeInForce": "TIME_IN_FORCE_GTC",
        "quantity": {"value": "1"},
        "limitPrice": {"value": "99"},
    }


async def _post_retrying_unavailable(
    gw: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str], attempts: int = 4
) -> httpx.Response:
    """What a client does with a 503 (a first call on a loaded machine can meet
    a channel still connecting): wait Retry-After and send the same request,
    same Idempotency-Key, again. A 5xx is never stored under the key."""
    for _ in range(attempts - 1):
        response = await gw.post(path, json=body, headers=headers)
        if response.status_code != 503:
            return response
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
    return await gw.post(path, json=body, headers=headers)


async def test_same_idempotency_key_places_one_order_and_returns_the_same_body(
    stack: Stack, gateway: Any
) -> None:
    symbol = f"G{uuid.uuid4().hex[:8].upper()}-USD"
    await _quote(stack.redis, symbol, "100", "100.1")
    async with gateway(stack.settings, stack.addresses) as gw:
        auth = bearer(await login(gw))
        headers = {**auth, "Idempotency-Key": f"idem-{uuid.uuid4().hex}"}
        body = _order(symbol, uuid.uuid4().hex)
        first = await _post_retrying_unavailable(gw, "/v1/orders", body, headers)
        assert first.status_code == 200, first.text
        second = await gw.post("/v1/orders", json=body, headers=headers)
        assert second.status_code == 200 and second.content == first.content
        assert second.headers["idempotent-replayed"] == "true"
        listed = await gw.get("/v1/orders", params={"symbol": symbol}, headers=auth)
        assert [o["orderId"] for o in listed.json()["orders"]] == [first.json()["order"]["orderId"]]
        reused = await gw.post("/v1/orders", json=_order(symbol, uuid.uuid4().hex), headers=headers)
        assert problem(reused, 422)["reason"] == "IDEMPOTENCY_KEY_REUSED"
        invalid = await gw.post("/v1/orders", json={**body, "quantity": {"value": "-1"}}, headers=auth)
        assert [v["pointer"] for v in problem(invalid, 400)["fieldViolations"]] == ["/quantity"]


async def _sse_events(response: httpx.Response, want: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The first ``want`` data events of an SSE response."""
    events: list[dict[str, Any]] = []

    async def read() -> None:
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                events.append(json.loads("\n".join(data)))
                data = []
                if len(events) >= want:
                    return

    await asyncio.wait_for(read(), timeout)
    return events


async def test_order_updates_arrive_as_server_sent_events(stack: Stack, gateway: Any) -> None:
    symbol = f"S{uuid.uuid4().hex[:8].upper()}-USD"
    await _quote(stack.redis, symbol, "100", "100.1")
    async with gateway(stack.settings, stack.addresses, serve_http=True) as gw:
        auth = bearer(await login(gw))
        params = {"symbol": symbol, "include_open_orders": "true"}
        async with gw.stream("GET", "/v1/orders:stream", params=params, headers=auth) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            client_order_id = uuid.uuid4().hex
            placed = await gw.post("/v1/orders", json=_order(symbol, client_order_id), headers=auth)
            assert placed.status_code == 200, placed.text
            events = await _sse_events(stream, 1)
            assert events[0]["order"]["clientOrderId"] == client_order_id
        # Unauthenticated streams are refused before any event.
        problem(await gw.get("/v1/orders:stream"), 401)


async def test_quotes_stream_as_server_sent_events(stack: Stack, gateway: Any) -> None:
    source = f"gw-{uuid.uuid4().hex[:8]}"
    async with gateway(stack.settings, stack.addresses, serve_http=True) as gw:
        auth = bearer(await login(gw))
        unknown = await gw.get("/v1/quotes:stream", params={"symbols": "NOPE-USD"}, headers=auth)
        assert problem(unknown, 404)["code"] == "NOT_FOUND"
        params = {"symbols": "BTC-USD", "skip_snapshot": "true"}
        async with gw.stream("GET", "/v1/quotes:stream", params=params, headers=auth) as stream:
            assert stream.status_code == 200
            nc = await connect_nats(stack.settings, "marketdata", connect_timeout=2)
            try:
                reader = asyncio.create_task(_sse_events(stream, 1))
                deadline = time.monotonic() + 15
                while not reader.done() and time.monotonic() < deadline:
                    now = datetime.now(UTC)
                    tick = md_events.Tick(
                        symbol="BTC-USD",
                        bid_price=decimal_pb2.Decimal(value="50000"),
                        bid_size=decimal_pb2.Decimal(value="1"),
                        ask_price=decimal_pb2.Decimal(value="50001"),
                        ask_size=decimal_pb2.Decimal(value="1"),
                        sequence=int(time.time() * 1000),
                        source=source,
                    )
                    tick.exchange_time.FromDatetime(now)
                    tick.receive_time.FromDatetime(now)
                    envelope = new_envelope(tick, tenant_id="", correlation_id="gw-test", producer="test")
                    await nc.publish("marketdata.ticks.BTC-USD", envelope.SerializeToString())
                    await nc.flush()
                    await asyncio.wait([reader], timeout=0.3)
                events = await reader
            finally:
                await nc.close()
            assert events[0]["quote"]["symbol"] == "BTC-USD"


@pytest.mark.parametrize("path", ["/v1/orders", "/v1/tenants"])
async def test_rate_limit_answers_429_with_retry_after(stack: Stack, gateway: Any, path: str) -> None:
    from gateway.config import GatewayOptions

    options = GatewayOptions(rate_limit_requests=2, rate_limit_window_s=30)
    async with gateway(stack.settings, stack.addresses, options) as gw:
        tenant = f"rl-{uuid.uuid4().hex[:8]}"
        from services.identity.apikeys import ApiKeyPrincipal, new_secret, publish, withdraw
        from services.identity.domain import token_hash

        secret = new_secret()
        principal = ApiKeyPrincipal(
            str(uuid.uuid4()), tenant, "s", frozenset({"orders:read"}), frozenset(), None
        )
        await publish(stack.redis, token_hash(secret), principal, now=time.time())
        try:
            codes = [(await gw.get(path, headers={"X-Api-Key": secret})).status_code for _ in range(2)]
            assert 429 not in codes
            limited = await gw.get(path, headers={"X-Api-Key": secret})
            assert problem(limited, 429)["reason"] == "RATE_LIMITED"
            assert 1 <= int(limited.headers["retry-after"]) <= 30
        finally:
            await withdraw(stack.redis, token_hash(secret))


async def test_order_updates_over_websocket_and_teardown(stack: Stack, gateway: Any, ws_client: Any) -> None:
    symbol = f"W{uuid.uuid4().hex[:8].upper()}-USD"
    await _quote(stack.redis, symbol, "100", "100.1")
    async with gateway(stack.settings, stack.addresses, serve_http=True) as gw:
        session = await login(gw)
        refused = await ws_client.connect(str(gw.base_url).rstrip("/"), "/v1/orders:stream", {})
        text = await asyncio.wait_for(refused.receive_text(), 10)
        assert text is not None and json.loads(text)["status"] == 401
        assert await asyncio.wait_for(refused.receive_text(), 10) is None and refused.close_code == 1008
        await refused.close()

        token = session["tokens"]["accessToken"]
        ws = await ws_client.connect(
            str(gw.base_url).rstrip("/"),
            f"/v1/orders:stream?symbol={symbol}&include_open_orders=true&access_token={token}",
            {},
        )
        try:
            # include_open_orders: an order placed before the subscription is
            # live still arrives (as the open-orders snapshot), so no race.
            client_order_id = uuid.uuid4().hex
            r = await gw.post("/v1/orders", json=_order(symbol, client_order_id), headers=bearer(session))
            assert r.status_code == 200, r.text
            async with asyncio.timeout(15):
                while True:  # an idle stream sends {"heartbeat": true} frames meanwhile
                    frame = await ws.receive_text()
                    assert frame is not None and ws.accepted
                    if not json.loads(frame).get("heartbeat"):
                        break
            assert json.loads(frame)["order"]["clientOrderId"] == client_order_id
        finally:
            await ws.close()


async def test_tenant_comes_only_from_the_credential(stack: Stack, gateway: Any, make_api_key: Any) -> None:
    """Tenant B never reads or changes tenant A's orders, whatever headers or
    fields it sends: the gateway takes the tenant from the verified key alone
    and puts it in the context token it signs for the service."""
    symbol = f"T{uuid.uuid4().hex[:8].upper()}-USD"
    await _quote(stack.redis, symbol, "100", "100.1")
    scopes = ["orders:read", "orders:write"]
    async with (
        gateway(stack.settings, stack.addresses) as gw,
        make_api_key(stack.redis, scopes) as (key_a, tenant_a),
        make_api_key(stack.redis, scopes) as (key_b, _),
    ):
        a, b = {"X-Api-Key": key_a}, {"X-Api-Key": key_b, "x-tenant-id": tenant_a.tenant_id}
        client_order_id = uuid.uuid4().hex
        placed = await gw.post("/v1/orders", json=_order(symbol, client_order_id), headers=a)
        assert placed.status_code == 200, placed.text
        order_id = placed.json()["order"]["orderId"]
        assert (await gw.get(f"/v1/orders/{order_id}", headers=a)).status_code == 200
        assert (await gw.get(f"/v1/orders/{order_id}", headers=b)).status_code == 404
        assert (await gw.get(f"/v1/client-orders/{client_order_id}", headers=b)).status_code == 404
        assert (await gw.post(f"/v1/orders/{order_id}:cancel", json={}, headers=b)).status_code == 404
        listed = await gw.get("/v1/orders", params={"symbol": symbol}, headers=b)
        assert listed.status_code == 200 and listed.json()["orders"] == []
        still = await gw.get(f"/v1/orders/{order_id}", headers=a)
        assert still.json()["order"]["status"] != "ORDER_STATUS_CANCELED"


async def _sse_until_idle(
    response: httpx.Response, *, idle_s: float = 2.0, at_least: int = 1, timeout: float = 20.0
) -> list[tuple[int | None, dict[str, Any]]]:
    """(id, data) of the data events of an SSE response, once at least
    ``at_least`` arrived and then none for ``idle_s`` (or at the deadline)."""
    events: list[tuple[int | None, dict[str, Any]]] = []
    lines = response.aiter_lines()
    deadline = time.monotonic() + timeout
    event_id: int | None = None
    data: list[str] = []
    while time.monotonic() < deadline:
        wait = idle_s if len(events) >= at_least else max(0.1, deadline - time.monotonic())
        try:
            line = await asyncio.wait_for(anext(lines), wait)
        except (TimeoutError, StopAsyncIteration):
            if len(events) >= at_least:
                break
            continue
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            events.append((event_id, json.loads("\n".join(data))))
            event_id, data = None, []
    return events


async def test_order_updates_resume_exactly_after_last_event_id(
    stack: Stack, gateway: Any, make_api_key: Any
) -> None:
    """Receive updates, disconnect, place more, reconnect with Last-Event-ID:
    exactly the missed updates arrive, in order, none repeated; the ids grow
    across connections; bad ids are 400s; another tenant resumes nothing of this one."""
    symbol = f"S{uuid.uuid4().hex[:8].upper()}-USD"
    await _quote(stack.redis, symbol, "100", "100.1")
    path, params = "/v1/orders:stream", {"symbol": symbol}
    async with gateway(stack.settings, stack.addresses, serve_http=True) as gw:
        auth = bearer(await login(gw))
        async with gw.stream("GET", path, params=params, headers=auth) as stream:
            assert stream.status_code == 200
            first_id = uuid.uuid4().hex
            assert (
                await gw.post("/v1/orders", json=_order(symbol, first_id), headers=auth)
            ).status_code == 200
            seen = await _sse_until_idle(stream)
        assert seen and all(i is not None for i, _ in seen)
        assert {e["order"]["clientOrderId"] for _, e in seen} == {first_id}
        first_position, last = seen[0][0], seen[-1][0]
        assert first_position is not None and last is not None

        # Disconnected: two more orders.
        missed_ids = [uuid.uuid4().hex, uuid.uuid4().hex]
        for coid in missed_ids:
            assert (await gw.post("/v1/orders", json=_order(symbol, coid), headers=auth)).status_code == 200

        resume = {**auth, "Last-Event-ID": str(last)}
        async with gw.stream("GET", path, params=params, headers=resume) as stream:
            assert stream.status_code == 200
            resumed = await _sse_until_idle(stream, at_least=2)
        ids = [i for i, _ in resumed if i is not None]
        assert len(ids) == len(resumed) and ids == sorted(set(ids)) and ids[0] > last
        assert [e["order"]["clientOrderId"] for _, e in resumed][:1] == missed_ids[:1]
        assert {e["order"]["clientOrderId"] for _, e in resumed} == set(missed_ids)  # no repeats of the first

        # An independent replay from before the first update: the two
        # connections together are exactly the stream, nothing missing or doubled.
        everything = {**auth, "Last-Event-ID": str(first_position - 1)}
        async with gw.stream("GET", path, params=params, headers=everything) as stream:
            replay = await _sse_until_idle(stream, at_least=len(seen) + len(resumed))
        assert replay == seen + resumed

        # Bad ids: not a position -> 400 naming the header; never issued -> 400 OUT_OF_RANGE.
        bad = await gw.get(path, params=params, headers={**auth, "Last-Event-ID": "abc"})
        assert [v["field"] for v in problem(bad, 400)["fieldViolations"]] == ["Last-Event-ID"]
        future = await gw.get(path, params=params, headers={**auth, "Last-Event-ID": str(2**62)})
        doc = problem(future, 400)
        assert (doc["code"], doc["reason"]) == ("OUT_OF_RANGE", "STREAM_POSITION_UNKNOWN")

        # Another tenant resuming from the same position sees none of these updates.
        async with make_api_key(stack.redis, ("orders:read",)) as (key, _):
            other = {"X-Api-Key": key, "Last-Event-ID": str(first_position - 1)}
            async with gw.stream("GET", path, params=params, headers=other) as stream:
                assert stream.status_code == 200
                assert await _sse_until_idle(stream, at_least=0, idle_s=1.5) == []


async def test_a_credential_that_is_sent_is_checked(stack: Stack, gateway: Any) -> None:
    """An empty Authorization header is a bad credential, not "none"; and two
    credentials are refused (a bad one never hides behind a good one)."""
    async with gateway(stack.settings, stack.addresses) as gw:
        auth = bearer(await login(gw))
        assert (
            problem(await gw.get("/v1/orders", headers={"Authorization": ""}), 401)["code"]
            == "UNAUTHENTICATED"
        )
        both = await gw.get("/v1/orders", headers={**auth, "X-Api-Key": "tk_live_not-a-key"})
        assert problem(both, 401)["reason"] == "AMBIGUOUS_CREDENTIALS"
        assert (await gw.get("/v1/orders", headers=auth)).status_code == 200
        empty_key = await gw.post("/v1/orders", json={}, headers={**auth, "Idempotency-Key": ""})
        assert problem(empty_key, 400)["fieldViolations"][0]["field"] == "idempotency-key"


async def test_every_request_leaves_one_access_line_by_route_template(
    stack: Stack, gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="gateway.access")
    order_id = str(uuid.uuid4())
    async with gateway(stack.settings, stack.addresses) as gw:
        auth = bearer(await login(gw))
        caplog.clear()
        r = await gw.get(f"/v1/orders/{order_id}", headers={**auth, "X-Correlation-Id": "access-1"})
        assert r.status_code == 404
    (line,) = [rec for rec in caplog.records if rec.name == "gateway.access"]
    assert line.getMessage().startswith("GET /v1/orders/{order_id} 404 ")
    assert order_id not in line.getMessage()  # ids stay out of the log
    assert line.correlation_id == "access-1" and line.tenant_id  # type: ignore[attr-defined]
