"""The connections a service depends on, opened in one place.

A service declares what it needs (`needs={"postgres", "nats", ...}`); its
entry point opens exactly those, with retries while the servers come up, runs
its PostgreSQL migrations, and only then reports SERVING. Every connection is
made as the service's own principal (runtime.security.store_credentials): its
PostgreSQL login role, its Redis ACL user, its Kafka SASL user where the
broker authenticates; the migrations run through the migrator's DSN on a
connection of their own, closed before the service's pool opens. `ready()` is the
readiness probe the health service polls afterwards, so a lost dependency
turns the service NOT_SERVING instead of failing calls one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import asyncpg
from nats.aio.client import Client as NatsClient
from redis.asyncio import Redis
from tenacity import AsyncRetrying, retry_if_not_exception_type, stop_after_delay, wait_exponential_jitter

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.kafka.admin import ensure_topics, platform_topics
from runtime.messaging.nats import NatsPublisher
from runtime.messaging.nats.connect import connect_nats
from runtime.messaging.nats.streams import ensure_streams, platform_streams
from runtime.security.nats_permissions import NATS_ROLES
from runtime.security.postgres_roles import POSTGRES_GRANTS, set_app_password, tenant_role
from runtime.security.store_credentials import kafka_settings_for, open_redis, postgres_dsn, postgres_password
from runtime.storage.clickhouse import ConnectClickHouse, create_clickhouse
from runtime.storage.migrations import MigrationError, migrate
from runtime.storage.postgres import create_pool

log = logging.getLogger(__name__)

Dependency = Literal["postgres", "redis", "nats", "kafka", "clickhouse"]
ALL_DEPENDENCIES: tuple[Dependency, ...] = ("postgres", "redis", "nats", "kafka", "clickhouse")
_Client = TypeVar("_Client")


async def declare_streams(client: NatsClient, principal: str, *, replicas: int = 1) -> None:
    """Create the platform streams ``principal`` declares and update those it
    owns (runtime.security.nats_permissions: its user may do no more). A
    service declares the streams it publishes to or consumes, so whichever
    starts first creates them."""
    role = NATS_ROLES.get(principal)
    if role is None:
        return
    specs = {spec.name: spec for spec in platform_streams(event_registry())}
    js = client.jetstream()
    owned = [specs[name] for name in role.owns if name in specs]
    declared = [specs[name] for name in role.declares if name in specs and name not in role.owns]
    await ensure_streams(js, owned, replicas=replicas)
    await ensure_streams(js, declared, replicas=replicas, update=False)


class ResourceNotOpenError(RuntimeError):
    """A service used a connection it did not declare in its needs (or before
    they were opened)."""


@dataclass
class Resources:
    """Open clients of one service process: each dependency the service
    declared in ``needs`` is a typed, non-optional property once :meth:`open`
    returned; using one it did not declare raises :class:`ResourceNotOpenError`."""

    settings: Settings
    service: str
    needs: frozenset[Dependency]
    _postgres: asyncpg.Pool | None = None
    _redis: Redis | None = None
    _nats: NatsClient | None = None
    _nats_publisher: NatsPublisher | None = None
    _kafka_publisher: KafkaPublisher | None = None
    _clickhouse: ConnectClickHouse | None = None
    _opened: list[Dependency] = field(default_factory=list)
    _cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def postgres(self) -> asyncpg.Pool:
        """The service's pool, as its own login role (need "postgres")."""
        return self._require("postgres", self._postgres)

    @property
    def redis(self) -> Redis:
        """The Redis client, as the service's ACL user (need "redis")."""
        return self._require("redis", self._redis)

    @property
    def nats(self) -> NatsClient:
        """The NATS connection, as the service's user (need "nats")."""
        return self._require("nats", self._nats)

    @property
    def nats_publisher(self) -> NatsPublisher:
        """Publisher of events on NATS (need "nats")."""
        return self._require("nats", self._nats_publisher)

    @property
    def kafka_publisher(self) -> KafkaPublisher:
        """Publisher of events on Kafka (need "kafka")."""
        return self._require("kafka", self._kafka_publisher)

    @property
    def clickhouse(self) -> ConnectClickHouse:
        """The ClickHouse client, chdb or a server (need "clickhouse")."""
        return self._require("clickhouse", self._clickhouse)

    def _require(self, dep: Dependency, client: _Client | None) -> _Client:
        if client is None:
            declared = ", ".join(sorted(self.needs)) or "none"
            raise ResourceNotOpenError(
                f"{self.service}: {dep} is not open (needs: {declared}; a service declares what it uses "
                "in its ServiceSpec and uses it after open())"
            )
        return client

    @classmethod
    def for_service(cls, settings: Settings, service: str, needs: Iterable[Dependency]) -> Resources:
        # Kafka clients built from resources.settings.kafka (publishers,
        # consumers) log in as this service where the broker authenticates.
        settings = settings.model_copy(update={"kafka": kafka_settings_for(settings, service)})
        return cls(settings=settings, service=service, needs=frozenset(needs))

    async def open(self, *, timeout_s: float = 60.0) -> None:
        """Connect to every needed server, retrying with backoff until `timeout_s`."""
        for dep in ALL_DEPENDENCIES:
            if dep in self.needs and dep not in self._opened:
                async for attempt in AsyncRetrying(
                    wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
                    stop=stop_after_delay(timeout_s),
                    # A server still starting is worth waiting for; a bad migration is not.
                    retry=retry_if_not_exception_type(MigrationError),
                    reraise=True,
                ):
                    with attempt:
                        await self._open_one(dep)
                self._opened.append(dep)
                log.info("%s: %s ready", self.service, dep)

    async def _open_one(self, dep: Dependency) -> None:
        s = self.settings
        if dep == "postgres":
            self._postgres = await open_postgres(s, self.service)
        elif dep == "redis":
            redis = open_redis(s, self.service)
            try:
                await redis.ping()
            except BaseException:
                await redis.aclose()
                raise
            self._redis = redis
        elif dep == "nats":
            client = await connect_nats(s, self.service, connect_timeout=2, max_reconnect_attempts=-1)
            try:
                await declare_streams(client, self.service, replicas=s.nats.stream_replicas)
            except BaseException:
                await client.close()
                raise
            self._nats = client
            self._nats_publisher = NatsPublisher(client, event_registry())
        elif dep == "kafka":
            await ensure_topics(s.kafka, platform_topics(event_registry()))
            publisher = KafkaPublisher(s.kafka, event_registry(), client_id=self.service)
            try:
                await publisher.start()
            except BaseException:
                await publisher.close()
                raise
            self._kafka_publisher = publisher
        elif dep == "clickhouse":
            self._clickhouse = await create_clickhouse(s.clickhouse, service=self.service)

    async def ready(self) -> bool:
        """True when every needed dependency answers now (cheap pings)."""
        if len(self._opened) != len(self.needs):
            return False
        try:
            async with asyncio.timeout(1.0):
                if self._postgres is not None:
                    await self._postgres.fetchval("SELECT 1")
                if self._redis is not None:
                    await self._redis.ping()
                if self._nats is not None and not self._nats.is_connected:
                    return False
                if self._kafka_publisher is not None and not await self._kafka_publisher.ping():
                    return False
                if self._clickhouse is not None:
                    return await self._clickhouse.ping()
        except Exception as exc:
            log.warning("%s: readiness check failed: %r", self.service, exc)
            return False
        return True

    def on_close(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run `cleanup` at shutdown before connections close (last added first):
        how a service's build() stops the consumers and background tasks it started."""
        self._cleanups.append(cleanup)

    async def close(self) -> None:
        """Stop what build() started, then close every connection, in reverse
        order; never raises."""
        while self._cleanups:
            cleanup = self._cleanups.pop()
            try:
                await cleanup()
            except Exception as exc:
                log.warning("%s: clean-up %r failed: %r", self.service, cleanup, exc)
        for dep in reversed(self._opened):
            try:
                await self._close_one(dep)
            except Exception as exc:
                log.warning("%s: closing %s failed: %r", self.service, dep, exc)
        self._opened.clear()

    async def _close_one(self, dep: Dependency) -> None:
        if dep == "postgres" and self._postgres is not None:
            await self._postgres.close()
        elif dep == "redis" and self._redis is not None:
            await self._redis.aclose()
        elif dep == "nats" and self._nats is not None:
            await self._nats.drain()
        elif dep == "kafka" and self._kafka_publisher is not None:
            await self._kafka_publisher.close()
        elif dep == "clickhouse" and self._clickhouse is not None:
            await self._clickhouse.close()


async def migrate_service(settings: Settings, service: str) -> None:
    """Apply `service`'s migrations and role grants and set its login role's
    password, through the migrator's DSN (``settings.postgres.dsn``)."""
    conn = await asyncpg.connect(settings.postgres.dsn, timeout=settings.postgres.command_timeout_s)
    try:
        await migrate(conn, service)
        if service in POSTGRES_GRANTS:
            await set_app_password(conn, service, postgres_password(settings, service)())
    finally:
        await conn.close()


async def open_postgres(settings: Settings, service: str) -> asyncpg.Pool:
    """The pool `service` works with: its own login role (``trading_<svc>_app``),
    tenant transactions as ``trading_<svc>_tenant``; migrated first when
    ``postgres.migrate_on_start``."""
    if service not in POSTGRES_GRANTS:
        raise MigrationError(
            f"{service} has no PostgreSQL roles (runtime.security.postgres_roles.POSTGRES_GRANTS)"
        )
    if settings.postgres.migrate_on_start:
        await migrate_service(settings, service)
    return await create_pool(
        settings.postgres,
        dsn=postgres_dsn(settings, service),
        password=postgres_password(settings, service),
        application_name=service,
        tenant_role=tenant_role(service),
    )
