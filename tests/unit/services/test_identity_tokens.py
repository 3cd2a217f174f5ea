"""services.identity.tokens (the gateway's verifier) and the pure identity
rules, without servers: every refusal reason, the bounded refetch on unknown
kids, and verification latency."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.identity import apikeys, domain
from services.identity.keys import public_jwk
from services.identity.tokens import JwksVerifier, TokenError

ISS, AUD = "trading-identity", "trading-api"


class Issuer:
    """Signs tokens like identity does and serves a JWKS; counts fetches."""

    def __init__(self) -> None:
        self.keys: list[ec.EllipticCurvePrivateKey] = [ec.generate_private_key(ec.SECP256R1())]
        self.fetches = 0

    def kid(self, key: ec.EllipticCurvePrivateKey) -> str:
        return public_jwk(key.public_key())["kid"]

    async def fetch(self) -> Mapping[str, Any]:
        self.fetches += 1
        return {"keys": [public_jwk(k.public_key()) for k in self.keys]}

    def token(
        self, key: ec.EllipticCurvePrivateKey | None = None, *, kid: str | None = None, **overrides: Any
    ) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISS,
            "aud": AUD,
            "sub": "user-1",
            "tenant": "tenant-1",
            "roles": ["TRADER"],
            "scopes": ["orders:write", "marketdata:read"],
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid or self.kid(key)})


def verifier(issuer: Issuer, **kw: Any) -> JwksVerifier:
    return JwksVerifier(issuer.fetch, issuer=ISS, audience=AUD, **kw)


async def _reason(v: JwksVerifier, token: str) -> str:
    with pytest.raises(TokenError) as err:
        await v.verify(token)
    return err.value.reason


async def test_valid_token_gives_its_claims() -> None:
    issuer = Issuer()
    claims = await verifier(issuer).verify(issuer.token())
    assert (claims.subject, claims.tenant_id) == ("user-1", "tenant-1")
    assert claims.roles == {"TRADER"} and "orders:write" in claims.scopes
    assert claims.key_id == issuer.kid(issuer.keys[0])


async def test_refusals_each_have_their_reason() -> None:
    issuer = Issuer()
    v = verifier(issuer, leeway_s=0)
    now = int(time.time())
    assert await _reason(v, issuer.token(exp=now - 10, iat=now - 400)) == "expired"
    assert await _reason(v, issuer.token(aud="someone-else")) == "wrong_audience"
    assert await _reason(v, issuer.token(iss="evil")) == "wrong_issuer"
    assert await _reason(v, issuer.token(tenant=None)) == "missing_claim"
    # Signed by a key that is not in the JWKS but names a published kid.
    forger = ec.generate_private_key(ec.SECP256R1())
    assert await _reason(v, issuer.token(forger, kid=issuer.kid(issuer.keys[0]))) == "bad_signature"
    # Tampered payload: valid signature of other bytes.
    head, _, sig = issuer.token().split(".")
    other = issuer.token(sub="admin").split(".")[1]
    assert await _reason(v, f"{head}.{other}.{sig}") == "bad_signature"
    # Algorithm confusion: "none" and HS256 are refused before any key lookup.
    unsigned = jwt.encode({"sub": "x"}, key="", algorithm="none", headers={"kid": "k"})
    assert await _reason(v, unsigned) == "malformed"
    hs = jwt.encode({"sub": "x"}, "secret-secret-secret-secret-1234", algorithm="HS256", headers={"kid": "k"})
    assert await _reason(v, hs) == "malformed"
    assert await _reason(v, "not-a-jwt") == "malformed"


async def test_unknown_kid_refetches_once_and_is_bounded() -> None:
    issuer = Issuer()
    v = verifier(issuer, min_refresh_interval_s=60)
    await v.verify(issuer.token())
    assert issuer.fetches == 1
    stranger = ec.generate_private_key(ec.SECP256R1())
    for _ in range(20):
        assert await _reason(v, issuer.token(stranger)) == "unknown_key"
    # Twenty forged kids within the interval cost no refetch at all.
    assert issuer.fetches == 1

    # A key rotated in: the next fetch (interval passed) picks it up, and the
    # old key keeps verifying its unexpired tokens.
    fresh = verifier(issuer, min_refresh_interval_s=0)
    old_token = issuer.token()
    await fresh.verify(old_token)
    issuer.keys.insert(0, ec.generate_private_key(ec.SECP256R1()))
    before = issuer.fetches
    claims = await fresh.verify(issuer.token(issuer.keys[0]))
    assert claims.key_id == issuer.kid(issuer.keys[0]) and issuer.fetches == before + 1
    assert (await fresh.verify(old_token)).key_id == issuer.kid(issuer.keys[1])


async def test_withdrawn_key_stops_verifying_after_max_age() -> None:
    issuer = Issuer()
    v = verifier(issuer, max_age_s=0.0)
    token = issuer.token()
    await v.verify(token)
    issuer.keys = [ec.generate_private_key(ec.SECP256R1())]
    assert await _reason(v, token) == "unknown_key"


async def test_verification_latency() -> None:
    """p50/p99 over 10k verifications with the JWKS cached: distinct tokens
    (each pays the ECDSA check) and one token reused (the verified-token cache)."""
    issuer = Issuer()
    tokens = [issuer.token() for _ in range(2000)]
    v = verifier(issuer, cache_size=100)
    await v.verify(tokens[0])  # JWKS fetched once

    def pct(samples: list[float]) -> tuple[float, float]:
        q = statistics.quantiles(samples, n=100)
        return q[49] * 1e3, q[98] * 1e3

    distinct: list[float] = []
    for i in range(10_000):
        token = tokens[i % len(tokens)]
        v._verified.clear()  # force the signature check each time
        t0 = time.perf_counter()
        await v.verify(token)
        distinct.append(time.perf_counter() - t0)
    cached: list[float] = []
    for _ in range(10_000):
        t0 = time.perf_counter()
        await v.verify(tokens[0])
        cached.append(time.perf_counter() - t0)
    (d50, d99), (c50, c99) = pct(distinct), pct(cached)
    print(
        f"\nverify ES256 (signature) p50={d50:.3f}ms p99={d99:.3f}ms; cached p50={c50:.4f}ms p99={c99:.4f}ms"
    )
    assert c50 < 0.1  # the steady state meets the 0.1 ms goal with room under load
    assert d50 < 5.0  # loose: the machine is shared; the figure is reported, not gated


def test_role_scopes_follow_the_contract_comments() -> None:
    scopes = domain.RoleScopes.from_declared({"features:read", "risk:read", "risk:write", "admin"})
    viewer, trader, admin = (scopes.of_role(r) for r in (domain.VIEWER, domain.TRADER, domain.ADMIN))
    assert all(s.endswith(":read") for s in viewer) and {"features:read", "risk:read"} <= viewer
    assert trader == viewer | {"orders:write", "strategies:write", "webhooks:write", "identity:write"}
    assert admin == viewer | {"admin", "risk:write", "risk:admin"}
    assert scopes.of_roles([domain.VIEWER, domain.TRADER]) == trader


def test_refresh_tokens_carry_their_tenant_and_reject_forgeries() -> None:
    tenant = str(uuid.uuid4())
    token = domain.new_refresh_token(tenant)
    assert domain.refresh_token_tenant(token) == tenant and 16 <= len(token) <= 512
    assert domain.new_refresh_token(tenant) != token
    for bad in ("rt_", "xx" + token[2:], token + "AAAA", "rt_!!!!"):
        with pytest.raises(domain.MalformedRefreshToken):
            domain.refresh_token_tenant(bad)


def test_passwords_rehash_when_parameters_change() -> None:
    weak = domain.Passwords(domain.PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1))
    strong = domain.Passwords(domain.PasswordPolicy(time_cost=2, memory_cost_kib=16, parallelism=1))
    stored = weak.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert strong.verify(stored, "correct horse") and not strong.verify(stored, "wrong")
    assert strong.needs_rehash(stored) and not weak.needs_rehash(stored)
    assert not strong.verify(None, "correct horse")


def test_api_key_secrets() -> None:
    secret = apikeys.new_secret()
    assert apikeys.looks_like_api_key(secret) and len(secret) > 40
    assert apikeys.key_prefix(secret) == secret[:12] and secret.startswith("tk_live_")
    principal = apikeys.ApiKeyPrincipal("k", "t", "u", frozenset({"a:read"}), frozenset({"TRADER"}), None)
    assert apikeys.ApiKeyPrincipal.from_json(principal.to_json()) == principal
