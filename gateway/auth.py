"""Who is calling: bearer JWTs verified locally against identity's JWKS, or API
keys; and whether the caller may call an RPC (the contract's method policy).

* Access tokens: ``services.identity.tokens.JwksVerifier`` (ES256 only,
  issuer/audience/expiry, keys cached by kid, a bounded refetch on an unknown
  kid). The key set is fetched from identity's ``GetJwks`` over the gateway's
  pooled gRPC channel, so no token check costs a network hop in the steady state.
* API keys (``X-Api-Key``, or ``Authorization: Bearer tk_live_...``):
  ``services.identity.apikeys.ApiKeyVerifier`` (one SHA-256 and one Redis GET
  against the active-key cache identity maintains; a revoked key is gone from it).
* Authorization: the RPC's ``(trading.common.v1.method)`` policy: ``public``
  RPCs need no credential; others need a valid one carrying every listed scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from redis.asyncio import Redis
from trading.common.v1 import options_pb2
from trading.identity.v1 import identity_service_pb2 as identity_pb
from trading.identity.v1 import identity_service_pb2_grpc as identity_grpc

from gateway.config import GatewayOptions
from gateway.problems import Problem
from runtime.grpc_client import ClientFactory
from services.identity.apikeys import ApiKeyVerifier, looks_like_api_key
from services.identity.tokens import JwksVerifier, TokenError

API_KEY_HEADER = "x-api-key"


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller."""

    tenant_id: str
    subject: str
    roles: frozenset[str]
    scopes: frozenset[str]
    via: str  # "jwt" | "api_key"


def unauthenticated(detail: str, reason: str) -> Problem:
    return Problem(
        grpc.StatusCode.UNAUTHENTICATED,
        detail,
        reason=reason,
        domain="trading.gateway",
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{detail}"'},
    )


def forbidden(missing: list[str]) -> Problem:
    return Problem(
        grpc.StatusCode.PERMISSION_DENIED,
        f"missing scope(s): {', '.join(missing)}",
        reason="MISSING_SCOPE",
        domain="trading.gateway",
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{" ".join(missing)}"'},
    )


def jwks_fetcher(clients: ClientFactory, timeout_s: float = 2.0) -> Any:
    """The JWKS document from identity's GetJwks (over the pooled channel)."""
    stub = identity_grpc.IdentityServiceStub(clients.channel("identity"))

    async def fetch() -> Mapping[str, Any]:
        reply = await stub.GetJwks(identity_pb.GetJwksRequest(), timeout=timeout_s)
        doc: dict[str, Any] = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        return doc

    return fetch


class Authenticator:
    """Turns request headers into a :class:`Principal` and checks policies."""

    def __init__(self, tokens: JwksVerifier, api_keys: ApiKeyVerifier) -> None:
        self._tokens = tokens
        self._api_keys = api_keys

    @classmethod
    def create(cls, options: GatewayOptions, clients: ClientFactory, redis: Redis) -> Authenticator:
        tokens = JwksVerifier(
            jwks_fetcher(clients),
            issuer=options.jwt_issuer,
            audience=options.jwt_audience,
            min_refresh_interval_s=options.jwks_min_refresh_s,
            max_age_s=options.jwks_max_age_s,
        )
        return cls(tokens, ApiKeyVerifier(redis))

    async def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        """The caller, None without credentials; 401 problem for bad ones."""
        api_key = headers.get(API_KEY_HEADER)
        authorization = headers.get("authorization")
        if authorization is not None and api_key is not None:
            # Two credentials: which one would decide is a guess; a bad one
            # must never be ignored because the other happens to be good.
            raise unauthenticated("send one credential: Authorization or X-Api-Key", "AMBIGUOUS_CREDENTIALS")
        if authorization is not None:
            # Present, even empty, is checked (an empty header is not "no credentials").
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise unauthenticated("Authorization must be 'Bearer <token>'", "MALFORMED_CREDENTIALS")
            credential = credential.strip()
            if looks_like_api_key(credential):
                return await self._api_key(credential)
            return await self._token(credential)
        if api_key is not None:
            return await self._api_key(api_key.strip())
        return None

    async def _token(self, token: str) -> Principal:
        try:
            claims = await self._tokens.verify(token)
        except TokenError as exc:
            raise unauthenticated(str(exc), "TOKEN_" + exc.reason.upper()) from None
        except grpc.aio.AioRpcError as exc:
            # No key set at all yet (identity unreachable): the token cannot be checked.
            raise Problem(
                grpc.StatusCode.UNAVAILABLE,
                "cannot verify tokens: the identity service is unavailable",
                reason="JWKS_UNAVAILABLE",
                domain="trading.gateway",
                retry_after_s=1.0,
            ) from exc
        return Principal(claims.tenant_id, claims.subject, claims.roles, claims.scopes, "jwt")

    async def _api_key(self, secret: str) -> Principal:
        principal = await self._api_keys.verify(secret)
        if principal is None:
            raise unauthenticated("unknown, revoked or expired API key", "API_KEY_INVALID")
        return Principal(principal.tenant_id, principal.subject, principal.roles, principal.scopes, "api_key")


def authorize(policy: options_pb2.MethodPolicy, principal: Principal | None) -> None:
    """401 without a caller on a non-public RPC, 403 when scopes are missing."""
    if policy.public:
        return
    if principal is None:
        raise unauthenticated("this route needs a bearer token or an API key", "CREDENTIALS_MISSING")
    missing = [s for s in policy.scopes if s not in principal.scopes]
    if missing:
        raise forbidden(missing)
