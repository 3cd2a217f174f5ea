"""Credentials through the gateway, against the real identity service: each
bad one gets the right 401/403 problem+json (status, gRPC `code`, `reason`,
WWW-Authenticate).

Tokens with chosen claims are signed with identity's real current private
key, read from its key store in PostgreSQL (services.identity.keys), so only
the claim under test is wrong; a foreign P-256 key makes the wrong-signature
and unknown-kid tokens. Rotation uses identity's KeyRing.rotate, the same
function `python -m services.identity.keys rotate` runs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import jwt
import pytest_asyncio

from gateway.config import GatewayOptions
from runtime.config import Settings
from services.identity.keys import KeyRing
from services.identity.main import make_spec as identity_spec
from services.identity.seed import DEMO_EMAIL, DEMO_PASSWORD, DEMO_SLUG
from tests.integration.gateway.conftest import gateway_client
from tests.support.gateway_stack import FAST_IDENTITY, TokenMinter, foreign_key
from tests.support.services import running_service

PROBLEM = "application/problem+json"
READ = "/v1/api-keys"  # needs identity:read (identity only: a cheap authenticated route)


@dataclass
class Stack:
    settings: Settings
    addresses: dict[str, str]
    minter: TokenMinter
    tenant_id: str
    user_id: str
    token: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(infra_settings: Settings, pg_pool: asyncpg.Pool) -> AsyncIterator[Stack]:
    async with running_service(identity_spec(FAST_IDENTITY), infra_settings) as identity:
        addresses = {"identity": identity}
        async with gateway_client(infra_settings, addresses) as gw:
            session = await _login(gw)
        yield Stack(
            infra_settings,
            addresses,
            TokenMinter.for_identity(pg_pool, infra_settings, FAST_IDENTITY),
            session["tenantId"],
            session["userId"],
            session["tokens"]["accessToken"],
        )


async def _login(gw: httpx.AsyncClient) -> dict[str, Any]:
    r = await gw.post(
        "/v1/auth/login", json={"tenantSlug": DEMO_SLUG, "email": DEMO_EMAIL, "password": DEMO_PASSWORD}
    )
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def problem(r: httpx.Response, status: int, code: str, reason: str) -> dict[str, Any]:
    """The problem+json of `r`, checked: status, gRPC code, reason, correlation id."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    doc: dict[str, Any] = r.json()
    assert (doc["status"], doc["code"], doc.get("reason")) == (status, code, reason), doc
    assert doc["correlationId"] == r.headers["x-correlation-id"]
    return doc


def invalid_token(r: httpx.Response, reason: str) -> dict[str, Any]:
    """401 with a Bearer challenge naming invalid_token (RFC 6750 section 3)."""
    doc = problem(r, 401, "UNAUTHENTICATED", reason)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge, challenge
    return doc


def claims(stack: Stack, scopes: tuple[str, ...] = ("identity:read",), **overrides: Any) -> dict[str, Any]:
    return stack.minter.claims(stack.tenant_id, stack.user_id, scopes, **overrides)


async def test_a_token_minted_with_the_real_key_is_accepted(stack: Stack) -> None:
    """The control: the minted tokens below differ from this one in one claim only."""
    token = await stack.minter.sign_current(claims(stack))
    async with gateway_client(stack.settings, stack.addresses) as gw:
        r = await gw.get(READ, headers=bearer(token))
    assert r.status_code == 200, r.text


async def test_expired_token(stack: Stack) -> None:
    past = time.time() - 600
    token = await stack.minter.sign_current(claims(stack, issued_at=past, ttl_s=300))
    async with gateway_client(stack.settings, stack.addresses) as gw:
        doc = invalid_token(await gw.get(READ, headers=bearer(token)), "TOKEN_EXPIRED")
    assert "expired" in doc["detail"]


async def test_wrong_audience_and_issuer(stack: Stack) -> None:
    wrong_aud = await stack.minter.sign_current(claims(stack, aud="another-api"))
    wrong_iss = await stack.minter.sign_current(claims(stack, iss="someone-else"))
    async with gateway_client(stack.settings, stack.addresses) as gw:
        invalid_token(await gw.get(READ, headers=bearer(wrong_aud)), "TOKEN_WRONG_AUDIENCE")
        invalid_token(await gw.get(READ, headers=bearer(wrong_iss)), "TOKEN_WRONG_ISSUER")


async def test_wrong_signature(stack: Stack) -> None:
    """Identity's current kid, signed by another key."""
    current = await stack.minter.current_key()
    key, _ = foreign_key()
    token = TokenMinter.sign(claims(stack), key, current.kid)
    async with gateway_client(stack.settings, stack.addresses) as gw:
        invalid_token(await gw.get(READ, headers=bearer(token)), "TOKEN_BAD_SIGNATURE")


async def test_unknown_key_id(stack: Stack) -> None:
    key, kid = foreign_key()
    token = TokenMinter.sign(claims(stack), key, kid)
    async with gateway_client(stack.settings, stack.addresses) as gw:
        invalid_token(await gw.get(READ, headers=bearer(token)), "TOKEN_UNKNOWN_KEY")
        jwks = (await gw.get("/.well-known/jwks.json")).json()
    assert kid not in {k["kid"] for k in jwks["keys"]}


