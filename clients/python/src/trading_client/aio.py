"""The asyncio client (grpc.aio): ``AsyncTradingClient``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio
from tenacity import AsyncRetrying
from trading.analytics.v1 import analytics_service_pb2_grpc
from trading.audit.v1 import audit_service_pb2_grpc
from trading.decision.v1 import decision_service_pb2_grpc
from trading.execution.v1 import execution_service_pb2_grpc
from trading.features.v1 import features_service_pb2_grpc
from trading.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from trading.marketdata.v1 import marketdata_service_pb2_grpc
from trading.notification.v1 import notification_service_pb2_grpc
from trading.portfolio.v1 import portfolio_service_pb2_grpc
from trading.risk.v1 import risk_service_pb2_grpc

from trading_client import _channel
from trading_client.auth import (
    API_KEY_KEY,
    ApiKey,
    AsyncTokenSource,
    PasswordLogin,
    bearer,
    bearer_token,
    credential_from,
    needs_credential,
)
from trading_client.errors import Unauthenticated, from_rpc_error
from trading_client.methods import MethodInfo, method_info
from trading_client.retry import CallRetry, RetryPolicy, deadline_after

__all__ = ["AsyncTradingClient"]

Continuation = Callable[[grpc.aio.ClientCallDetails, Any], Any]


class _Auth:
    """The credential an asyncio client adds to each call."""

    def __init__(self, api_key: ApiKey | None, tokens: AsyncTokenSource | None) -> None:
        self.api_key = api_key
        self.tokens = tokens

    @property
    def renewable(self) -> bool:
        return self.tokens is not None

    async def metadata(self, info: MethodInfo, call_metadata: _channel.Metadata) -> _channel.Metadata:
        if not needs_credential(info, call_metadata):
            return ()
        if self.api_key is not None:
            return ((API_KEY_KEY, self.api_key.key),)
        if self.tokens is not None:
            return bearer(await self.tokens.access_token())
        return ()

    def refused(self, sent: _channel.Metadata) -> None:
        """The server answered UNAUTHENTICATED to ``sent``: renew that token."""
        token = bearer_token(sent)
        if self.tokens is not None and token is not None:
            self.tokens.invalidate(token)


class _Calls:
    """What the channel's interceptors do to each call: credential, default
    timeout, idempotency key, retries, typed errors."""

    def __init__(
        self,
        auth: _Auth,
        policy: RetryPolicy,
        timeout: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.auth = auth
        self.policy = policy
        self.timeout = timeout
        self.clock = clock

    def plan(self, details: grpc.aio.ClientCallDetails) -> tuple[MethodInfo, _channel.Metadata, CallRetry]:
        info = method_info(details.method)
        metadata = _channel.with_idempotency_key(info, _channel.as_tuple(details.metadata))
        timeout = _channel.default_timeout(info, details.timeout, self.timeout)
        retry = CallRetry(
            self.policy,
            deadline=deadline_after(timeout, self.clock),
            clock=self.clock,
            # Only a token of ours can be renewed (not the caller's own, not on public RPCs).
            renewable_auth=self.auth.renewable and needs_credential(info, metadata),
            repeatable=_channel.repeatable(info, metadata),
        )
        return info, metadata, retry

    async def start(
        self,
        continuation: Continuation,
        details: grpc.aio.ClientCallDetails,
        info: MethodInfo,
        metadata: _channel.Metadata,
        retry: CallRetry,
        request: Any,
    ) -> tuple[Any, _channel.Metadata]:
        """Start one attempt; returns the call and the credential it carries."""
        credential = await self.auth.metadata(info, metadata)
        attempt = grpc.aio.ClientCallDetails(
            details.method,
            _channel.attempt_timeout(retry.remaining()),
            grpc.aio.Metadata(*metadata, *credential),
            details.credentials,
            details.wait_for_ready,
        )
        return await continuation(attempt, request), credential

    def failed(self, err: grpc.aio.AioRpcError, credential: _channel.Metadata) -> Exception:
        error = from_rpc_error(err)
        if isinstance(error, Unauthenticated):
            self.auth.refused(credential)
        return error

    async def unary_unary(
        self, continuation: Continuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        info, metadata, retry = self.plan(details)
        async for attempt in AsyncRetrying(**retry.tenacity_args(asyncio.sleep)):
            with attempt:
                call, credential = await self.start(continuation, details, info, metadata, retry, request)
                try:
                    await call
                except grpc.aio.AioRpcError as err:
                    raise self.failed(err, credential) from err
                # The finished call, so the caller can still read its metadata.
                return call
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def unary_stream(
        self, continuation: Continuation, details: grpc.aio.ClientCallDetails, request: Any
    ) -> _Stream:
        info, metadata, retry = self.plan(details)
        call, credential = await self.start(continuation, details, info, metadata, retry, request)
        return _Stream(self, continuation, details, info, metadata, retry, request, call, credential)


class _Stream(grpc.aio.UnaryStreamCall[Any, Any]):
    """A server stream whose errors are typed, reopened (UNAVAILABLE, ...)
    while nothing has been received yet. Everything else is the current call's."""

    def __init__(
        self,
        calls: _Calls,
        continuation: Continuation,
        details: grpc.aio.ClientCallDetails,
        info: MethodInfo,
        metadata: _channel.Metadata,
        retry: CallRetry,
        request: Any,
        call: Any,
        credential: _channel.Metadata,
    ) -> None:
        self._calls = calls
        self._reopen = (continuation, details, info, metadata, retry, request)
        self._retry = retry
        self._call = call
        self._credential = credential
        self._messages: AsyncIterator[Any] | None = None

    async def _read(self) -> Any:
        try:
            return await self._call.read()
        except grpc.aio.AioRpcError as err:
            raise self._calls.failed(err, self._credential) from err

    async def _iterate(self) -> AsyncIterator[Any]:
        first: Any = None
        async for attempt in AsyncRetrying(**self._retry.tenacity_args(asyncio.sleep)):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self._call, self._credential = await self._calls.start(*self._reopen)
                first = await self._read()
        try:
            message = first
            while message is not grpc.aio.EOF:
                yield message
                message = await self._read()
        finally:
            if not self._call.done():
                self._call.cancel()

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._messages is None:
            self._messages = self._iterate()
        return self._messages

    async def read(self) -> Any:
        try:
            return await self.__aiter__().__anext__()
        except StopAsyncIteration:
            return grpc.aio.EOF

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())

    def done(self) -> bool:
        return bool(self._call.done())

    def add_done_callback(self, callback: Any) -> None:
        self._call.add_done_callback(callback)

    def time_remaining(self) -> float | None:
        remaining: float | None = self._call.time_remaining()
        return remaining

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._call.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = await self._call.code()
        return code

    async def details(self) -> str:
        details: str = await self._call.details()
        return details

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()


