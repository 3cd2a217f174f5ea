"""Delegations: how a service acts for a tenant on its own initiative.

Work no user call started (decision placing a strategy's orders, audit
reading orders and positions to replay a tenant) still needs a tenant
context at the services it calls. Identity issues it as a *delegation*
(``IdentityService.IssueDelegation``): signed by identity's key, for one
holder, one tenant and one purpose, granting the purpose's scopes at the
purpose's audiences only, for ``ttl_s``. The holder puts it in the request
context (``RequestContext.delegation``); the client interceptor embeds it in
the context tokens it mints, and callees check it (runtime.security.tokens).

:data:`PURPOSES` is the one table of what may be delegated to whom.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from trading.identity.v1 import identity_service_pb2 as identity_pb
from trading.identity.v1 import identity_service_pb2_grpc as identity_grpc

from runtime.grpc_client import ClientFactory


@dataclass(frozen=True, slots=True)
class Purpose:
    """What one kind of delegation allows."""

    holder: str  # the only principal that may obtain it
    scopes: frozenset[str]
    audiences: frozenset[str]  # services it may be presented to (they may chain on)
    ttl_s: float


PURPOSES: dict[str, Purpose] = {
    # decision places and follows the orders of a tenant's enabled strategies.
    "strategy-orders": Purpose("decision", frozenset({"orders:write"}), frozenset({"execution"}), 3600.0),
    # audit compares a replay with the live orders and positions of the tenant.
    "audit-replay": Purpose(
        "audit", frozenset({"orders:read", "portfolio:read"}), frozenset({"execution", "portfolio"}), 900.0
    ),
}


class DelegationSource(Protocol):
    """Where a holder gets its delegations (DelegationCache; tests may stand in)."""

    async def get(self, tenant_id: str, purpose: str) -> str: ...


class DelegationCache:
    """A holder's delegations per (tenant, purpose), renewed before they expire."""

    def __init__(self, clients: ClientFactory, *, timeout_s: float = 2.0) -> None:
        self._stub = identity_grpc.IdentityServiceStub(clients.channel("identity"))
        self._timeout = timeout_s
        self._held: dict[tuple[str, str], tuple[str, float]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get(self, tenant_id: str, purpose: str) -> str:
        """A delegation with at least a third of its lifetime left (fetched from
        identity when needed, one request per tenant and purpose at a time)."""
        key = (tenant_id, purpose)
        held = self._held.get(key)
        if held is not None and held[1] > time.time():
            return held[0]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            held = self._held.get(key)
            if held is not None and held[1] > time.time():
                return held[0]
            reply = await self._stub.IssueDelegation(
                identity_pb.IssueDelegationRequest(tenant_id=tenant_id, purpose=purpose),
                timeout=self._timeout,
            )
            expires = reply.expire_time.ToSeconds()
            now = time.time()
            renew_at = now + (expires - now) * 2 / 3
            self._held[key] = (reply.delegation, renew_at)
            return reply.delegation
