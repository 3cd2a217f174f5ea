"""Fixtures of the runtime's gRPC tests: real grpc.aio servers and recording servicers.

Tests take the ``kit`` fixture (a :class:`GrpcKit`) rather than importing from
here, so they work under any pytest import mode and type-check with ``mypy .``.

Servers run the production set-up (:class:`runtime.grpc_server.ServiceRunner`
with the standard interceptors, health, reflection, mutual TLS with the
service's own certificate and the caller guard) on spare loopback ports, with
servicers of real generated services (identity, marketdata, execution, risk)
that record what they saw and fail on demand. A server runs as the principal
of the service it serves; clients dial it by that name (``kit.route`` puts
its address into the settings) as a real principal (the gateway by default)
and act for a user with :meth:`GrpcKit.user` (the context the gateway builds
after verifying a user's token). The session's local PKI lives in a
temporary directory.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import status_pb2
from opentelemetry.trace import TracerProvider
from trading.execution.v1 import execution_service_pb2 as ex_pb
from trading.execution.v1 import execution_service_pb2_grpc as ex_grpc
from trading.identity.v1 import identity_service_pb2 as id_pb
from trading.identity.v1 import identity_service_pb2_grpc as id_grpc
from trading.marketdata.v1 import marketdata_service_pb2 as md_pb
from trading.marketdata.v1 import marketdata_service_pb2_grpc as md_grpc
from trading.risk.v1 import risk_service_pb2 as risk_pb
from trading.risk.v1 import risk_service_pb2_grpc as risk_grpc

from runtime.config import ClientSettings, Settings
from runtime.context import RequestContext, current_context, require_tenant
from runtime.errors import ServiceError
from runtime.grpc_client import ClientFactory
from runtime.grpc_server import ServiceRunner
from runtime.health import HealthMonitor
from runtime.security.pki import ensure_pki
from tests.support.security import all_scopes, as_user, secure_channel

IDENTITY = "trading.identity.v1.IdentityService"
MARKETDATA = "trading.marketdata.v1.MarketDataService"
EXECUTION = "trading.execution.v1.ExecutionService"
RISK = "trading.risk.v1.RiskService"


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


class ExecutionServicer(ex_grpc.ExecutionServiceServicer):
    """PlaceOrder records its context and calls on (``downstream``), as
    execution calls risk."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.contexts: list[RequestContext] = []
        self.downstream: Callable[[ex_pb.PlaceOrderRequest], Awaitable[None]] | None = None

    async def PlaceOrder(self, request: ex_pb.PlaceOrderRequest, context: Any) -> ex_pb.PlaceOrderResponse:
        self.calls["PlaceOrder"] += 1
        self.contexts.append(current_context())
        if self.downstream is not None:
            await self.downstream(request)
        return ex_pb.PlaceOrderResponse()


