"""The synchronous client (grpc): ``TradingClient``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from tenacity import Retrying
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
    PasswordLogin,
    TokenSource,
    bearer,
    bearer_token,
    credential_from,
    needs_credential,
)
from trading_client.errors import Unauthenticated, from_rpc_error
from trading_client.methods import MethodInfo, method_info
from trading_client.retry import CallRetry, RetryPolicy, deadline_after

__all__ = ["TradingClient"]

Continuation = Callable[[grpc.ClientCallDetails, Any], Any]


@dataclass(frozen=True)
class _Details(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _Auth:
    """The credential a synchronous client adds to each call."""

    def __init__(self, api_key: ApiKey | None, tokens: TokenSource | None) -> None:
        self.api_key = api_key
        self.tokens = tokens

    @property
    def renewable(self) -> bool:
        return self.tokens is not None

    def metadata(self, info: MethodInfo, call_metadata: _channel.Metadata) -> _channel.Metadata:
        if not needs_credential(info, call_metadata):
            return ()
        if self.api_key is not None:
            return ((API_KEY_KEY, self.api_key.key),)
        if self.tokens is not None:
            return bearer(self.tokens.access_token())
        return ()

    def refused(self, sent: _channel.Metadata) -> None:
        token = bearer_token(sent)
        if self.tokens is not None and token is not None:
            self.tokens.invalidate(token)


class _Calls(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """The channel's interceptor (sync grpc files one object under every arity
    it implements): credential, default timeout, idempotency key, retries,
    typed errors."""

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

    def plan(self, details: grpc.ClientCallDetails) -> tuple[MethodInfo, _channel.Metadata, CallRetry]:
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

    def start(
        self,
        continuation: Continuation,
        details: grpc.ClientCallDetails,
        info: MethodInfo,
        metadata: _channel.Metadata,
        retry: CallRetry,
        request: Any,
    ) -> tuple[Any, _channel.Metadata]:
        credential = self.auth.metadata(info, metadata)
        attempt = _Details(
            details.method,
            _channel.attempt_timeout(retry.remaining()),
            (*metadata, *credential),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
        return continuation(attempt, request), credential

    def failed(self, err: grpc.RpcError, credential: _channel.Metadata) -> Exception:
        error = from_rpc_error(err)
        if isinstance(error, Unauthenticated):
            self.auth.refused(credential)
        return error

    def intercept_unary_unary(
        self, continuation: Continuation, client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        info, metadata, retry = self.plan(client_call_details)
        for attempt in Retrying(**retry.tenacity_args(time.sleep)):
            with attempt:
                outcome, credential = self.start(
                    continuation, client_call_details, info, metadata, retry, request
                )
                try:
                    outcome.result()
                except grpc.RpcError as err:
                    raise self.failed(err, credential) from err
                return outcome
        raise AssertionError("unreachable: tenacity either returns or raises")

    def intercept_unary_stream(
        self, continuation: Continuation, client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        info, metadata, retry = self.plan(client_call_details)
        reopen = (continuation, client_call_details, info, metadata, retry, request)
        return _Stream(self, reopen, retry, *self.start(*reopen))


class _Stream:
    """A server stream (iterator and grpc.Call) whose errors are typed,
    reopened (UNAVAILABLE, ...) while nothing has been received yet."""

    def __init__(
        self,
        calls: _Calls,
        reopen: tuple[Any, ...],
        retry: CallRetry,
        call: Any,
        credential: _channel.Metadata,
    ) -> None:
        self._calls = calls
        self._reopen = reopen
        self._retry = retry
        self._call = call
        self._credential = credential
        self._messages = self._iterate()

    def _next(self) -> tuple[bool, Any]:
        try:
            return True, next(self._call)
        except StopIteration:
            return False, None
        except grpc.RpcError as err:
            raise self._calls.failed(err, self._credential) from err

    def _iterate(self) -> Iterator[Any]:
        first: tuple[bool, Any] = (False, None)
        for attempt in Retrying(**self._retry.tenacity_args(time.sleep)):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self._call, self._credential = self._calls.start(*self._reopen)
                first = self._next()
        more, message = first
        while more:
            yield message
            more, message = self._next()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._messages)

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def is_active(self) -> bool:
        return bool(self._call.is_active())

    def time_remaining(self) -> float | None:
        remaining: float | None = self._call.time_remaining()
        return remaining

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return bool(self._call.add_callback(callback))

    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = self._call.code()
        return code

    def details(self) -> str:
        details: str = self._call.details()
        return details


class TradingClient:
    """A client of the platform's public gRPC edge for synchronous programs
    (threads). Same arguments and behaviour as
    :class:`trading_client.aio.AsyncTradingClient`::

        with TradingClient(target, ca_file=ca, api_key=key) as client:
            quote = client.marketdata.GetQuote(GetQuoteRequest(symbol="BTC-USD"))
            reply, call = client.execution.PlaceOrder.with_call(request)  # with its metadata
    """

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
        self._raw = grpc.secure_channel(
            target,
            _channel.channel_credentials(root_certificates, ca_file),
            options=_channel.channel_options(server_name, options),
        )
        self._channel = grpc.intercept_channel(self._raw, self._calls)
        self._identity = identity_service_pb2_grpc.IdentityServiceStub(self._channel)
        if isinstance(credential, PasswordLogin):
            self._calls.auth.tokens = TokenSource(
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

    def _login(self, request: identity_service_pb2.LoginRequest) -> identity_service_pb2.LoginResponse:
        return self._identity.Login(request)

    def _refresh(
        self, request: identity_service_pb2.RefreshTokenRequest
    ) -> identity_service_pb2.RefreshTokenResponse:
        return self._identity.RefreshToken(request)

    def authenticate(self) -> None:
        """Log in now (a login credential; otherwise nothing)."""
        if self._calls.auth.tokens is not None:
            self._calls.auth.tokens.access_token()

    @property
    def tokens(self) -> TokenSource | None:
        """The login's token source (None with an API key or anonymous)."""
        return self._calls.auth.tokens

    @property
    def channel(self) -> grpc.Channel:
        """The intercepted channel, for stubs of your own."""
        return self._channel

    @property
    def identity(self) -> identity_service_pb2_grpc.IdentityServiceStub:
        return self._identity

    @property
    def marketdata(self) -> marketdata_service_pb2_grpc.MarketDataServiceStub:
        return self._marketdata

    @property
    def execution(self) -> execution_service_pb2_grpc.ExecutionServiceStub:
        return self._execution

    @property
    def portfolio(self) -> portfolio_service_pb2_grpc.PortfolioServiceStub:
        return self._portfolio

    @property
    def risk(self) -> risk_service_pb2_grpc.RiskServiceStub:
        return self._risk

    @property
    def decision(self) -> decision_service_pb2_grpc.DecisionServiceStub:
        return self._decision

    @property
    def analytics(self) -> analytics_service_pb2_grpc.AnalyticsServiceStub:
        return self._analytics

    @property
    def audit(self) -> audit_service_pb2_grpc.AuditServiceStub:
        return self._audit

    @property
    def notification(self) -> notification_service_pb2_grpc.NotificationServiceStub:
        return self._notification

    @property
    def features(self) -> features_service_pb2_grpc.FeaturesServiceStub:
        return self._features

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
