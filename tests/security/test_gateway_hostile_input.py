"""Hostile input at the REST edge (issue 14): the real gateway, served by
hypercorn, in front of the real identity, risk, marketdata and execution
services. Every class of hostile input gets a 4xx problem+json with its
problem type, never a 5xx, and changes nothing stored (no order placed, the
real user can still log in after an attack).

Classes: unsupported methods (405 + Allow), oversized bodies (413 and the
keep-alive connection closed, checked over a raw socket), Idempotency-Key
scoping (refused on anonymous routes, per principal elsewhere), deep nesting,
long number literals, int32/enum overflow, NUL bytes and invalid UTF-8 in
bodies, queries and paths, a query parameter that would replace a path
parameter, and concurrent wrong-password logins (throttled per account and
source, identity's argon2 bounded: 429 + Retry-After, never 5xx/504).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
from redis.asyncio import Redis

from gateway.config import GatewayOptions
from gateway.ratelimit import LoginThrottle
from runtime.config import Settings
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from runtime.storage.redis import tenant_key
from services.execution.main import SPEC as EXECUTION
from services.identity.main import make_spec as identity_spec
from services.identity.seed import DEMO_EMAIL, DEMO_PASSWORD, DEMO_SLUG
from services.identity.settings import IdentitySettings
from services.marketdata.feeds import FeedSettings
from services.marketdata.main import make_spec as marketdata_spec
from tests.integration.gateway.conftest import api_key, gateway_client
from tests.support.gateway_stack import write_quote
from tests.support.risk import risk_spec
from tests.support.services import running_service

PROBLEM = "application/problem+json"
TYPE_BASE = "https://errors.trading.example/"
FAST_IDENTITY = IdentitySettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
BODY_LIMIT = 16384
# The test client is the trusted proxy: each simulated client names its own
# address in X-Forwarded-For, as behind a load balancer.
OPTIONS = GatewayOptions(
    rate_limit_requests=0, max_body_bytes=BODY_LIMIT, trusted_proxies=["127.0.0.0/8", "::1/128"]
)
SCOPES = ("orders:read", "orders:write")


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


@pytest_asyncio.fixture(loop_scope="session")
async def gw(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(stack.settings, stack.addresses, OPTIONS, serve_http=True) as client:
        yield client


def problem(r: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """The problem document of ``r``, checked: status, media type, problem type."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM, r.headers
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status and doc["type"] == TYPE_BASE + kind, doc
    return doc


def reasons(doc: dict[str, Any]) -> set[str]:
    return {v["reason"] for v in doc.get("fieldViolations", [])} | {doc.get("reason", "")}


