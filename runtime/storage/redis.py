"""Redis-protocol cache client (DragonflyDB in production, Redis locally).

Keys are always tenant-scoped through :func:`tenant_key`, so one tenant can
never address another's cache entries.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from runtime.config import RedisSettings

_FORBIDDEN_IN_TENANT = frozenset(":{}")


def create_redis(
    settings: RedisSettings,
    *,
    decode_responses: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> Redis:
    """A pooled asyncio client for `settings.url` with bounded timeouts.

    Only connection errors are retried (twice, with short jittered backoff):
    a command that timed out may have run, and INCR-style counters must not
    run twice. `username`/`password` (an ACL user; see
    :func:`runtime.security.store_credentials.open_redis`, which looks them up for
    a principal) replace any credentials in the URL.
    """
    url = settings.url
    if username is not None or password is not None:
        # redis-py lets the URL's user info win over keyword arguments.
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return Redis.from_url(
        url,
        username=username,
        password=password,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 2, (RedisConnectionError,)),
        decode_responses=decode_responses,
    )


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
