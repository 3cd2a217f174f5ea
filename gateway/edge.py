"""The public gRPC edge: the REST routes' RPCs, served over gRPC with TLS.

Client teams' SDKs (clients/python, clients/typescript-sdk) call the same
public RPCs as REST, with the same messages, on ``gateway.grpc_port``. One
generic, contract-driven proxy serves them all: the handlers are built from
the route table (every RPC with a ``google.api.http`` binding), so a new
public RPC needs no code here. Each call goes through what a REST call goes
through, in the same order and with the same pieces of the :class:`Dispatcher`:

    credential (``authorization: Bearer <JWT>`` or ``x-api-key``) -> rate limit
    -> method policy -> deadline (the client's, capped) -> idempotency
    (``idempotency-key``, replayed from the same Redis store) -> the internal
    call over mutual TLS with a context token -> the reply's bytes, unparsed.

Errors keep gRPC's own shape: a service's ``google.rpc.Status`` (ErrorInfo,
BadRequest, RetryInfo) is passed on as ``grpc-status-details-bin``; the
gateway's own refusals (401, 429, ...) are built from the same
:class:`Problem` REST answers with, so both doors say the same thing.
Transport failures inside get the generic texts REST gives (no internal
addresses leak).

Not served: the Connect protocol and gRPC-Web. Browsers use REST (with its
OpenAPI types); node clients use connect-node's gRPC transport.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from prometheus_client import Histogram

from gateway.auth import authorize
from gateway.dispatch import Dispatcher
from gateway.handling import CORRELATION_HEADER, idempotency_key
from gateway.problems import Problem, bad_request, from_rpc_error, violation
from gateway.ratelimit import LOGIN_RPC, LoginThrottle
from gateway.routes import Route
from runtime.config import Settings
from runtime.context import RequestContext, reset_context, set_context
from runtime.contracts import METADATA
from runtime.errors import rich_status
from runtime.security.pki import CertPaths
from runtime.security.tls import TlsIdentity

log = logging.getLogger(__name__)
access_log = logging.getLogger("gateway.access")

STATUS_DETAILS_KEY = "grpc-status-details-bin"
REPLAYED_METADATA = "idempotent-replayed"

EDGE_CALLS = Histogram(
    "trading_gateway_edge_call_seconds",
    "Public gRPC edge calls by method and status code (time to the reply, or to the end of a stream)",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def edge_target(settings: Settings) -> str:
    """host:port of the public gRPC edge."""
    return f"{settings.gateway.host}:{settings.gateway.grpc_port}"


def edge_ca_file(settings: Settings) -> Path:
    """The CA a client verifies the edge's certificate with, in development
    (the platform's local CA); production edges carry a public certificate."""
    return settings.security.ca_file or settings.security.pki_path(settings.var_dir) / "ca.crt"


def edge_identity(settings: Settings) -> TlsIdentity:
    """The edge's certificate: ``gateway.edge_cert_file``/``edge_key_file``
    when set (reloaded when they change), else the gateway's service certificate."""
    gw = settings.gateway
    if gw.edge_cert_file is None or gw.edge_key_file is None:
        return TlsIdentity.for_principal(settings, "gateway")
    sec = settings.security
    paths = CertPaths(gw.edge_cert_file, gw.edge_key_file, edge_ca_file(settings))
    return TlsIdentity("gateway", paths, sec.trust_domain, sec.cert_reload_s)


def problem_status(problem: Problem) -> status_pb2.Status:
    """A gateway refusal as the google.rpc.Status a gRPC client reads."""
    st = status_pb2.Status(code=problem.code.value[0], message=problem.detail)
    if problem.reason:
        st.details.add().Pack(error_details_pb2.ErrorInfo(reason=problem.reason, domain=problem.domain))
    if problem.field_violations:
        bad = error_details_pb2.BadRequest()
        for v in problem.field_violations:
            bad.field_violations.add(
                field=v["field"], description=v["description"], reason=v.get("reason", "")
            )
        st.details.add().Pack(bad)
    if problem.retry_after_s is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromNanoseconds(int(problem.retry_after_s * 1e9))
        st.details.add().Pack(info)
    return st


def _failure(err: grpc.aio.AioRpcError, route: Route) -> status_pb2.Status:
    """What a failed internal call becomes at the edge: the service's own rich
    status as it is; anything else (a transport failure) as REST words it."""
    st = rich_status(err)
    if st is not None:
        return st
    return problem_status(from_rpc_error(err, route.request_class.DESCRIPTOR))


class _Refused(Exception):
    """Ends a call with a status (raised inside, turned into an abort once)."""

    def __init__(self, st: status_pb2.Status) -> None:
        super().__init__(st.message)
        self.status = st


class Edge:
    """The generic handlers of the public RPCs, on the dispatcher's pieces."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        # One route per RPC: additional HTTP bindings of an RPC are the same RPC here.
        self.routes: dict[str, Route] = {}
        for route in dispatcher.table.routes:
            self.routes.setdefault(route.grpc_path, route)
        self._callables: dict[str, Any] = {}

    # -- registration ----------------------------------------------------------------------

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
        for path, route in self.routes.items():
            service, method = path.lstrip("/").split("/")
            deserialize = route.request_class.FromString
            handler: grpc.RpcMethodHandler[Any, Any]
            if route.streaming:
                handler = grpc.unary_stream_rpc_method_handler(self._stream_handler(route), deserialize)
            else:
                handler = grpc.unary_unary_rpc_method_handler(self._unary_handler(route), deserialize)
            by_service.setdefault(service, {})[method] = handler
        return [grpc.method_handlers_generic_handler(s, m) for s, m in sorted(by_service.items())]

    def _internal(self, route: Route) -> Any:
        """The internal multi-callable; replies stay bytes (the edge never parses them)."""
        found = self._callables.get(route.grpc_path)
        if found is None:
            channel = self._dispatcher.clients.channel(route.target)
            make = channel.unary_stream if route.streaming else channel.unary_unary
            found = make(route.grpc_path, request_serializer=route.request_class.SerializeToString)
            self._callables[route.grpc_path] = found
        return found

    # -- one call ----------------------------------------------------------------------------

    async def _prepare(
        self, route: Route, request: message.Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[RequestContext, float | None]:
        """Credential, rate limit, policy, deadline and key; raises :class:`Problem`."""
        d = self._dispatcher
        metadata: Mapping[str, str] = {
            k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)
        }
        principal = None if route.policy.public else await d.authenticator.authenticate(metadata)
        await d.rate_limit(principal, _peer_host(context.peer()))
        authorize(route.policy, principal)
        remaining = context.time_remaining()
        if remaining is None or remaining > 1e9:  # no deadline from the client
            timeout = None if route.streaming else d.options.default_timeout_s
        else:
            timeout = min(remaining, d.options.max_timeout_s)
        key = idempotency_key(metadata)
        if key and route.policy.public:
            raise bad_request(
                "idempotency-key is not accepted on calls without authentication",
                [violation("idempotency-key", "this call has no caller to scope the key to", "unsupported")],
            )
        cid = metadata.get(CORRELATION_HEADER) or str(uuid.uuid4())
        ctx = RequestContext(
            tenant_id=principal.tenant_id if principal else "",
            subject=principal.subject if principal else "",
            correlation_id=cid,
            idempotency_key=key if route.mutating else "",
            scopes=principal.scopes if principal else frozenset(),
            roles=principal.roles if principal else frozenset(),
        ).with_deadline_in(timeout)
        return ctx, timeout

    def _unary_handler(
        self, route: Route
    ) -> Callable[[message.Message, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]:
        async def handle(request: message.Message, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            started = time.perf_counter()
            ctx: RequestContext | None = None
            try:
                ctx, timeout = await self._prepare(route, request, context)
                reply = await self._unary(route, request, ctx, timeout, context)
            except Problem as problem:
                refused = problem_status(problem)
            except _Refused as failed:
                refused = failed.status
            else:
                self._record(route, grpc.StatusCode.OK, started, ctx)
                return reply
            self._record(route, _code(refused), started, ctx)
            await _abort(context, refused)
            raise AssertionError("unreachable")  # pragma: no cover - abort raises

        return handle

    async def _unary(
        self,
        route: Route,
        request: message.Message,
        ctx: RequestContext,
        timeout: float | None,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> bytes:
        d = self._dispatcher
        metadata = ((METADATA.idempotency_key, ctx.idempotency_key),) if ctx.idempotency_key else ()

        def call() -> Awaitable[bytes]:
            return self._call(route, request, ctx, timeout, metadata)

        if route.grpc_path == LOGIN_RPC and d.login_throttle is not None:
            login: Any = request
            account = LoginThrottle.account_of(login.tenant_slug, login.email)
            attempt = await d.login_throttle.attempt(account, _peer_host(context.peer()))
            reply = await call()  # a failed login raises its status
            await d.login_throttle.succeeded(attempt)
            return reply
        if not ctx.idempotency_key:
            return await call()
        claim = await d.idempotency.claim(
            ctx.tenant_id, ctx.subject, "grpc " + route.grpc_path, ctx.idempotency_key, request
        )
        if isinstance(claim, dict):  # the first call's answer
            await context.send_initial_metadata(((REPLAYED_METADATA, "true"),))
            if "status" in claim:
                raise _Refused(status_pb2.Status.FromString(base64.b64decode(claim["status"])))
            return base64.b64decode(claim["reply"])
        try:
            reply = await call()
        except _Refused as failed:
            if _code(failed.status) in _RETRYABLE:
                await d.idempotency.release(claim)
            else:  # a final refusal is the answer to every retry too
                await d.idempotency.store(claim, {"status": _b64(failed.status.SerializeToString())})
            raise
        except BaseException:
            await d.idempotency.release(claim)
            raise
        await d.idempotency.store(claim, {"reply": _b64(reply)})
        return reply

    async def _call(
        self,
        route: Route,
        request: message.Message,
        ctx: RequestContext,
        timeout: float | None,
        metadata: tuple[tuple[str, str], ...],
    ) -> bytes:
        token = set_context(ctx)
        try:
            reply: bytes = await self._internal(route)(request, timeout=timeout, metadata=metadata)
            return reply
        except grpc.aio.AioRpcError as err:
            raise _Refused(_failure(err, route)) from None
        finally:
            reset_context(token)

    def _stream_handler(
        self, route: Route
    ) -> Callable[[message.Message, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[bytes]]:
        async def handle(
            request: message.Message, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            started = time.perf_counter()
            ctx: RequestContext | None = None
            refused: status_pb2.Status | None = None
            try:
                ctx, timeout = await self._prepare(route, request, context)
                token = set_context(ctx)
                try:
                    call = self._internal(route)(request, timeout=timeout)
                finally:
                    reset_context(token)
                try:
                    async for item in call:
                        yield item
                except grpc.aio.AioRpcError as err:
                    refused = _failure(err, route)
                finally:
                    call.cancel()  # the client went away: end the internal stream too
            except Problem as problem:
                refused = problem_status(problem)
            self._record(route, grpc.StatusCode.OK if refused is None else _code(refused), started, ctx)
            if refused is not None:
                await _abort(context, refused)

        return handle

    def _record(
        self, route: Route, code: grpc.StatusCode, started: float, ctx: RequestContext | None
    ) -> None:
        elapsed = time.perf_counter() - started
        EDGE_CALLS.labels(route.grpc_path, code.name).observe(elapsed)
        if self._dispatcher.options.access_log:
            access_log.info(
                "gRPC %s %s %.1fms",
                route.grpc_path,
                code.name,
                elapsed * 1e3,
                extra={
                    "correlation_id": ctx.correlation_id if ctx else "",
                    "tenant_id": ctx.tenant_id if ctx else "",
                    "grpc_method": route.grpc_path,
                },
            )


_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _code(st: status_pb2.Status) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == st.code:
            return code
    return grpc.StatusCode.UNKNOWN


def _peer_host(peer: str) -> str:
    """The client's address from gRPC's peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer or "unknown"


async def _abort(context: grpc.aio.ServicerContext[Any, Any], st: status_pb2.Status) -> None:
    await context.abort(
        _code(st), st.message, trailing_metadata=((STATUS_DETAILS_KEY, st.SerializeToString()),)
    )


async def start_edge(
    settings: Settings, dispatcher: Dispatcher, grace_s: float
) -> Callable[[], Awaitable[None]]:
    """Serve the edge on ``gateway.grpc_port`` (TLS; no client certificate:
    callers authenticate per call). Returns the function that stops it."""
    edge = Edge(dispatcher)
    server = grpc.aio.server(
        interceptors=[aio_server_interceptor()],  # type: ignore[no-untyped-call]
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 << 20)],
    )
    server.add_generic_rpc_handlers(edge.handlers())
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_secure_port(
        edge_target(settings), edge_identity(settings).server_credentials(require_client_certificate=False)
    )
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("gateway: public gRPC edge on %s (TLS, %d RPCs)", edge_target(settings), len(edge.routes))

    async def stop() -> None:
        await server.stop(grace_s)

    return stop
