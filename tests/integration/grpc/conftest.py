"""Fixtures of the runtime's gRPC tests: real grpc.aio servers and recording servicers.

Tests take the ``kit`` fixture (a :class:`GrpcKit`) rather than importing from
here, so they work under any pytest import mode and type-check with ``mypy .``.

Servers run the production set-up (:class:`runtime.grpc_server.ServiceRunner`
with the standard interceptors, health, reflection) on spare loopback ports,
with servicers of real generated services (identity, marketdata) that record
what they saw and fail on demand.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import status_pb2
from opentelemetry.trace import TracerProvider
from trading.identity.v1 import identity_service_pb2 as id_pb
from trading.identity.v1 import identity_service_pb2_grpc as id_grpc
from trading.marketdata.v1 import marketdata_service_pb2 as md_pb
from trading.marketdata.v1 import marketdata_service_pb2_grpc as md_grpc

from runtime.config import ClientSettings, Settings
from runtime.context import RequestContext, current_context, require_tenant
from runtime.errors import ServiceError
from runtime.grpc_client import ClientFactory
from runtime.grpc_server import ServiceRunner

IDENTITY = "trading.identity.v1.IdentityService"
MARKETDATA = "trading.marketdata.v1.MarketDataService"


class IdentityServicer(id_grpc.IdentityServiceServicer):
    """Counts calls per method, records the request context of each, fails on demand."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.contexts: list[RequestContext] = []
        self.remaining: list[float | None] = []
        # Statuses the next calls of a method fail with, in order.
        self.fail_next: dict[str, list[status_pb2.Status]] = collections.defaultdict(list)
        # Called by GetTenant before answering (a downstream call in chain tests).
        self.downstream: Callable[[id_pb.GetTenantRequest], Awaitable[None]] | None = None
        # GetJwks waits for this (in-flight call during shutdown).
        self.jwks_started = asyncio.Event()
        self.jwks_release = asyncio.Event()
        self.jwks_release.set()

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        ctx = current_context()
        self.contexts.append(ctx)
        self.remaining.append(ctx.time_remaining())
        pending = self.fail_next[method]
        if pending:
            raise ServiceError(pending.pop(0))

    async def GetTenant(self, request: id_pb.GetTenantRequest, context: Any) -> id_pb.GetTenantResponse:
        self._enter("GetTenant")
        if self.downstream is not None:
            await self.downstream(request)
        return id_pb.GetTenantResponse(tenant=id_pb.Tenant(tenant_id=request.tenant_id, slug="acme"))

    async def CreateTenant(
        self, request: id_pb.CreateTenantRequest, context: Any
    ) -> id_pb.CreateTenantResponse:
        self._enter("CreateTenant")
        return id_pb.CreateTenantResponse(tenant=id_pb.Tenant(slug=request.slug))

    async def GetJwks(self, request: id_pb.GetJwksRequest, context: Any) -> id_pb.GetJwksResponse:
        self._enter("GetJwks")
        self.jwks_started.set()
        await self.jwks_release.wait()
        return id_pb.GetJwksResponse()

    async def CreateApiKey(
        self, request: id_pb.CreateApiKeyRequest, context: Any
    ) -> id_pb.CreateApiKeyResponse:
        self._enter("CreateApiKey")
        require_tenant()
        return id_pb.CreateApiKeyResponse(secret="s3cret")


class MarketDataServicer(md_grpc.MarketDataServiceServicer):
    """Streams one quote per requested symbol."""

    def __init__(self) -> None:
        self.calls = 0
        self.contexts: list[RequestContext] = []

    async def StreamQuotes(
        self, request: md_pb.StreamQuotesRequest, context: Any
    ) -> AsyncIterator[md_pb.StreamQuotesResponse]:
        self.calls += 1
        self.contexts.append(current_context())
        for symbol in request.symbols:
            response = md_pb.StreamQuotesResponse(snapshot=True)
            response.quote.symbol = symbol
            yield response


def new_identity() -> IdentityServicer:
    """A recording identity servicer (the generated base class declares every RPC
    abstract; the ones not overridden here are never called by these tests)."""
    return IdentityServicer()  # type: ignore[abstract]


def new_marketdata() -> MarketDataServicer:
    """A streaming marketdata servicer (see :func:`new_identity`)."""
    return MarketDataServicer()  # type: ignore[abstract]


def make_settings(**client: Any) -> Settings:
    """Settings whose client defaults are short enough for tests."""
    defaults: dict[str, Any] = {
        "default_timeout_s": 2.0,
        "max_attempts": 3,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "breaker_failure_threshold": 3,
        "breaker_reset_timeout_s": 0.3,
    }
    defaults.update(client)
    return Settings(client=ClientSettings(**defaults), shutdown_grace_s=2.0)


@asynccontextmanager
async def run_server(
    *servicers: Any,
    address: str = "127.0.0.1:0",
    ready_check: Callable[[], Awaitable[bool]] | None = None,
    metrics_port: int = -1,
    settings: Settings | None = None,
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[ServiceRunner]:
    """A ServiceRunner serving the given servicers (identity / marketdata) on loopback."""

    def register(server: grpc.aio.Server) -> list[str]:
        names = []
        for servicer in servicers:
            if isinstance(servicer, IdentityServicer):
                id_grpc.add_IdentityServiceServicer_to_server(servicer, server)
                names.append(IDENTITY)
            elif isinstance(servicer, MarketDataServicer):
                md_grpc.add_MarketDataServiceServicer_to_server(servicer, server)
                names.append(MARKETDATA)
        return names

    runner = ServiceRunner(
        "identity",
        settings or make_settings(),
        register,
        ready_check=ready_check,
        address=address,
        metrics_port=metrics_port,
        ready_poll_s=0.02,
        tracer_provider=tracer_provider,
    )
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop(grace=1.0)


@asynccontextmanager
async def client_factory(settings: Settings) -> AsyncIterator[ClientFactory]:
    factory = ClientFactory(settings)
    try:
        yield factory
    finally:
        await factory.close()


class GrpcKit:
    """What the tests use: servicers, settings, servers and client factories."""

    IDENTITY = IDENTITY
    MARKETDATA = MARKETDATA
    identity = staticmethod(new_identity)
    marketdata = staticmethod(new_marketdata)
    settings = staticmethod(make_settings)
    server = staticmethod(run_server)
    clients = staticmethod(client_factory)


@pytest.fixture
def kit() -> GrpcKit:
    return GrpcKit()
