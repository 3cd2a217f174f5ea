"""The FastAPI application of the gateway.

Hand-written routes: /healthz, /readyz, /openapi.json and /docs. Every other
path is served by one catch-all endpoint over the route table derived from
the contracts (gateway.routes), so adding an annotated RPC needs no change here.

Contract requests skip FastAPI's request pipeline (:class:`GatewayAPI`): a
plain HTTP request whose path no hand-written route or mount serves goes
straight to :func:`gateway.dispatch.handle`, which does everything that pipeline
would add for it (its own SERVER span, problem+json for every error, metrics,
the access log). The pipeline's middleware, routing and its own second
SERVER span cost about as much CPU as the gateway's own work on a request.
Everything else (the hand-written routes, WebSockets, cross-origin requests
when CORS is on, paths the catch-all cannot match) goes through FastAPI as before.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import grpc
from fastapi import FastAPI, Response
from fastapi_offline import FastAPIOffline
from redis.asyncio import Redis
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import Mount, Route, WebSocketRoute, request_response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from gateway.auth import API_KEY_HEADER, Authenticator
from gateway.config import GatewayOptions
from gateway.dispatch import CORRELATION_RESPONSE_HEADER, Dispatcher, handle
from gateway.handling import CORRELATION_HEADER, IDEMPOTENCY_HEADER, correlation_id
from gateway.idempotency import IdempotencyStore
from gateway.openapi import build_openapi
from gateway.problems import Problem
from gateway.ratelimit import LoginThrottle, RateLimiter
from gateway.routes import HTTP_METHODS, RouteTable, build_routes
from gateway.streams import sse, websocket_stream
from runtime.config import SERVICE_NAMES, Settings
from runtime.grpc_client import ClientFactory, balancing_options
from runtime.health import HealthProbe, probe
from runtime.security.credentials import PrincipalCredentials, credentials_for

DOWNSTREAM = tuple(name for name in SERVICE_NAMES if name != "gateway")
# Statuses Starlette answers by itself, as gRPC codes of the problem document.
_FRAMEWORK_CODES = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED}


def _own_route_methods(app: FastAPI, path: str) -> set[str]:
    """Methods of the hand-written routes (/healthz, /docs, ...) at ``path``;
    the catch-all matches any method there first, so it answers their 405."""
    allowed: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            allowed |= route.methods
    return allowed


def _method_not_allowed(request: Request, allowed: set[str]) -> Response:
    cid = correlation_id(request.headers)
    methods = ", ".join(sorted(allowed))
    problem = Problem(
        grpc.StatusCode.UNIMPLEMENTED,
        f"method {request.method} not allowed here; allowed: {methods}",
        status=405,
        reason="METHOD_NOT_ALLOWED",
        headers={"Allow": methods},
    )
    response = problem.response(cid)
    response.headers[CORRELATION_RESPONSE_HEADER] = cid
    return response


class GatewayAPI(FastAPI):
    """The FastAPI app with a direct path for the contract's HTTP requests
    (see the module docstring). ``create_app`` makes its app one of these.
    Middleware added to the app (``add_middleware``) runs on the FastAPI path
    only: what every contract request needs belongs in ``dispatch.handle``.
    (CORS is the one middleware the gateway adds: cross-origin requests take
    the FastAPI path, and it leaves the others untouched anyway.)"""

    _contract: ASGIApp | None = None
    _own_paths: frozenset[str] = frozenset()
    _own_patterns: tuple[re.Pattern[str], ...] = ()
    _catch_all: re.Pattern[str] | None = None
    _cors: bool = False

    def take_contract_route(self, endpoint: ASGIApp, catch_all: Route, *, cors: bool) -> None:
        """Serve the paths ``catch_all`` matches and no other route of the app
        claims with ``endpoint`` directly. Call once every route is added."""
        exact: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        for route in self.router.routes:
            if route is catch_all or isinstance(route, WebSocketRoute):
                continue
            path = getattr(route, "path", None)
            if isinstance(route, Route) and isinstance(path, str) and "{" not in path:
                exact.add(path)
            else:  # a mount or a route with parameters: its own pattern
                regex = getattr(route, "path_regex", None)
                if isinstance(regex, re.Pattern):
                    patterns.append(regex)
                if isinstance(route, Mount):
                    exact.add(route.path)
        self._contract = endpoint
        self._own_paths = frozenset(exact)
        self._own_patterns = tuple(patterns)
        self._catch_all = catch_all.path_regex
        self._cors = cors

    def _direct(self, scope: Scope) -> bool:
        if scope["type"] != "http" or self._contract is None or self.root_path or scope.get("root_path"):
            return False
        path: str = scope["path"]
        if path in self._own_paths or any(p.match(path) for p in self._own_patterns):
            return False
        if self._catch_all is None or not self._catch_all.match(path):
            return False  # FastAPI answers it (the framework's problem+json)
        # Cross-origin requests need the CORS middleware's headers (and preflights its answer).
        return not (self._cors and any(k == b"origin" for k, _ in scope["headers"]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._direct(scope):
            assert self._contract is not None
            scope["app"] = self
            await self._contract(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _AnyMethod:
    """An ASGI app wrapper: as a Route endpoint it is not a function, so the
    route accepts every HTTP method."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class Downstreams:
    """Pooled channels to the services, one per address, for the gateway's lifetime."""

    def __init__(self, settings: Settings, credentials: PrincipalCredentials | None = None) -> None:
        creds = credentials or credentials_for(settings, "gateway")
        # These channels ask for health: they must reach a replica that is not SERVING too.
        options = balancing_options(settings.client, health_checked=False)
        self.channels = {
            name: creds.channel(settings.dial_target(name), name, options, []) for name in DOWNSTREAM
        }

    async def health(self, timeout: float = 0.5) -> dict[str, HealthProbe]:
        """grpc.health of every service, with the reason of those not SERVING
        (a stuck consumer or relay, dependencies down: runtime.health)."""
        results = await asyncio.gather(*(probe(self.channels[n], timeout=timeout) for n in DOWNSTREAM))
        return dict(zip(DOWNSTREAM, results, strict=True))

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels.values()))