async def test_missing_credentials_and_missing_scope(stack: Stack) -> None:
    """No credential: 401 CREDENTIALS_MISSING. A valid token without the
    RPC's scope: 403 MISSING_SCOPE with an insufficient_scope challenge
    naming the scope the contract declares."""
    token = await stack.minter.sign_current(claims(stack, scopes=("orders:read",)))
    async with gateway_client(stack.settings, stack.addresses) as gw:
        anonymous = await gw.get(READ)
        problem(anonymous, 401, "UNAUTHENTICATED", "CREDENTIALS_MISSING")
        assert anonymous.headers["www-authenticate"].startswith("Bearer ")
        denied = await gw.get(READ, headers=bearer(token))
        doc = problem(denied, 403, "PERMISSION_DENIED", "MISSING_SCOPE")
        assert "identity:read" in doc["detail"]
        challenge = denied.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and 'scope="identity:read"' in challenge
        # The real demo trader has no `admin` scope: same answer from a real token.
        admin_only = await gw.get("/v1/users", headers=bearer(stack.token))
        assert 'scope="admin"' in admin_only.headers["www-authenticate"]
        problem(admin_only, 403, "PERMISSION_DENIED", "MISSING_SCOPE")


async def test_revoked_api_key(stack: Stack) -> None:
    """An API key works until revoked, then 401 API_KEY_INVALID in either
    header form; a key lacking a scope gets 403 like a token."""
    async with gateway_client(stack.settings, stack.addresses) as gw:
        created = await gw.post(
            "/v1/api-keys",
            json={"name": f"tok-{uuid.uuid4().hex[:8]}", "scopes": ["identity:read"]},
            headers=bearer(stack.token),
        )
        assert created.status_code == 200, created.text
        secret, key_id = created.json()["secret"], created.json()["apiKey"]["apiKeyId"]
        assert (await gw.get(READ, headers={"X-Api-Key": secret})).status_code == 200
        problem(
            await gw.post("/v1/api-keys", json={"name": "x"}, headers={"X-Api-Key": secret}),
            403,
            "PERMISSION_DENIED",
            "MISSING_SCOPE",
        )
        revoked = await gw.delete(f"/v1/api-keys/{key_id}", headers=bearer(stack.token))
        assert revoked.status_code == 200, revoked.text
        for headers in ({"X-Api-Key": secret}, bearer(secret)):
            invalid_token(await gw.get(READ, headers=headers), "API_KEY_INVALID")


async def test_signing_key_rotation(stack: Stack) -> None:
    """After a rotation: tokens of the old key stay valid until they expire
    (JWKS still publishes it), an expired one of the old key is refused as
    expired, and new tokens name the new kid and are accepted, also by a
    gateway that cached the key set before the rotation."""
    old = await stack.minter.current_key()
    ring = KeyRing(
        stack.minter.store,
        access_ttl_s=FAST_IDENTITY.access_token_ttl_s,
        rotate_after_s=FAST_IDENTITY.signing_key_rotate_after_s,
        reload_every_s=FAST_IDENTITY.key_reload_s,
    )
    async with gateway_client(stack.settings, stack.addresses, GatewayOptions()) as gw:
        before = (await _login(gw))["tokens"]["accessToken"]
        assert kid_of(before) == old.kid
        assert (await gw.get(READ, headers=bearer(before))).status_code == 200  # key set now cached

        new_kid = await ring.rotate()
        assert new_kid != old.kid and (await stack.minter.current_key()).kid == new_kid

        # Identity picks the new key up within its reload interval.
        deadline = time.monotonic() + 10
        while kid_of(after := (await _login(gw))["tokens"]["accessToken"]) != new_kid:
            assert time.monotonic() < deadline, "identity still signs with the old key"
            await asyncio.sleep(0.1)
        jwks = (await gw.get("/.well-known/jwks.json")).json()
        assert [k["kid"] for k in jwks["keys"]][:2] == [new_kid, old.kid]

        # The gateway that cached the old key set accepts the new kid (refetch on unknown kid).
        r = await gw.get(READ, headers=bearer(after))
        assert r.status_code == 200, r.text
        assert (await gw.get(READ, headers=bearer(before))).status_code == 200
        old_fresh = TokenMinter.sign(claims(stack), old.private_key, old.kid)
        old_expired = TokenMinter.sign(
            claims(stack, issued_at=time.time() - 600, ttl_s=300), old.private_key, old.kid
        )

    # A gateway started after the rotation knows both keys from the first fetch.
    async with gateway_client(stack.settings, stack.addresses) as fresh:
        for token in (before, old_fresh, after):
            r = await fresh.get(READ, headers=bearer(token))
            assert r.status_code == 200, r.text
        invalid_token(await fresh.get(READ, headers=bearer(old_expired)), "TOKEN_EXPIRED")
    assert json.dumps(jwks).count('"kid"') >= 2
