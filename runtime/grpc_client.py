"""gRPC clients for service-to-service calls: pooled channels, deadlines,
safe retries, circuit breakers, context propagation, traces.

    clients = ClientFactory(settings, principal="execution")
    risk = clients.stub(RiskServiceStub, "risk")
    reply = await risk.CheckOrder(request)                        # default deadline
    reply = await risk.CheckOrder(request, timeout=0.2)           # own deadline
    await execution.PlaceOrder(request, metadata=idempotency_metadata(key))
    await clients.close()

One channel per target, reused by every stub of that target. Each call goes
through these client interceptors (outermost first):

1. :func:`context_token_interceptors`: a context token for the callee, made
   from the current :class:`RequestContext` (runtime.security.tokens), and the
   correlation id into the outgoing metadata (per-call metadata wins), so
   service-to-service calls carry a verifiable context without the servicer
   doing anything. Channels are mutual TLS with this process's certificate.
2. :class:`ResilienceInterceptor`:
   * deadline: ``timeout=`` of the call, else ``client.default_timeout_s``
     (unary calls; streams get none by default), and never more than the
     caller's own remaining budget (deadline propagation). The deadline covers
     all attempts;
   * circuit breaker of the target: while open, calls fail at once with
     :class:`CircuitOpenError` (UNAVAILABLE) without touching the network;
   * retries (unary calls only) ONLY for RPCs whose contract says
     ``idempotent``: exponential backoff with jitter (tenacity), at most
     ``client.max_attempts`` attempts within the deadline, on
     - UNAVAILABLE (the request was not processed or the server is going
       away; safe to repeat for an idempotent RPC),
     - RESOURCE_EXHAUSTED only when the server sent ``RetryInfo`` (it says
       waiting helps; we wait at least that long);
     never on DEADLINE_EXCEEDED (the deadline spans all attempts, so no budget
     is left), nor on an open breaker, nor on any other code.
3. OpenTelemetry's client interceptors: one span per attempt, W3C trace
   context in the metadata.

Idempotency keys: a mutating RPC made safe by a key (the contract does not
mark it idempotent) is retried like an idempotent one when the call carries
the key (``metadata=idempotency_metadata(key)``): the callee answers the
repeat with the first outcome, so a replica that died mid-call costs the
caller nothing. Without a key it is never repeated.

Replicas: every channel balances round_robin over all addresses of its target
(a static list or a DNS name, ``Settings.dial_target``), skipping replicas
whose grpc.health.v1 status is not SERVING (:func:`balancing_options`). A
retry therefore lands on another replica.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias, TypeVar, cast

import grpc
import grpc.aio
from google.rpc.error_details_pb2 import ErrorInfo
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import REGISTRY
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_base, wait_exponential_jitter

from runtime.circuit_breaker import BreakerState, CircuitBreaker
from runtime.config import DEFAULT_GRPC_PORTS, ClientSettings, Settings
from runtime.context import current_context
from runtime.contracts import METADATA, method_policy
from runtime.errors import DEPENDENCY_DOMAIN, CircuitOpenError, error_details, rich_status
from runtime.health import CALLS_HEALTH_SERVICE
from runtime.interceptors import LATENCY_BUCKETS
from runtime.security.credentials import PrincipalCredentials, credentials_for
from runtime.security.tokens import ContextTokens, TokenError

_K_TOKEN = METADATA.context_token
_K_CORRELATION = METADATA.correlation_id
_K_IDEMPOTENCY = METADATA.idempotency_key

__all__ = [
    "CircuitOpenError",
    "ClientFactory",
    "ResilienceInterceptor",
    "RetryPolicy",
    "context_token_interceptors",
    "idempotency_metadata",
]

T = TypeVar("T")
Details: TypeAlias = grpc.aio.ClientCallDetails
Call: TypeAlias = Any  # grpc.aio.UnaryUnaryCall and friends (their stubs are generic)

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

# Outcomes that say "the downstream is unwell" and count toward opening its breaker.
# Client-side errors (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, ...) mean it
# answered; RESOURCE_EXHAUSTED is usually one tenant's quota, not the target's health.
BREAKER_FAILURE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _deliberate(err: grpc.aio.AioRpcError) -> bool:
    """True when the downstream answered on purpose with a domain reason (a
    google.rpc.ErrorInfo, e.g. UNAVAILABLE "no quote yet for this symbol"): it
    is healthy, so its breaker must not open because of one caller's request.
    A reason of :data:`DEPENDENCY_DOMAIN` (its database is down) is not: that
    fails every caller alike, so it counts towards the breaker."""
    status = rich_status(err)
    if status is None:
        return False
    for detail in status.details:
        if detail.Is(ErrorInfo.DESCRIPTOR):
            info = ErrorInfo()
            detail.Unpack(info)
            return bool(info.domain != DEPENDENCY_DOMAIN)
    return False


CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Service-to-service traffic never goes through an http_proxy from the environment.
    ("grpc.enable_http_proxy", 0),
    # Reconnect quickly after a restart of the downstream (defaults back off to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def balancing_options(settings: ClientSettings, *, health_checked: bool = True) -> list[tuple[str, Any]]:
    """Channel options that spread calls over every replica of the target:
    round_robin (gRPC's default, pick_first, would pin one replica), with
    grpc.health.v1 watching per replica when ``health_checked_balancing``. A
    replica that dies is dropped as soon as its connection breaks; one that
    does not take calls (still starting, shutting down) as soon as its health
    watch says so.
    ``health_checked=False`` is for channels that must reach a replica whatever
    it reports: those that ask it for its health."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if settings.health_checked_balancing and health_checked:
        # "Takes calls", not the whole health: a replica whose consumer is
        # stuck still serves its RPCs (runtime.health.CALLS_HEALTH_SERVICE).
        config["healthCheckConfig"] = {"serviceName": CALLS_HEALTH_SERVICE}
    return [
        ("grpc.service_config", json.dumps(config)),
        # A name resolved by DNS (a headless service) is resolved again when a
        # replica goes away, but not more often than this.
        ("grpc.dns_min_time_between_resolutions_ms", 1_000),
    ]


def idempotency_metadata(key: str) -> tuple[tuple[str, str], ...]:
    """Per-call metadata carrying an idempotency key: ``stub.M(req, metadata=idempotency_metadata(k))``."""
    return ((METADATA.idempotency_key, key),)


def _local_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


# ---- metrics ---------------------------------------------------------------------------------


class ClientMetrics:
    """The Prometheus instruments of the gRPC client side."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.handling_seconds = Histogram(
            "grpc_client_handling_seconds",
            "Time of a gRPC call seen by the client, all attempts included, by final code.",
            ("service", "method", "code"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries_total = Counter(
            "grpc_client_retries_total",
            "Retry attempts of idempotent gRPC calls.",
            ("service", "method"),
            registry=registry,
        )
        self.breaker_open = Gauge(
            "grpc_client_circuit_breaker_open",
            "1 while the circuit breaker of a downstream target is open or half-open.",
            ("target",),
            registry=registry,
        )


_default_metrics: ClientMetrics | None = None


def default_client_metrics() -> ClientMetrics:
    """Process-wide client instruments on the default registry (created once)."""
    global _default_metrics
    if _default_metrics is None:
        _default_metrics = ClientMetrics()
    return _default_metrics


# ---- retry policy ----------------------------------------------------------------------------


class _wait_backoff_or_retry_info(wait_base):
    """Exponential backoff with jitter, but at least the server's RetryInfo delay."""

    def __init__(self, backoff: wait_base) -> None:
        self._backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self._backoff(retry_state)
        outcome = retry_state.outcome
        err = outcome.exception() if outcome is not None else None
        if isinstance(err, grpc.aio.AioRpcError) and err.code() is _RESOURCE_EXHAUSTED:
            hint = error_details(err).retry_delay_s
            if hint is not None:
                delay = max(delay, hint)
        return delay


class RetryPolicy:
    """Which failed calls may be repeated, and how (see the module docstring)."""

    def __init__(self, settings: ClientSettings) -> None:
        self.max_attempts = max(1, settings.max_attempts)
        self._wait = _wait_backoff_or_retry_info(
            wait_exponential_jitter(
                multiplier=settings.backoff_initial_s,
                max=settings.backoff_max_s,
                jitter=settings.backoff_initial_s,
            )
        )

    @staticmethod
    def is_retryable(idempotent: bool, err: BaseException) -> bool:
        """May a call that failed with ``err`` be sent again? ``idempotent``:
        the contract says so, or the call carries an idempotency key (the
        callee answers a repeat with the first outcome)."""
        if not idempotent or not isinstance(err, grpc.aio.AioRpcError) or isinstance(err, CircuitOpenError):
            return False
        code = err.code()
        if code is _UNAVAILABLE:
            return True
        if code is _RESOURCE_EXHAUSTED:
            return error_details(err).retry_delay_s is not None
        return False

    def retrying(self, idempotent: bool, budget_s: float) -> AsyncRetrying:
        """The tenacity controller for one call with ``budget_s`` seconds left."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(budget_s),
            wait=self._wait,
            retry=retry_if_exception(lambda e: self.is_retryable(idempotent, e)),
            sleep=asyncio.sleep,
            reraise=True,
        )


# ---- interceptors ----------------------------------------------------------------------------


def _with_context_token(details: Details, tokens: ContextTokens, audience: str) -> Details:
    ctx = current_context()
    metadata = details.metadata if details.metadata is not None else grpc.aio.Metadata()
    # Per-call metadata wins; the Metadata object is fresh for every call, so
    # adding to it in place is safe.
    if metadata.get(_K_TOKEN) is None:
        try:
            metadata.add(_K_TOKEN, tokens.mint(audience, ctx))
        except TokenError as exc:
            raise _local_error(grpc.StatusCode.UNAUTHENTICATED, f"cannot call {audience}: {exc}") from None
    if ctx.correlation_id and metadata.get(_K_CORRELATION) is None:
        metadata.add(_K_CORRELATION, ctx.correlation_id)
    if details.metadata is metadata:
        return details
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def _keyed(details: Details) -> bool:
    """Does the call carry an idempotency key (so repeating it is safe)?"""
    metadata = details.metadata
    return metadata is not None and bool(metadata.get(_K_IDEMPOTENCY))


Intercept: TypeAlias = Callable[[Any, Details, Any], Awaitable[Any]]


# grpc.aio files each channel interceptor under ONE arity (the first base class
# it matches), so one object per arity, each delegating to a shared function.
class _Delegating:
    """Holds the function an arity's interceptor method delegates to."""

    def __init__(self, fn: Intercept) -> None:
        self._fn = fn


class _UnaryUnary(_Delegating, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Details, request: Any
    ) -> Any:
        return await self._fn(continuation, client_call_details, request)


class _UnaryStream(_Delegating, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Details, request: Any
    ) -> Any:
        return await self._fn(continuation, client_call_details, request)


class _StreamUnary(_Delegating, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Details, request_iterator: Any
    ) -> Any:
        return await self._fn(continuation, client_call_details, request_iterator)


class _StreamStream(_Delegating, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Details, request_iterator: Any
    ) -> Any:
        return await self._fn(continuation, client_call_details, request_iterator)


def per_arity(unary: Intercept, stream: Intercept) -> list[grpc.aio.ClientInterceptor]:
    """Channel interceptors running ``unary`` for unary-unary calls and ``stream``
    for the three streaming arities."""
    return [_UnaryUnary(unary), _UnaryStream(stream), _StreamUnary(stream), _StreamStream(stream)]


def context_token_interceptors(tokens: ContextTokens, audience: str) -> list[grpc.aio.ClientInterceptor]:
    """Every call to ``audience`` carries a context token for it, minted from the
    current :class:`RequestContext` (runtime.security.tokens), plus the
    correlation id. The idempotency key is NOT propagated: a downstream call
    is a different operation."""

    async def add(continuation: Any, details: Details, request: Any) -> Any:
        return await continuation(_with_context_token(details, tokens, audience), request)

    return per_arity(add, add)


HEALTH_SERVICE = "grpc.health.v1.Health"


class _MethodInfo:
    __slots__ = ("_children", "_metrics", "idempotent", "name", "probe", "retries", "service")

    def __init__(self, method: str, metrics: ClientMetrics) -> None:
        self.idempotent = method_policy(method).idempotent
        self.service, _, self.name = method.lstrip("/").rpartition("/")
        # A health probe asks whether the target is up: its "no" is the answer,
        # not a failed call, and it must get through an open breaker (it is how
        # the caller learns the target is back). So probes skip the breaker.
        self.probe = self.service == HEALTH_SERVICE
        self._metrics = metrics
        self._children: dict[grpc.StatusCode, Any] = {}
        self.retries = metrics.retries_total.labels(self.service, self.name)

    def observe(self, code: grpc.StatusCode, elapsed: float) -> None:
        child = self._children.get(code)
        if child is None:
            child = self._children[code] = self._metrics.handling_seconds.labels(
                self.service, self.name, code.name
            )
        child.observe(elapsed)


class ResilienceInterceptor:
    """Deadline, circuit breaker and retries for the calls to one target;
    :meth:`interceptors` gives the channel interceptors that apply them."""

    def __init__(
        self,
        target: str,
        settings: ClientSettings,
        breaker: CircuitBreaker,
        metrics: ClientMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.breaker = breaker
        self.policy = RetryPolicy(settings)
        self._default_timeout = settings.default_timeout_s
        self._metrics = metrics or default_client_metrics()
        self._clock = clock
        self._methods: dict[str | bytes, _MethodInfo] = {}

    def _info(self, method: str | bytes) -> _MethodInfo:
        info = self._methods.get(method)
        if info is None:
            name = method.decode() if isinstance(method, bytes) else method
            info = self._methods[method] = _MethodInfo(name, self._metrics)
        return info

    def _deadline(self, timeout: float | None, default: float | None) -> float | None:
        """Absolute deadline: the call's own timeout (or the default), capped by the caller's budget."""
        if timeout is None:
            timeout = default
        remaining = current_context().time_remaining()
        if remaining is not None and (timeout is None or remaining < timeout):
            timeout = remaining
        return None if timeout is None else self._clock() + timeout

    def _admit(self) -> None:
        if not self.breaker.allow():
            raise CircuitOpenError(self.target, self.breaker.retry_after())

    def _record(self, err: grpc.aio.AioRpcError) -> None:
        code = err.code()
        if code in BREAKER_FAILURE_CODES and not _deliberate(err):
            self.breaker.record_failure()
        elif code is grpc.StatusCode.CANCELLED:
            self.breaker.record_neutral()
        else:
            self.breaker.record_success()

    def _attempt_details(self, details: Details, deadline: float | None) -> Details:
        timeout = None
        if deadline is not None:
            timeout = deadline - self._clock()
            if timeout <= 0:
                raise _local_error(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the call was sent"
                )
        return grpc.aio.ClientCallDetails(
            details.method, timeout, details.metadata, details.credentials, details.wait_for_ready
        )

    async def _once(self, continuation: Any, details: Details, deadline: float | None, request: Any) -> Call:
        attempt = self._attempt_details(details, deadline)
        self._admit()
        call = await continuation(attempt, request)
        try:
            await call
        except grpc.aio.AioRpcError as err:
            self._record(err)
            raise
        except asyncio.CancelledError:
            self.breaker.record_neutral()
            raise
        self.breaker.record_success()
        return call

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """The channel interceptors applying this to every arity."""
        return per_arity(self.unary_unary, self.stream)

    async def unary_unary(self, continuation: Any, client_call_details: Details, request: Any) -> Any:
        info = self._info(client_call_details.method)
        start = self._clock()
        deadline = self._deadline(client_call_details.timeout, self._default_timeout)
        code = grpc.StatusCode.OK
        try:
            if info.probe:
                call = await continuation(self._attempt_details(client_call_details, deadline), request)
                await call
                return call
            try:
                return await self._once(continuation, client_call_details, deadline, request)
            except grpc.aio.AioRpcError as first:
                # With replicas, a repeat goes to the next one (round_robin).
                idempotent = info.idempotent or _keyed(client_call_details)
                if not self.policy.is_retryable(idempotent, first):
                    raise
                return await self._retry(
                    continuation, client_call_details, deadline, request, info, first, idempotent
                )
        except grpc.aio.AioRpcError as err:
            code = err.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            info.observe(code, self._clock() - start)

    async def _retry(
        self,
        continuation: Any,
        details: Details,
        deadline: float | None,
        request: Any,
        info: _MethodInfo,
        first: grpc.aio.AioRpcError,
        idempotent: bool,
    ) -> Call:
        # The first attempt already failed: tenacity's attempt 1 re-raises it
        # (no network), so its stop/wait logic counts it and backs off before
        # the real second attempt. The happy path never builds a controller.
        pending: list[grpc.aio.AioRpcError] = [first]

        async def attempt() -> Call:
            if pending:
                raise pending.pop()
            info.retries.inc()
            return await self._once(continuation, details, deadline, request)

        budget = float("inf") if deadline is None else max(0.0, deadline - self._clock())
        return await self.policy.retrying(idempotent, budget)(attempt)

    async def stream(self, continuation: Any, details: Details, request: Any) -> Call:
        # Streams: no default deadline (they are long-lived), no retries (a
        # replay could duplicate messages); breaker admission, and the outcome
        # of connecting is recorded once the request is on its way.
        attempt = self._attempt_details(details, self._deadline(details.timeout, None))
        if self._info(details.method).probe:  # a health Watch: see _MethodInfo.probe
            return await continuation(attempt, request)
        self._admit()
        call = await continuation(attempt, request)
        try:
            await call.wait_for_connection()
        except grpc.aio.AioRpcError as err:
            self._record(err)
            raise
        self.breaker.record_success()
        return call


# ---- the factory -----------------------------------------------------------------------------


class _Multicallable:
    """A stub method bound to the current channel of a :class:`RotatingChannel`."""

    __slots__ = ("_args", "_bound", "_callable", "_kind", "_kwargs", "_owner")

    def __init__(
        self, owner: RotatingChannel, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._owner, self._kind, self._args, self._kwargs = owner, kind, args, kwargs
        self._bound: grpc.aio.Channel | None = None
        self._callable: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if channel is not self._bound:
            self._callable = getattr(channel, self._kind)(*self._args, **self._kwargs)
            self._bound = channel
        return self._callable(*args, **kwargs)


class RotatingChannel:
    """A channel handle that outlives certificate rotations.

    gRPC channel credentials are fixed when a channel is made, and generated
    stubs bind their methods to a channel once. After this process's
    certificate files are rotated (runtime.security.tls), the next call opens
    a new channel with the new certificate; stubs made before keep working
    (their methods re-bind), and the old channel is closed after a grace
    period for the calls still on it.
    """

    RETIRE_AFTER_S = 30.0

    def __init__(self, open_channel: Callable[[], grpc.aio.Channel], generation: Callable[[], int]) -> None:
        self._open = open_channel
        self._generation = generation
        self._gen = generation()
        self._channel = open_channel()
        self._retiring: set[asyncio.Task[None]] = set()

    def current(self) -> grpc.aio.Channel:
        gen = self._generation()
        if gen != self._gen:
            old, self._channel, self._gen = self._channel, self._open(), gen
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return self._channel

    async def _retire(self, channel: grpc.aio.Channel) -> None:
        await asyncio.sleep(self.RETIRE_AFTER_S)
        await channel.close()

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Multicallable(self, "unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Multicallable(self, "unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Multicallable(self, "stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Multicallable(self, "stream_stream", args, kwargs)

    def __getattr__(self, name: str) -> Any:  # get_state, channel_ready, wait_for_state_change, ...
        return getattr(self.current(), name)

    async def close(self, grace: float | None = None) -> None:
        for task in list(self._retiring):
            task.cancel()
        await self._channel.close(grace)

    async def __aenter__(self) -> RotatingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ClientFactory:
    """Pools one ``grpc.aio`` channel per target and makes stubs on them.

    ``service`` arguments are service names (``"risk"``, resolved with
    ``settings.address_of``) or literal ``"host:port"`` targets.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tracer_provider: TracerProvider | None = None,
        tracing: bool = True,
        metrics: ClientMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        channel_options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
        principal: str,
        credentials: PrincipalCredentials | None = None,
    ) -> None:
        """``principal``: who this process is (its certificate and the issuer of
        its context tokens); ``credentials`` default to that principal's own."""
        self._settings = settings
        self.credentials = credentials or credentials_for(settings, principal)
        self._tracer_provider = tracer_provider
        self._tracing = tracing
        self._metrics = metrics or default_client_metrics()
        self._clock = clock
        self._options = [*channel_options, *balancing_options(settings.client)]
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._resilience: dict[str, ResilienceInterceptor] = {}

    def target_of(self, service: str) -> str:
        if service not in DEFAULT_GRPC_PORTS:
            # The service name is the audience of the context token and the name
            # its certificate must carry: a bare address says neither.
            raise ValueError(
                f"unknown service {service!r}: dial services by name (settings.service_addresses)"
            )
        return self._settings.dial_target(service)

    def channel(self, service: str) -> grpc.aio.Channel:
        """The shared channel to ``service`` (created on first use)."""
        target = self.target_of(service)
        channel = self._channels.get(target)
        if channel is None:
            cfg = self._settings.client
            gauge = self._metrics.breaker_open.labels(target)

            def on_change(_name: str, _old: BreakerState, new: BreakerState) -> None:
                gauge.set(0 if new is BreakerState.CLOSED else 1)

            breaker = CircuitBreaker(
                target,
                failure_threshold=cfg.breaker_failure_threshold,
                reset_timeout_s=cfg.breaker_reset_timeout_s,
                open_initial_s=cfg.breaker_open_initial_s,
                clock=self._clock,
                on_state_change=on_change,
            )
            resilience = ResilienceInterceptor(target, cfg, breaker, self._metrics, self._clock)
            interceptors = [
                *context_token_interceptors(self.credentials.tokens, service),
                *resilience.interceptors(),
            ]
            if self._tracing:
                interceptors.extend(
                    aio_client_interceptors(tracer_provider=self._tracer_provider)  # type: ignore[no-untyped-call]
                )
            creds = self.credentials
            rotating = RotatingChannel(
                lambda: creds.channel(target, service, self._options, interceptors),
                creds.tls.check_generation,
            )
            channel = cast(grpc.aio.Channel, rotating)
            self._channels[target] = channel
            self._resilience[target] = resilience
        return channel

    def stub(self, stub_class: Callable[[grpc.aio.Channel], T], service: str) -> T:
        """A generated stub on the pooled channel, e.g. ``stub(RiskServiceStub, "risk")``."""
        return stub_class(self.channel(service))

    def breaker(self, service: str) -> CircuitBreaker:
        """The circuit breaker of a target (creating its channel if needed)."""
        self.channel(service)
        return self._resilience[self.target_of(service)].breaker

    async def close(self, grace: float | None = None) -> None:
        """Close every channel (in-flight calls get ``grace`` seconds)."""
        channels = list(self._channels.values())
        self._channels.clear()
        self._resilience.clear()
        await asyncio.gather(*(ch.close(grace) for ch in channels), return_exceptions=True)
