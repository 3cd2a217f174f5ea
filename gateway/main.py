"""Entry point of the gateway: `python -m gateway`.

One process serves the REST API (hypercorn: HTTP/1.1 and h2c), the public
gRPC edge (gateway.edge: the same RPCs over TLS, for the SDKs) and the
standard grpc.health.v1 service on the gateway's internal gRPC port, so it is
probed like every other service. Readiness: Redis (rate limits) answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvloop
from hypercorn.asyncio import serve as serve_http
from hypercorn.config import Config

from gateway.app import Downstreams, create_app
from gateway.config import GatewayOptions
from gateway.edge import start_edge
from runtime.config import Settings, get_settings
from runtime.grpc_client import ClientFactory
from runtime.grpc_server import ServiceRunner
from runtime.security.store_credentials import open_redis
from runtime.service import freeze_startup_heap
from runtime.telemetry import setup_telemetry

log = logging.getLogger(__name__)


def http_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.gateway.host}:{settings.gateway.http_port}"]
    # Long-lived HTTP/2 clients and SSE streams must not be cut off by idle timers.
    config.keep_alive_timeout = 75
    config.h2_max_concurrent_streams = 256
    config.graceful_timeout = settings.shutdown_grace_s
    config.accesslog = None
    # A burst of new connections (clients opening more under load) must not
    # overflow the accept queue: a dropped SYN is retried after a second.
    config.backlog = 1024
    # No "server: hypercorn-h11" on every answer (bytes, header checks, and
    # it tells a client nothing it needs).
    config.include_server_header = False
    return config


async def run(settings: Settings) -> None:
    setup_telemetry(settings.telemetry, "gateway")
    downstreams = Downstreams(settings)
    redis = open_redis(settings, "gateway")  # its own ACL user (rate limits, idempotency, API keys)

    async def ready() -> bool:
        try:
            return bool(await redis.ping())
        except Exception:
            return False

    clients = ClientFactory(settings, principal="gateway")
    runner = ServiceRunner(
        "gateway",
        settings,
        lambda server: [],
        ready_check=ready,
        cleanup=[downstreams.close, clients.close, redis.aclose],
    )
    await runner.start()
    stop_http = asyncio.Event()
    app: Any = create_app(
        downstreams, clients=clients, redis=redis, options=GatewayOptions()
    )  # an ASGI app; hypercorn's protocol types are narrower than FastAPI's
    freeze_startup_heap()  # the route table, the OpenAPI document, ...
    http = asyncio.create_task(serve_http(app, http_config(settings), shutdown_trigger=stop_http.wait))
    log.info("gateway: REST on http://%s:%d", settings.gateway.host, settings.gateway.http_port)
    stop_edge = await start_edge(settings, app.state.dispatcher, settings.shutdown_grace_s)
    try:
        await runner.run_until_signal()
    finally:
        stop_http.set()
        await stop_edge()
        await http


def main() -> None:
    uvloop.run(run(get_settings()))
