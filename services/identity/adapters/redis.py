"""Identity's Redis-backed ports (services.identity.ports): the failed-login
counter of the login rate limit and the API key cache the gateway reads
(services.identity.apikeys holds its key layout and the verifier)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from services.identity import apikeys
from services.identity.apikeys import ApiKeyPrincipal


class RedisLoginFailures:
    """The LoginFailures port: one counter per key, expiring with its window."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def count(self, key: str) -> tuple[int, float]:
        failures = await self._redis.get(key)
        if failures is None:
            return 0, 0.0
        return int(failures), float(max(await self._redis.ttl(key), 0))

    async def add(self, key: str, *, window_s: int) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_s, nx=True)
            await pipe.execute()

    async def clear(self, key: str) -> None:
        await self._redis.delete(key)


class RedisApiKeyCache:
    """The ApiKeyCache port: principals under ``identity:apikey:{hash}``, last uses in one hash."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def publish(self, secret_hash: bytes, principal: ApiKeyPrincipal, *, now: float) -> None:
        await apikeys.publish(self._redis, secret_hash, principal, now=now)

    async def withdraw(self, secret_hash: bytes) -> None:
        await apikeys.withdraw(self._redis, secret_hash)

    async def principal(self, secret_hash: bytes) -> ApiKeyPrincipal | None:
        data = await self._redis.get(apikeys.cache_key(secret_hash))
        return None if data is None else ApiKeyPrincipal.from_json(data)

    async def last_used(self, api_key_ids: Sequence[str]) -> list[float | None]:
        if not api_key_ids:
            return []
        found = await self._redis.hmget(apikeys.LAST_USED_KEY, list(api_key_ids))
        return [None if value is None else float(value) for value in found]