def order(symbol: str, client_order_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid limit order; ``overrides`` replace members (e.g. ``symbol``)."""
    body: dict[str, Any] = {
        "clientOrderId": client_order_id,
        "symbol": symbol,
        "side": "SIDE_BUY",
        "type": "ORDER_TYPE_LIMIT",
        "timeInForce": "TIME_IN_FORCE_GTC",
        "quantity": {"value": "1"},
        "limitPrice": {"value": "99"},
    }
    body.update(overrides)
    return body


def login_body(password: str = DEMO_PASSWORD, email: str = DEMO_EMAIL) -> dict[str, str]:
    return {"tenantSlug": DEMO_SLUG, "email": email, "password": password}


def from_client(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def no_orders(gw: httpx.AsyncClient, key: str, symbol: str) -> None:
    listed = await gw.get("/v1/orders", params={"symbol": symbol}, headers={"X-Api-Key": key})
    assert listed.status_code == 200 and listed.json()["orders"] == [], listed.text


# ---- methods ---------------------------------------------------------------------------------


async def test_unsupported_methods_answer_405_with_allow(stack: Stack, gw: httpx.AsyncClient) -> None:
    async with api_key(stack.redis, SCOPES) as (key, _):
        for method in ("TRACE", "OPTIONS", "CONNECT", "PROPFIND"):
            r = await gw.request(method, "/v1/orders", headers={"X-Api-Key": key})
            doc = problem(r, 405, "unimplemented")
            assert r.headers["allow"] == "GET, HEAD, POST", (method, r.headers)
            assert doc["reason"] == "METHOD_NOT_ALLOWED"
        r = await gw.request("TRACE", "/v1/orders/" + str(uuid.uuid4()), headers={"X-Api-Key": key})
        problem(r, 405, "unimplemented")
        assert r.headers["allow"] == "GET, HEAD"
        # HEAD is served where GET is: the GET's status and headers, no body.
        head = await gw.head("/v1/orders", headers={"X-Api-Key": key})
        assert head.status_code == 200 and head.content == b""
    # The hand-written routes too (they answer GET only, not HEAD).
    for method in ("TRACE", "HEAD", "DELETE"):
        r = await gw.request(method, "/healthz")
        if method != "HEAD":
            problem(r, 405, "unimplemented")
        assert r.status_code == 405 and r.headers["allow"] == "GET", (method, r.headers)


# ---- size ------------------------------------------------------------------------------------


async def _raw_exchange(base_url: str, request: bytes, body_chunks: list[bytes]) -> tuple[bytes, bool]:
    """Send a request over one keep-alive connection; the answer, and whether
    the server then closed the connection (within 5 s) instead of leaving the
    client hanging."""
    host, port = str(base_url).removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        for chunk in body_chunks:
            writer.write(chunk)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        answer = b""
        closed = False
        try:
            async with asyncio.timeout(5):
                while True:
                    data = await reader.read(65536)
                    if not data:
                        closed = True
                        break
                    answer += data
        except TimeoutError:
            closed = False
        except ConnectionError:
            closed = True
        return answer, closed
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def test_oversized_body_answers_413_and_closes_the_connection(
    stack: Stack, gw: httpx.AsyncClient
) -> None:
    symbol = f"H{uuid.uuid4().hex[:8].upper()}-USD"
    async with api_key(stack.redis, SCOPES) as (key, _):
        big = json.dumps({**order(symbol, uuid.uuid4().hex), "symbol": "X" * (2 << 20)}).encode()
        head = (
            "POST /v1/orders HTTP/1.1\r\nHost: gateway\r\nConnection: keep-alive\r\n"
            f"Content-Type: application/json\r\nX-Api-Key: {key}\r\n"
        )
        declared = (head + f"Content-Length: {len(big)}\r\n\r\n").encode()
        chunked_head = (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
        chunks = [b"%x\r\n%s\r\n" % (1024, big[i : i + 1024]) for i in range(0, len(big) - 1023, 1024)]
        chunks.append(b"0\r\n\r\n")
        # A client that stops after the head and one piece, and clients that
        # send the whole body before reading: all get the 413, then the close.
        cases = (
            (declared, [big[:1024]]),
            (declared, [big]),
            (chunked_head, chunks[: BODY_LIMIT // 1024 + 2]),
            (chunked_head, chunks),
        )
        for request, body in cases:
            answer, closed = await _raw_exchange(str(gw.base_url), request, body)
            status_line, _, rest = answer.partition(b"\r\n")
            assert status_line.startswith(b"HTTP/1.1 413"), (request[-40:], len(body), answer[:300])
            headers, _, payload = rest.partition(b"\r\n\r\n")
            assert b"connection: close" in headers.lower(), headers
            assert json.loads(payload)["type"] == TYPE_BASE + "resource-exhausted"
            assert closed, "the server left the keep-alive connection open after a 413"
        await no_orders(gw, key, symbol)


# ---- idempotency keys ------------------------------------------------------------------------


async def test_idempotency_key_refused_on_anonymous_routes(gw: httpx.AsyncClient) -> None:
    key = f"idem-{uuid.uuid4().hex}"
    for path, body in (
        ("/v1/auth/login", login_body()),
        ("/v1/auth/refresh", {"refreshToken": "rt_nope"}),
    ):
        r = await gw.post(path, json=body, headers={"Idempotency-Key": key, **from_client("192.0.2.10")})
        doc = problem(r, 400, "invalid-argument")
        assert doc["fieldViolations"][0]["field"] == "idempotency-key"
        assert "tokens" not in r.text


async def test_idempotency_key_is_scoped_to_the_principal(stack: Stack, gw: httpx.AsyncClient) -> None:
    symbol = f"I{uuid.uuid4().hex[:8].upper()}-USD"
    await write_quote(stack.redis, symbol)
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    shared = {"Idempotency-Key": f"idem-{uuid.uuid4().hex}"}
    async with (
        api_key(stack.redis, SCOPES, tenant) as (alice, _),
        api_key(stack.redis, SCOPES, tenant) as (bob, _),
    ):
        first = await gw.post(
            "/v1/orders", json=order(symbol, "alice-1"), headers={"X-Api-Key": alice, **shared}
        )
        assert first.status_code == 200, first.text
        # Same tenant, another subject, the same key: its own call, not a
        # replay of Alice's answer and not "key reused".
        second = await gw.post(
            "/v1/orders", json=order(symbol, "bob-1"), headers={"X-Api-Key": bob, **shared}
        )
        assert second.status_code == 200, second.text
        assert "idempotent-replayed" not in second.headers
        assert second.json()["order"]["clientOrderId"] == "bob-1"
        again = await gw.post(
            "/v1/orders", json=order(symbol, "alice-1"), headers={"X-Api-Key": alice, **shared}
        )
        assert again.headers.get("idempotent-replayed") == "true" and again.content == first.content


# ---- bodies ----------------------------------------------------------------------------------


async def test_hostile_bodies_get_400_and_place_nothing(stack: Stack, gw: httpx.AsyncClient) -> None:
    symbol = f"B{uuid.uuid4().hex[:8].upper()}-USD"
    await write_quote(stack.redis, symbol)
    cid = uuid.uuid4().hex
    valid = json.dumps(order(symbol, cid))
    cases: list[tuple[str, bytes, str]] = [
        ("deep nesting", valid[:-1].encode() + b',"labels":' + b"[" * 3000 + b"]" * 3000 + b"}", "too_deep"),
        ("deep nesting unbalanced", b"[" * 10_000, "too_deep"),
        ("4301-digit integer", valid[:-1].encode() + b',"side":' + b"9" * 4301 + b"}", "number_too_long"),
        ("100-digit exponent", valid[:-1].encode() + b',"side":1e' + b"9" * 100 + b"}", "number_too_long"),
        # Enums by name only (the document's form); a number, in range or not, is a type error.
        ("enum beyond int32", valid[:-1].encode() + b',"side":99999999999}', "type"),
        ("enum by number", valid[:-1].encode() + b',"side":1}', "type"),
        ("NUL escape", json.dumps({**order(symbol, cid), "symbol": "AB\u0000C"}).encode(), "nul_byte"),
        ("raw NUL byte", valid.replace(symbol, symbol + "\x00").encode(), "nul_byte"),
        ("invalid UTF-8", valid.encode().replace(symbol.encode(), b"\xff\xfe" + symbol.encode()), "encoding"),
        ("lone surrogate", valid.replace(symbol, symbol + "\\ud800").encode(), "encoding"),
    ]
    async with api_key(stack.redis, SCOPES) as (key, _):
        headers = {"X-Api-Key": key, "Content-Type": "application/json"}
        for name, body, reason in cases:
            assert len(body) <= BODY_LIMIT, name  # refused by the guard, not the size limit
            r = await gw.post("/v1/orders", content=body, headers=headers)
            doc = problem(r, 400, "invalid-argument")
            assert reason in reasons(doc), (name, doc)
        await no_orders(gw, key, symbol)
        # NUL in a login field that identity would look up in PostgreSQL.
        for field in ("email", "tenantSlug", "password"):
            login = {**login_body(), field: "a\u0000b"}
            r = await gw.post("/v1/auth/login", json=login, headers=from_client("192.0.2.20"))
            assert "nul_byte" in reasons(problem(r, 400, "invalid-argument"))
        # The same order, clean, is accepted: the guard refused the input, not the route.
        placed = await gw.post("/v1/orders", content=valid.encode(), headers=headers)
        assert placed.status_code == 200, placed.text


async def test_deep_nesting_within_the_body_limit(stack: Stack) -> None:
    """Deep nesting refused by the guard, not by the size limit: a gateway
    with a large body limit still answers 400 (json.loads would recurse)."""
    options = OPTIONS.model_copy(update={"max_body_bytes": 1 << 20})
    async with (
        gateway_client(stack.settings, stack.addresses, options) as gw,
        api_key(stack.redis, SCOPES) as (key, _),
    ):
        for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"9" * 5000):
            r = await gw.post(
                "/v1/orders", content=body, headers={"X-Api-Key": key, "Content-Type": "application/json"}
            )
            assert reasons(problem(r, 400, "invalid-argument")) & {"too_deep", "number_too_long"}


# ---- query and path --------------------------------------------------------------------------


async def test_hostile_query_and_path_parameters(stack: Stack, gw: httpx.AsyncClient) -> None:
    async with api_key(stack.redis, SCOPES) as (key, _):
        auth = {"X-Api-Key": key}
        cases = [
            ("/v1/orders?page_size=2147483648", "type"),  # int32 + 1
            ("/v1/orders?page_size=-2147483649", "type"),
            ("/v1/orders?page_size=" + "9" * 5000, "type"),
            ("/v1/orders?page_size=1_0", "type"),  # int() would take it
            ("/v1/orders?statuses=99999999999", "type"),  # enum numbers are int32
            ("/v1/orders?symbol=A%00B", "control_character"),
            ("/v1/orders?symbol=%FF%FE", "encoding"),
            ("/v1/orders?" + "&".join(f"symbol{i}=x" for i in range(200)), "too_many"),
            ("/v1/orders?symbol=" + "A" * 10_000, "too_long"),
            (f"/v1/orders/{uuid.uuid4()}%00", "control_character"),
            ("/v1/orders/%C0%AF", "encoding"),
        ]
        for target, reason in cases:
            r = await gw.get(httpx.URL(target), headers=auth)
            doc = problem(r, 400, "invalid-argument")
            assert reason in reasons(doc), (target, doc)


async def test_path_parameter_wins_over_the_query(stack: Stack, gw: httpx.AsyncClient) -> None:
    symbol = f"P{uuid.uuid4().hex[:8].upper()}-USD"
    await write_quote(stack.redis, symbol)
    async with api_key(stack.redis, SCOPES) as (key, _):
        auth = {"X-Api-Key": key}
        a = await gw.post("/v1/orders", json=order(symbol, f"a-{uuid.uuid4().hex[:8]}"), headers=auth)
        b = await gw.post("/v1/orders", json=order(symbol, f"b-{uuid.uuid4().hex[:8]}"), headers=auth)
        assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
        order_a, order_b = a.json()["order"], b.json()["order"]
        # client_order_id shares GetOrder's oneof with the path's order_id:
        # setting it from the query would replace the path's choice.
        for name in ("client_order_id", "clientOrderId", "order_id", "orderId"):
            value = order_b["clientOrderId"] if name.startswith("client") else order_b["orderId"]
            r = await gw.get(f"/v1/orders/{order_a['orderId']}", params={name: value}, headers=auth)
            doc = problem(r, 400, "invalid-argument")
            assert "duplicate" in reasons(doc) and order_b["orderId"] not in r.text
        r = await gw.get(
            f"/v1/client-orders/{order_a['clientOrderId']}",
            params={"order_id": order_b["orderId"]},
            headers=auth,
        )
        problem(r, 400, "invalid-argument")
        plain = await gw.get(f"/v1/orders/{order_a['orderId']}", headers=auth)
        assert plain.status_code == 200 and plain.json()["order"]["orderId"] == order_a["orderId"]


# ---- login abuse -----------------------------------------------------------------------------


async def test_concurrent_wrong_passwords_do_not_lock_out_the_owner(gw: httpx.AsyncClient) -> None:
    attacker, owner = from_client("203.0.113.7"), from_client("198.51.100.23")
    wrong = login_body(password="wrong-" + uuid.uuid4().hex)
    began = time.monotonic()
    answers = await asyncio.gather(
        *(gw.post("/v1/auth/login", json=wrong, headers=attacker) for _ in range(60))
    )
    took = time.monotonic() - began
    statuses = [r.status_code for r in answers]
    assert all(s in (401, 429) for s in statuses), statuses
    # The rest never reached argon2: the free attempts, plus at most one per
    # backoff that ran out while the burst lasted (1 s, doubling), which a
    # loaded machine can take several seconds to serve.
    expired_backoffs = math.ceil(math.log2(took + 1))
    assert statuses.count(401) <= OPTIONS.login_free_attempts + expired_backoffs, (took, statuses)
    throttled = [r for r in answers if r.status_code == 429]
    assert throttled, statuses
    for r in throttled[:5]:
        assert problem(r, 429, "resource-exhausted")["reason"] in ("LOGIN_THROTTLED", "LOGIN_BUSY")
        assert int(r.headers["retry-after"]) >= 1
    # The attacker's source stays in backoff, even with the right password...
    blocked = await gw.post("/v1/auth/login", json=login_body(), headers=attacker)
    assert problem(blocked, 429, "resource-exhausted")["reason"] == "LOGIN_THROTTLED"
    # ...while the owner, from their own address, logs in at once.
    mine = await gw.post("/v1/auth/login", json=login_body(), headers=owner)
    assert mine.status_code == 200, mine.text
    assert mine.json()["tokens"]["accessToken"]


async def test_per_account_limit_is_a_short_rate_not_a_lockout(stack: Stack) -> None:
    """Wrong passwords from many sources at once (each source within its own
    free attempts) meet the looser per-account rate; the owner waits at most
    the window, and the owner's own successes never spend the budget."""
    window_s = 2
    # The demo account's window as another test here may have left it.
    account = LoginThrottle.account_of(DEMO_SLUG, DEMO_EMAIL)
    await stack.redis.delete(tenant_key(account, "gateway", "login", "account"))
    options = OPTIONS.model_copy(update={"login_account_attempts": 4, "login_account_window_s": window_s})
    async with gateway_client(stack.settings, stack.addresses, options, serve_http=True) as gw:
        owner = from_client("198.51.100.77")
        for _ in range(6):  # more successes than the budget: none is counted
            ok = await gw.post("/v1/auth/login", json=login_body(), headers=owner)
            assert ok.status_code == 200, ok.text
        wrong = login_body(password="wrong-" + uuid.uuid4().hex)
        answers = await asyncio.gather(
            *(gw.post("/v1/auth/login", json=wrong, headers=from_client(f"203.0.113.{i}")) for i in range(10))
        )
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [401] * 4 + [429] * 6, statuses
        limited = next(r for r in answers if r.status_code == 429)
        assert problem(limited, 429, "resource-exhausted")["reason"] == "LOGIN_THROTTLED"
        assert "account" in limited.json()["detail"]
        retry_after = int(limited.headers["retry-after"])
        assert 1 <= retry_after <= window_s
        await asyncio.sleep(retry_after + 0.2)
        back = await gw.post("/v1/auth/login", json=login_body(), headers=owner)
        assert back.status_code == 200, back.text


async def test_saturated_password_verification_answers_429_not_504(stack: Stack) -> None:
    """Identity with one verification slot and a slow argon2: a burst of logins
    from many sources gets 401s and 429 LOGIN_BUSY with Retry-After, no 5xx."""
    slow = IdentitySettings(
        argon2_time_cost=2,
        argon2_memory_kib=16384,
        argon2_parallelism=1,
        login_max_concurrent_verifications=1,
        login_verification_wait_s=0.05,
    )
    async with running_service(identity_spec(slow), stack.settings) as identity:
        addresses = {**stack.addresses, "identity": identity}
        async with gateway_client(stack.settings, addresses, OPTIONS, serve_http=True) as gw:
            answers = await asyncio.gather(
                *(
                    gw.post(
                        "/v1/auth/login",
                        json=login_body(email=f"nobody-{i}@demo.local"),
                        headers=from_client(f"192.0.2.{100 + i}"),
                    )
                    for i in range(24)
                )
            )
            statuses = [r.status_code for r in answers]
            assert all(s in (401, 429) for s in statuses), [(r.status_code, r.text) for r in answers]
            busy = [r for r in answers if r.status_code == 429]
            assert busy and 401 in statuses, statuses
            assert problem(busy[0], 429, "resource-exhausted")["reason"] == "LOGIN_BUSY"
            assert int(busy[0].headers["retry-after"]) >= 1
            ok = await gw.post("/v1/auth/login", json=login_body(), headers=from_client("198.51.100.99"))
            assert ok.status_code == 200, ok.text
