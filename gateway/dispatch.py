"""REST -> gRPC: one handler serves every route of the table.

For each request: match the route, authenticate and authorize (method
policy), rate-limit per tenant, build the request message (body, path,
query), call the service over its pooled channel with a deadline and the
caller's context in metadata, and answer proto3 JSON or problem+json.
Server-streaming RPCs answer server-sent events (gateway.streams).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
import grpc.aio
from google.protobuf import message
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Histogram
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from gateway.auth import Authenticator, Principal, authorize
from gateway.config import GatewayOptions
from gateway.handling import call_timeout, correlation_id, idempotency_key, read_body
from gateway.idempotency import IdempotencyStore
from gateway.limits import InputLimits, check_path, parse_json_body, parse_query
from gateway.problems import Problem, bad_request, from_rpc_error, violation
from gateway.ratelimit import LOGIN_RPC, LoginThrottle, RateLimiter, client_source, trusted_networks
from gateway.routes import Route, RouteTable
from gateway.transcode import dumps, to_json
from runtime.context import RequestContext, reset_context, set_context
from runtime.contracts import METADATA
from runtime.grpc_client import ClientFactory
from runtime.messaging.headers import extract_trace

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("gateway")
HTTP_REQUESTS = Histogram(
    "trading_gateway_http_request_seconds",
    "REST requests at the gateway by method, route template and status (streams: until the stream opens)",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
access_log = logging.getLogger("gateway.access")

CORRELATION_RESPONSE_HEADER = "X-Correlation-Id"


@dataclass(slots=True)
class Prepared:
    """A request made ready for its RPC."""

    route: Route
    request: message.Message
    context: RequestContext
    metadata: tuple[tuple[str, str], ...]
    timeout: float | None
    principal: Principal | None
    source: str = ""  # the client's address (gateway.ratelimit.client_source)


class Dispatcher:
    """Holds the route table and one multi-callable per RPC on the pooled channels."""

    def __init__(
        self,
        table: RouteTable,
        clients: ClientFactory,
        authenticator: Authenticator,
        limiter: RateLimiter,
        options: GatewayOptions,
        idempotency: IdempotencyStore,
        login_throttle: LoginThrottle | None = None,
    ) -> None:
        self.login_throttle = login_throttle
        self.limits = InputLimits.of(options)
        self._trusted_proxies = trusted_networks(options.trusted_proxies)
        self.idempotency = idempotency
        self.table = table
        self.clients = clients
        self.authenticator = authenticator
        self.limiter = limiter
        self.options = options
        self._callables: dict[str, Any] = {}

    def callable_for(self, route: Route) -> Any:
        """The unary or server-streaming multi-callable of a route's RPC (cached)."""
        found = self._callables.get(route.grpc_path)
        if found is None:
            channel = self.clients.channel(route.target)
            make = channel.unary_stream if route.streaming else channel.unary_unary
            found = make(
                route.grpc_path,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
            self._callables[route.grpc_path] = found
        return found

    async def prepare(self, request: HTTPConnection, cid: str, method: str | None = None) -> Prepared:
        """Everything before the call; raises :class:`Problem`. ``request`` is an
        HTTP request, or a WebSocket handshake (``method`` "GET"; its token may
        come as the ``access_token`` query parameter, browsers cannot set headers)."""
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(request.url.path)
        check_path(path, self.limits)
        route, path_values = self.table.match(method or request.scope["method"], path)
        headers: Mapping[str, str] = request.headers
        query = parse_query(request.scope.get("query_string", b""), self.limits)
        peer = request.client.host if request.client else None
        source = client_source(peer, headers.get("x-forwarded-for"), self._trusted_proxies)
        if isinstance(request, WebSocket):
            token = [v for k, v in query if k == "access_token"]
            query = [(k, v) for k, v in query if k != "access_token"]
            if token and "authorization" not in headers:
                headers = {**headers, "authorization": f"Bearer {token[0]}"}
        principal = None
        if not route.policy.public:
            principal = await self.authenticator.authenticate(headers)
        # Counted before authorization: refused calls of a tenant count too.
        await self.rate_limit(principal, source)
        authorize(route.policy, principal)
        body: Any = None
        if route.body and isinstance(request, Request):
            body = parse_json_body(await read_body(request, self.options.max_body_bytes), self.limits)
        rpc_request = route.build_request(path_values, query, body)
        timeout = call_timeout(headers, self.options, stream=route.streaming)
        metadata: list[tuple[str, str]] = []
        key = idempotency_key(headers)
        if key and route.policy.public:
            # Public routes (login, token refresh, logout, ...) have no principal
            # to scope a key by: shared per key, one caller would be replayed
            # another's answer (tokens included); and a fingerprint of the
            # client (address, user agent) collides behind NAT and proxies.
            raise bad_request(
                "Idempotency-Key is not accepted on routes without authentication",
                [
                    violation(
                        "idempotency-key",
                        "this route has no caller to scope the key to",
                        "unsupported",
                        pointer="",
                    )
                ],
            )
        if key and route.mutating:
            metadata.append((METADATA.idempotency_key, key))
        ctx = RequestContext(
            tenant_id=principal.tenant_id if principal else "",
            subject=principal.subject if principal else "",
            correlation_id=cid,
            idempotency_key=key,
            scopes=principal.scopes if principal else frozenset(),
            roles=principal.roles if principal else frozenset(),
        ).with_deadline_in(timeout)
        return Prepared(route, rpc_request, ctx, tuple(metadata), timeout, principal, source)

    async def rate_limit(self, principal: Principal | None, source: str) -> None:
        if principal is not None:
            bucket = principal.tenant_id
        else:
            bucket = "anon-" + source.replace(":", "_").replace("{", "_").replace("}", "_")
        decision = await self.limiter.hit(bucket)
        if decision is not None and not decision.allowed:
            raise Problem(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit of {decision.limit} requests per {self.limiter.window_s}s exceeded",
                reason="RATE_LIMITED",
                domain="trading.gateway",
                retry_after_s=max(decision.reset_s, 1.0),
            )

    async def unary(self, prepared: Prepared, cid: str) -> Response:
        if prepared.route.grpc_path == LOGIN_RPC and self.login_throttle is not None:
            return await self._login(prepared)
        key = prepared.context.idempotency_key
        if not (key and prepared.route.mutating):
            return await self._call(prepared)
        claim = await self.idempotency.begin(
            prepared.context.tenant_id,
            prepared.context.subject,
            prepared.route.grpc_path,
            key,
            prepared.request,
        )
        if isinstance(claim, Response):
            return claim
        try:
            try:
                response = await self._call(prepared)
            except Problem as problem:
                response = problem.response(cid)
        except BaseException:
            await self.idempotency.release(claim)
            raise
        await self.idempotency.finish(claim, response)
        return response

    async def _login(self, prepared: Prepared) -> Response:
        """Login behind the throttle: a throttled attempt never reaches identity."""
        assert self.login_throttle is not None
        request: Any = prepared.request
        account = LoginThrottle.account_of(request.tenant_slug, request.email)
        attempt = await self.login_throttle.attempt(account, prepared.source)
        response = await self._call(prepared)  # a failed login raises its Problem
        await self.login_throttle.succeeded(attempt)
        return response

    async def _call(self, prepared: Prepared) -> Response:
        call = self.callable_for(prepared.route)
        token = set_context(prepared.context)
        try:
            reply = await call(prepared.request, timeout=prepared.timeout, metadata=prepared.metadata)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, prepared.route.request_class.DESCRIPTOR) from None
        finally:
            reset_context(token)
        doc = to_json(prepared.route.response_message(reply))
        return Response(dumps(doc), media_type="application/json")


