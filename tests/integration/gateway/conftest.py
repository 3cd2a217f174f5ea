"""Helpers of the gateway's integration tests: the gateway app in-process
(httpx over ASGI) in front of real services started in-process, and callers
with API keys published the way identity publishes them (Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from redis.asyncio import Redis
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from gateway.app import Downstreams, create_app
from gateway.config import GatewayOptions
from runtime.config import Settings
from runtime.grpc_client import ClientFactory
from runtime.security.store_credentials import open_redis
from services.identity.apikeys import ApiKeyPrincipal, new_secret, publish, withdraw
from services.identity.domain import token_hash

ALL_READ_SCOPES = (
    "marketdata:read",
    "orders:read",
    "orders:write",
    "portfolio:read",
    "risk:read",
    "analytics:read",
    "features:read",
    "strategies:read",
)


@asynccontextmanager
async def _served(app: Any) -> AsyncIterator[str]:
    """The app behind hypercorn on a spare loopback port (streams need a real server:
    httpx's ASGITransport buffers whole responses)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.graceful_timeout = 1
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(base_url=base, timeout=2) as probe:
        while True:
            try:
                if (await probe.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                if task.done() or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)
    try:
        yield base
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@asynccontextmanager
async def gateway_client(
    settings: Settings,
    addresses: dict[str, str],
    options: GatewayOptions | None = None,
    *,
    serve_http: bool = False,
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the gateway app, its services at ``addresses``;
    in-process over ASGI, or over real HTTP with ``serve_http``."""
    routed = settings.model_copy(update={"service_addresses": {**settings.service_addresses, **addresses}})
    # The gateway's own principal: its certificate on every channel, its
    # context tokens (grant "edge") for the users it verified.
    clients = ClientFactory(routed, tracing=False, principal="gateway")
    redis = open_redis(routed, "gateway")  # the gateway's own ACL user
    downstreams = Downstreams(routed)
    app = create_app(downstreams, clients=clients, redis=redis, options=options or GatewayOptions())
    try:
        if serve_http:
            async with _served(app) as base, httpx.AsyncClient(base_url=base, timeout=20) as client:
                yield client
        else:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=20
            ) as client:
                yield client
    finally:
        await clients.close()
        await downstreams.close()
        await redis.aclose()


@asynccontextmanager
async def api_key(
    redis: Redis, scopes: Iterable[str], tenant: str | None = None, roles: Iterable[str] = ("trader",)
) -> AsyncIterator[tuple[str, ApiKeyPrincipal]]:
    """An active API key of a fresh tenant, as identity's cache holds it."""
    secret = new_secret()
    principal = ApiKeyPrincipal(
        api_key_id=str(uuid.uuid4()),
        tenant_id=tenant or f"t-{uuid.uuid4().hex[:10]}",
        subject=str(uuid.uuid4()),
        scopes=frozenset(scopes),
        roles=frozenset(roles),
        expires_at=time.time() + 600,
    )
    await publish(redis, token_hash(secret), principal, now=time.time())
    try:
        yield secret, principal
    finally:
        await withdraw(redis, token_hash(secret))


@pytest.fixture
def gateway() -> object:
    """The :func:`gateway_client` context manager (fixtures cannot be imported)."""
    return gateway_client


@pytest.fixture
def make_api_key() -> object:
    """The :func:`api_key` context manager."""
    return api_key


class WsClient:
    """A minimal WebSocket client (wsproto over asyncio streams): enough to
    read a stream's text frames and to hang up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._pending: list[Any] = []
        self.accepted = False
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, base_url: str, target: str, headers: dict[str, str]) -> WsClient:
        host, port = base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        client = cls(reader, writer)
        extra = [(k.encode(), v.encode()) for k, v in headers.items()]
        writer.write(client._ws.send(Request(host=host, target=target, extra_headers=extra)))
        await writer.drain()
        return client

    async def _next_event(self) -> Any:
        while not self._pending:
            data = await self._reader.read(65536)
            self._ws.receive_data(data or None)
            self._pending.extend(self._ws.events())
            if not data and not self._pending:
                raise ConnectionError("connection closed")
        return self._pending.pop(0)

    async def receive_text(self) -> str | None:
        """The next text frame; None once the server closed."""
        parts: list[str] = []
        while True:
            event = await self._next_event()
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts)
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                with contextlib.suppress(Exception):
                    self._writer.write(self._ws.send(event.response()))
                return None
            elif isinstance(event, Ping):
                self._writer.write(self._ws.send(event.response()))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.write(self._ws.send(CloseConnection(code=1000)))
            await self._writer.drain()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


@pytest.fixture
def ws_client() -> object:
    return WsClient
