"""Redis-protocol cache client (DragonflyDB in production, Redis locally).

Keys are always tenant-scoped through :func:`tenant_key`, so one tenant can
never address another's cache entries.

Clients are :class:`InstrumentedRedis`: every command and pipeline is timed
into ``trading_redis_client_seconds`` (runtime.storage.metrics).
"""

from __future__ import annotations

import time
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from runtime.config import RedisSettings
from runtime.storage.metrics import REDIS, ClientObserver, StoreClientMetrics, default_store_metrics

_FORBIDDEN_IN_TENANT = frozenset(":{}")


def _command_name(name: Any) -> str:
    return name.upper() if isinstance(name, str) else bytes(name).decode("ascii", "replace").upper()


class InstrumentedRedis(Redis):
    """A ``redis.asyncio.Redis`` that times each command (label: its name,
    ``EVALSHA`` for scripts) and each pipeline it makes (``PIPELINE``, or
    ``MULTI`` when transactional), retries included, into the observer set
    by :func:`create_redis`. Commands queued in a pipeline are not timed one
    by one: they travel together."""

    observer: ClientObserver | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        observer = self.observer
        if observer is None:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        start = time.perf_counter()
        try:
            result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except BaseException:
            observer.observe(_command_name(args[0]), False, time.perf_counter() - start)
            raise
        observer.observe(_command_name(args[0]), True, time.perf_counter() - start)
        return result

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = InstrumentedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.observer = self.observer
        return pipe


class InstrumentedPipeline(Pipeline):
    """A pipeline whose ``execute`` is timed as one operation."""

    observer: ClientObserver | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        observer = self.observer
        if observer is None or not (self.command_stack or self.watching):
            return await super().execute(raise_on_error)
        operation = "MULTI" if self.is_transaction or self.explicit_transaction else "PIPELINE"
        start = time.perf_counter()
        try:
            result = await super().execute(raise_on_error)
        except BaseException:
            observer.observe(operation, False, time.perf_counter() - start)
            raise
        observer.observe(operation, True, time.perf_counter() - start)
        return result


def create_redis(
    settings: RedisSettings,
    *,
    decode_responses: bool = False,
    username: str | None = None,
    password: str | None = None,
    service: str | None = None,
    metrics: StoreClientMetrics | None = None,
) -> Redis:
    """A pooled asyncio client for `settings.url` with bounded timeouts.

    Only connection errors are retried (twice, with short jittered backoff):
    a command that timed out may have run, and INCR-style counters must not
    run twice. `username`/`password` (an ACL user; see
    :func:`runtime.security.store_credentials.open_redis`, which looks them up for
    a principal) replace any credentials in the URL.

    Commands are timed into ``trading_redis_client_seconds`` with ``service``
    = `service` (default: `username`, else ``trading``); `metrics` replaces
    the default registry's.
    """
    url = settings.url
    if username is not None or password is not None:
        # redis-py lets the URL's user info win over keyword arguments.
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    client = cast(
        InstrumentedRedis,
        InstrumentedRedis.from_url(
            url,
            username=username,
            password=password,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
            health_check_interval=30,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 2, (RedisConnectionError,)),
            decode_responses=decode_responses,
        ),
    )
    client.observer = (metrics or default_store_metrics()).observer(REDIS, service or username or "trading")
    return client


def tenant_key(tenant: str, *parts: str | int) -> str:
    """``t:{tenant}:part:part``, the one way to build a cache key.

    The braces are a cluster hash tag: all keys of one tenant live in one slot
    (Redis Cluster, Dragonfly cluster mode), so per-tenant MULTI/Lua work.
    A tenant id containing ``:``, ``{`` or ``}`` is rejected: it could forge
    another tenant's prefix.
    """
    if not tenant or _FORBIDDEN_IN_TENANT.intersection(tenant):
        raise ValueError(f"invalid tenant id for a cache key: {tenant!r}")
    if not parts:
        raise ValueError("tenant_key needs at least one key part")
    return ":".join([f"t:{{{tenant}}}", *(str(p) for p in parts)])