async def handle(
    dispatcher: Dispatcher,
    request: Request,
    stream: Callable[[Dispatcher, Prepared, Request, str], Awaitable[Response]],
) -> Response:
    """The endpoint of every contract route, in one SERVER span: named by the
    route's template once matched (``POST /v1/orders/{order_id}:cancel``),
    the child of the client's ``traceparent`` if it sent one; the calls to the
    services, and the events they make, continue its trace."""
    cid = correlation_id(request.headers)
    method = request.scope["method"]
    started = time.perf_counter()
    route = "-"
    tenant = ""
    with _tracer.start_as_current_span(
        f"{method}",
        context=extract_trace(request.headers),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "trading.correlation_id": cid},
    ) as span:
        try:
            prepared = await dispatcher.prepare(request, cid)
            route = prepared.route.template.template
            tenant = prepared.context.tenant_id
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            if prepared.route.streaming:
                response = await stream(dispatcher, prepared, request, cid)
            else:
                response = await dispatcher.unary(prepared, cid)
        except Problem as problem:
            response = problem.response(cid)
        except Exception:
            log.exception("gateway: unhandled error (correlation id %s)", cid)
            response = Problem(grpc.StatusCode.INTERNAL, "internal error").response(cid)
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            span.set_status(Status(StatusCode.ERROR))
        # The route template ("-" before a route matched) keeps the label set bounded.
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).observe(time.perf_counter() - started)
        if dispatcher.options.access_log:
            # The route template, never the raw path (ids and tokens stay out
            # of logs); inside the span, so the line carries the trace id.
            access_log.info(
                "%s %s %d %.1fms",
                method,
                route,
                response.status_code,
                (time.perf_counter() - started) * 1e3,
                extra={"correlation_id": cid, "tenant_id": tenant, "http_route": route},
            )
    response.headers[CORRELATION_RESPONSE_HEADER] = cid
    return response
