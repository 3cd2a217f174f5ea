"""A tiny edge for the client SDK's unit tests (tests/unit/clients): scripted
Identity, MarketData and Execution servicers, served by an in-process
grpc.aio server with TLS (as the real edge: server side only), that record
what each call carried and answer scripted failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from trading.execution.v1 import execution_service_pb2, execution_service_pb2_grpc, types_pb2
from trading.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from trading.marketdata.v1 import marketdata_service_pb2, marketdata_service_pb2_grpc

from runtime.service import fill_unimplemented

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class Failure:
    """A scripted error answer: code, message and google.rpc details."""

    code: grpc.StatusCode
    message: str = "scripted failure"
    details: tuple[Message, ...] = ()

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        st = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in self.details:
            st.details.add().Pack(detail)
        return ((STATUS_DETAILS_KEY, st.SerializeToString()),)


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(int(seconds * 1e9))
    return info


@dataclass
class Seen:
    """One call as the server received it."""

    method: str
    metadata: dict[str, str]
    time_remaining: float | None
    request: Any


class FakeClock:
    """Wall-clock time the tests move by hand (token expiry is wall-clock)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Script:
    """What the fake services answer, and what they saw."""

    clock: FakeClock
    seen: list[Seen] = field(default_factory=list)
    # Popped one per call of the named method before answering normally.
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    access_lifetime: float = 300.0
    issued: int = 0
    # RefreshToken answers UNAUTHENTICATED (the refresh token was revoked).
    refresh_refused: bool = False
    stream_updates: int = 3
    # The stream fails with this after sending its updates (None: it stays open).
    stream_failure: Failure | None = None

    def calls(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method]

    def tokens(self) -> identity_service_pb2.AuthTokens:
        self.issued += 1
        tokens = identity_service_pb2.AuthTokens(
            access_token=f"access-{self.issued}",
            token_type="Bearer",
            refresh_token=f"refresh-token-{self.issued:08d}",
        )
        tokens.access_token_expires_at.FromNanoseconds(int((self.clock() + self.access_lifetime) * 1e9))
        tokens.refresh_token_expires_at.FromNanoseconds(int((self.clock() + 86_400) * 1e9))
        return tokens

    async def enter(self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Record the call; answer a scripted failure if one is queued."""
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.seen.append(Seen(method, metadata, context.time_remaining(), request))
        queued = self.failures.get(method)
        if queued:
            failure = queued.pop(0)
            await context.abort(failure.code, failure.message, trailing_metadata=failure.trailing_metadata())


def _order(
    order_id: str, status: types_pb2.OrderStatus.ValueType = types_pb2.ORDER_STATUS_ACCEPTED
) -> types_pb2.Order:
    return types_pb2.Order(order_id=order_id, symbol="BTC-USD", status=status)


# Plain classes (runtime.service.fill_unimplemented answers the other RPCs).
class Identity:
    def __init__(self, script: Script) -> None:
        self.script = script

    async def Login(
        self, request: identity_service_pb2.LoginRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> identity_service_pb2.LoginResponse:
        await self.script.enter("Login", request, context)
        if request.password != "right":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")
        return identity_service_pb2.LoginResponse(tokens=self.script.tokens(), user_id="u-1", tenant_id="t-1")

    async def RefreshToken(
        self, request: identity_service_pb2.RefreshTokenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> identity_service_pb2.RefreshTokenResponse:
        await self.script.enter("RefreshToken", request, context)
        if self.script.refresh_refused:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "refresh token revoked")
        return identity_service_pb2.RefreshTokenResponse(tokens=self.script.tokens())


class MarketData:
    def __init__(self, script: Script) -> None:
        self.script = script

    async def GetQuote(
        self, request: marketdata_service_pb2.GetQuoteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> marketdata_service_pb2.GetQuoteResponse:
        await self.script.enter("GetQuote", request, context)
        reply = marketdata_service_pb2.GetQuoteResponse()
        reply.quote.symbol = request.symbol
        return reply


class Execution:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.replies: dict[str, execution_service_pb2.PlaceOrderResponse] = {}

    async def PlaceOrder(
        self, request: execution_service_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> execution_service_pb2.PlaceOrderResponse:
        await self.script.enter("PlaceOrder", request, context)
        key = str(dict(context.invocation_metadata() or ()).get("idempotency-key", ""))
        if key in self.replies:  # what the edge does with a repeated key
            await context.send_initial_metadata((("idempotent-replayed", "true"),))
            return self.replies[key]
        reply = execution_service_pb2.PlaceOrderResponse(order=_order(f"order-{len(self.replies) + 1}"))
        self.replies[key] = reply
        return reply

    async def GetOrder(
        self, request: execution_service_pb2.GetOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> execution_service_pb2.GetOrderResponse:
        await self.script.enter("GetOrder", request, context)
        return execution_service_pb2.GetOrderResponse(order=_order(request.order_id))

    async def StreamOrderUpdates(
        self,
        request: execution_service_pb2.StreamOrderUpdatesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[execution_service_pb2.StreamOrderUpdatesResponse]:
        await self.script.enter("StreamOrderUpdates", request, context)
        for i in range(self.script.stream_updates):
            yield execution_service_pb2.StreamOrderUpdatesResponse(
                order=_order("order-1", types_pb2.ORDER_STATUS_FILLED), stream_sequence=i + 1
            )
        failure = self.script.stream_failure
        if failure is not None:
            await context.abort(failure.code, failure.message, trailing_metadata=failure.trailing_metadata())


@dataclass
class Edge:
    target: str
    ca_file: Path
    script: Script
    clock: FakeClock


@asynccontextmanager
async def serve_edge(key: bytes, cert: bytes, ca_file: Path) -> AsyncIterator[Edge]:
    """The fake edge on a spare loopback port, until the block ends."""
    clock = FakeClock()
    script = Script(clock)
    server = grpc.aio.server()
    registrations: list[tuple[Any, object, Any]] = [
        (
            identity_service_pb2_grpc.add_IdentityServiceServicer_to_server,
            Identity(script),
            identity_service_pb2,
        ),
        (
            marketdata_service_pb2_grpc.add_MarketDataServiceServicer_to_server,
            MarketData(script),
            marketdata_service_pb2,
        ),
        (
            execution_service_pb2_grpc.add_ExecutionServiceServicer_to_server,
            Execution(script),
            execution_service_pb2,
        ),
    ]
    for add, servicer, module in registrations:
        (service,) = module.DESCRIPTOR.services_by_name.values()
        fill_unimplemented(servicer, service)
        add(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    await server.start()
    try:
        yield Edge(f"127.0.0.1:{port}", ca_file, script, clock)
    finally:
        await server.stop(None)