# grpc.aio files a channel interceptor under one arity only (the first base
# class it matches), hence one object per arity.
class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._calls.unary_unary(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._calls.unary_stream(continuation, client_call_details, request)


class AsyncTradingClient:
    """A client of the platform's public gRPC edge for asyncio programs.

    ``target`` is "host:port"; the edge's TLS certificate is verified against
    ``root_certificates`` (PEM bytes) or ``ca_file``, else the system's roots.
    Credential: ``api_key=`` or ``login=(tenant_slug, email, password)``
    (neither: anonymous, for the public RPCs such as Login). Each property is
    the generated stub of one service on the client's channel::

        async with AsyncTradingClient(target, ca_file=ca, login=("demo", email, password)) as client:
            quote = await client.marketdata.GetQuote(GetQuoteRequest(symbol="BTC-USD"))

    Every call gets the credential, ``timeout`` seconds unless it passes its
    own (streams: none), an idempotency key when it is mutating, retries per
    ``retry``, and raises :class:`trading_client.errors.TradingError`
    subclasses instead of ``grpc.RpcError``. ``refresh_before``: seconds
    before its expiry an access token is renewed; ``clock``: the wall clock
    token expiry is read against (tests move it by hand)."""

    def __init__(
        self,
        target: str,
        *,
        root_certificates: bytes | None = None,
        ca_file: str | Path | None = None,
        api_key: str | None = None,
        login: tuple[str, str, str] | None = None,
        timeout: float | None = _channel.DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        refresh_before: float = 60.0,
        server_name: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        credential = credential_from(api_key, login)
        self._calls = _Calls(
            _Auth(credential if isinstance(credential, ApiKey) else None, None),
            retry or RetryPolicy(),
            timeout,
        )
        self._channel = grpc.aio.secure_channel(
            target,
            _channel.channel_credentials(root_certificates, ca_file),
            options=_channel.channel_options(server_name, options),
            interceptors=[_UnaryUnary(self._calls), _UnaryStream(self._calls)],
        )
        self._identity = identity_service_pb2_grpc.IdentityServiceStub(self._channel)
        if isinstance(credential, PasswordLogin):
            self._calls.auth.tokens = AsyncTokenSource(
                credential,
                self._login,
                self._refresh,
                refresh_before=refresh_before,
                clock=clock,
            )
        self._marketdata = marketdata_service_pb2_grpc.MarketDataServiceStub(self._channel)
        self._execution = execution_service_pb2_grpc.ExecutionServiceStub(self._channel)
        self._portfolio = portfolio_service_pb2_grpc.PortfolioServiceStub(self._channel)
        self._risk = risk_service_pb2_grpc.RiskServiceStub(self._channel)
        self._decision = decision_service_pb2_grpc.DecisionServiceStub(self._channel)
        self._analytics = analytics_service_pb2_grpc.AnalyticsServiceStub(self._channel)
        self._audit = audit_service_pb2_grpc.AuditServiceStub(self._channel)
        self._notification = notification_service_pb2_grpc.NotificationServiceStub(self._channel)
        self._features = features_service_pb2_grpc.FeaturesServiceStub(self._channel)

    async def _login(self, request: identity_service_pb2.LoginRequest) -> identity_service_pb2.LoginResponse:
        return await self._identity.Login(request)

    async def _refresh(
        self, request: identity_service_pb2.RefreshTokenRequest
    ) -> identity_service_pb2.RefreshTokenResponse:
        return await self._identity.RefreshToken(request)

    async def authenticate(self) -> None:
        """Log in now (a login credential; otherwise nothing): bad credentials
        fail here instead of on the first call."""
        if self._calls.auth.tokens is not None:
            await self._calls.auth.tokens.access_token()

    @property
    def tokens(self) -> AsyncTokenSource | None:
        """The login's token source (None with an API key or anonymous)."""
        return self._calls.auth.tokens

    @property
    def channel(self) -> grpc.aio.Channel:
        """The intercepted channel, for stubs of your own (same credential, retries, errors)."""
        return self._channel

    @property
    def identity(self) -> identity_service_pb2_grpc.IdentityServiceAsyncStub:
        return self._identity

    @property
    def marketdata(self) -> marketdata_service_pb2_grpc.MarketDataServiceAsyncStub:
        return self._marketdata

    @property
    def execution(self) -> execution_service_pb2_grpc.ExecutionServiceAsyncStub:
        return self._execution

    @property
    def portfolio(self) -> portfolio_service_pb2_grpc.PortfolioServiceAsyncStub:
        return self._portfolio

    @property
    def risk(self) -> risk_service_pb2_grpc.RiskServiceAsyncStub:
        return self._risk

    @property
    def decision(self) -> decision_service_pb2_grpc.DecisionServiceAsyncStub:
        return self._decision

    @property
    def analytics(self) -> analytics_service_pb2_grpc.AnalyticsServiceAsyncStub:
        return self._analytics

    @property
    def audit(self) -> audit_service_pb2_grpc.AuditServiceAsyncStub:
        return self._audit

    @property
    def notification(self) -> notification_service_pb2_grpc.NotificationServiceAsyncStub:
        return self._notification

    @property
    def features(self) -> features_service_pb2_grpc.FeaturesServiceAsyncStub:
        return self._features

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