class RiskServicer(risk_grpc.RiskServiceServicer):
    """CheckOrder records its context and remaining budget, fails on demand."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.contexts: list[RequestContext] = []
        self.remaining: list[float | None] = []
        self.fail_next: list[status_pb2.Status] = []

    async def CheckOrder(
        self, request: risk_pb.CheckOrderRequest, context: Any
    ) -> risk_pb.CheckOrderResponse:
        self.calls["CheckOrder"] += 1
        ctx = current_context()
        self.contexts.append(ctx)
        self.remaining.append(ctx.time_remaining())
        if self.fail_next:
            raise ServiceError(self.fail_next.pop(0))
        return risk_pb.CheckOrderResponse(approved=True)


def new_identity() -> IdentityServicer:
    """A recording identity servicer (the generated base class declares every RPC
    abstract; the ones not overridden here are never called by these tests)."""
    return IdentityServicer()  # type: ignore[abstract]


def new_marketdata() -> MarketDataServicer:
    """A streaming marketdata servicer (see :func:`new_identity`)."""
    return MarketDataServicer()  # type: ignore[abstract]


def new_execution() -> ExecutionServicer:
    """An execution servicer whose PlaceOrder calls on (see :func:`new_identity`)."""
    return ExecutionServicer()  # type: ignore[abstract]


def new_risk() -> RiskServicer:
    """A recording risk servicer (see :func:`new_identity`)."""
    return RiskServicer()  # type: ignore[abstract]


# servicer class -> (contract service, how to add it, the service (principal) serving it)
_SERVED: dict[type, tuple[str, Callable[[Any, grpc.aio.Server], None], str]] = {
    IdentityServicer: (IDENTITY, id_grpc.add_IdentityServiceServicer_to_server, "identity"),
    MarketDataServicer: (MARKETDATA, md_grpc.add_MarketDataServiceServicer_to_server, "marketdata"),
    ExecutionServicer: (EXECUTION, ex_grpc.add_ExecutionServiceServicer_to_server, "execution"),
    RiskServicer: (RISK, risk_grpc.add_RiskServiceServicer_to_server, "risk"),
}


class GrpcKit:
    """What the tests use: servicers, settings, servers, client factories,
    channels and user contexts, all on the session's local PKI."""

    IDENTITY = IDENTITY
    MARKETDATA = MARKETDATA
    EXECUTION = EXECUTION
    RISK = RISK
    identity = staticmethod(new_identity)
    marketdata = staticmethod(new_marketdata)
    execution = staticmethod(new_execution)
    risk = staticmethod(new_risk)

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir

    def settings(self, **client: Any) -> Settings:
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
        return Settings(client=ClientSettings(**defaults), shutdown_grace_s=2.0, var_dir=self.var_dir)

    @asynccontextmanager
    async def server(
        self,
        *servicers: Any,
        address: str = "127.0.0.1:0",
        ready_check: Callable[[], Awaitable[bool]] | None = None,
        metrics_port: int = -1,
        settings: Settings | None = None,
        tracer_provider: TracerProvider | None = None,
        monitor: HealthMonitor | None = None,
    ) -> AsyncIterator[ServiceRunner]:
        """A ServiceRunner serving the given servicers on loopback, as the
        service of the first one (its certificate, its callers' tokens)."""
        served = [_SERVED[type(s)] for s in servicers]

        def register(server: grpc.aio.Server) -> list[str]:
            for servicer, (_, add, _) in zip(servicers, served, strict=True):
                add(servicer, server)
            return [name for name, _, _ in served]

        runner = ServiceRunner(
            served[0][2],
            settings or self.settings(),
            register,
            ready_check=ready_check,
            address=address,
            metrics_port=metrics_port,
            ready_poll_s=0.02,
            tracer_provider=tracer_provider,
            monitor=monitor,
        )
        await runner.start()
        try:
            yield runner
        finally:
            await runner.stop(grace=1.0)

    @asynccontextmanager
    async def clients(self, settings: Settings, principal: str = "gateway") -> AsyncIterator[ClientFactory]:
        """A client factory of ``principal`` (the gateway unless a service calls on)."""
        factory = ClientFactory(settings, principal=principal)
        try:
            yield factory
        finally:
            await factory.close()

    @staticmethod
    def route(settings: Settings, *runners: ServiceRunner) -> None:
        """Point the settings' address of each runner's service at it (clients
        dial services by name: the name is the token's audience and the name
        the server's certificate must carry)."""
        for runner in runners:
            settings.service_addresses[runner.service] = f"127.0.0.1:{runner.port}"

    def channel(self, runner: ServiceRunner, principal: str = "gateway") -> grpc.aio.Channel:
        """A bare mutual-TLS channel to ``runner`` as ``principal`` (no client interceptors)."""
        return secure_channel(
            self.settings(), f"127.0.0.1:{runner.port}", runner.service, principal=principal
        )

    def user_md(
        self,
        runner: ServiceRunner,
        tenant: str,
        *,
        subject: str = "user-test",
        scopes: Iterable[str] | None = None,
        roles: Iterable[str] = ("ADMIN",),
        correlation_id: str = "",
    ) -> tuple[tuple[str, str], ...]:
        """Metadata of a call to ``runner`` for a user of ``tenant``: a context
        token the gateway signed (all scopes unless given)."""
        return as_user(
            self.settings(), runner.service, tenant, subject=subject, scopes=scopes, roles=roles,
            correlation_id=correlation_id,
        )  # fmt: skip

    @staticmethod
    def user(
        tenant: str,
        *,
        subject: str = "user-test",
        correlation_id: str = "",
        scopes: Iterable[str] | None = None,
    ) -> RequestContext:
        """The request context the gateway builds for a verified user (all
        scopes unless given): ``use_context`` it around calls through a
        gateway ClientFactory."""
        return RequestContext(
            tenant_id=tenant,
            subject=subject,
            correlation_id=correlation_id,
            scopes=frozenset(all_scopes() if scopes is None else scopes),
            roles=frozenset({"ADMIN"}),
        )


@pytest.fixture(scope="session")
def grpc_var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's var dir: its local PKI (CA, a certificate per principal)."""
    var_dir = tmp_path_factory.mktemp("grpc-var")
    security = Settings(var_dir=var_dir).security
    ensure_pki(security.pki_path(var_dir), security.trust_domain)
    return var_dir


@pytest.fixture
def kit(grpc_var_dir: Path) -> GrpcKit:
    return GrpcKit(grpc_var_dir)