def create_app(
    downstreams: Downstreams,
    *,
    clients: ClientFactory,
    redis: Redis,
    options: GatewayOptions | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The app. ``clients`` (pooled gRPC channels) and ``redis`` are owned by the caller."""
    options = options or GatewayOptions()
    table = RouteTable(build_routes())
    dispatcher = Dispatcher(
        table,
        clients,
        authenticator or Authenticator.create(options, clients, redis),
        RateLimiter(redis, options.rate_limit_requests, options.rate_limit_window_s),
        options,
        IdempotencyStore(redis),
        LoginThrottle(
            redis,
            free_attempts=options.login_free_attempts,
            backoff_base_s=options.login_backoff_base_s,
            backoff_max_s=options.login_backoff_max_s,
            account_attempts=options.login_account_attempts,
            account_window_s=options.login_account_window_s,
        ),
    )
    # /docs and /redoc from the assets fastapi-offline packages (FastAPI's
    # default pages load Swagger UI and ReDoc from a CDN: blank offline).
    app = FastAPIOffline(title="AI trading platform API", version="1.0.0")
    # fastapi_offline builds a plain FastAPI (a function, not a class to derive
    # from); the same object with the direct contract path.
    app.__class__ = GatewayAPI
    assert isinstance(app, GatewayAPI)
    app.state.dispatcher = dispatcher
    document = build_openapi(table.routes, title=app.title, version=app.version)
    app.openapi = lambda: document  # type: ignore[method-assign]

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process serves HTTP. Checks no dependency."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(response: Response) -> dict[str, object]:
        """Readiness: every downstream service answers SERVING. Lists the
        status of each, and for those not SERVING why, as they said it
        (e.g. "stuck: kafka:portfolio: KafkaConnectionError ...")."""
        probes = await downstreams.health()
        ready = all(p.serving for p in probes.values())
        response.status_code = 200 if ready else 503
        return {
            "status": "ready" if ready else "not ready",
            "services": {name: p.status for name, p in probes.items()},
            "not_serving": {name: p.reason or p.status for name, p in probes.items() if not p.serving},
        }

    async def contract_route(request: Request) -> Any:
        allowed = _own_route_methods(app, request.url.path)
        if allowed:  # a hand-written route's path with another method
            return _method_not_allowed(request, allowed)
        return await handle(dispatcher, request, sse)

    async def contract_websocket(websocket: WebSocket) -> None:
        await websocket_stream(dispatcher, websocket)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Starlette answers by itself only for paths the catch-all cannot match
        # (e.g. a percent-encoded newline, which its path regex excludes); those
        # get the same problem+json as every other error.
        code = _FRAMEWORK_CODES.get(exc.status_code, grpc.StatusCode.INVALID_ARGUMENT)
        cid = correlation_id(request.headers)
        # Its headers too: a 405 must name the allowed methods (Allow).
        problem = Problem(code, str(exc.detail), status=exc.status_code, headers=dict(exc.headers or {}))
        response = problem.response(cid)
        response.headers[CORRELATION_RESPONSE_HEADER] = cid
        return response

    app.router.add_websocket_route("/{path:path}", contract_websocket)
    # Every method, so TRACE, OPTIONS, ... reach the route table, which answers
    # 405 with the Allow header of the path's routes. (Starlette restricts a
    # plain function endpoint to GET when no methods are named; an ASGI app
    # endpoint with methods=None takes every method.)
    catch_all = Route("/{path:path}", _AnyMethod(request_response(contract_route)), include_in_schema=False)
    app.router.routes.append(catch_all)

    async def direct(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        response = await handle(dispatcher, request, sse)
        await response(scope, receive, send)

    app.take_contract_route(direct, catch_all, cors=bool(options.cors_origins))
    if options.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=options.cors_origins,
            allow_methods=[m.upper() for m in HTTP_METHODS],
            allow_headers=[
                "authorization",
                "content-type",
                API_KEY_HEADER,
                IDEMPOTENCY_HEADER,
                CORRELATION_HEADER,
                "x-request-timeout",
                "grpc-timeout",
            ],
            expose_headers=[CORRELATION_RESPONSE_HEADER, "Retry-After"],
            max_age=options.cors_max_age_s,
        )
    return app
