"""The Redis adapter of decision's instrument directory (services/decision/ports.py):
the universe marketdata publishes as the set ``md:instruments``
(runtime.market_cache.INSTRUMENTS_KEY)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from runtime.market_cache import INSTRUMENTS_KEY


class RedisInstrumentDirectory:
    """:class:`services.decision.ports.InstrumentDirectory` on marketdata's set."""

    def __init__(self, redis: Redis, key: str = INSTRUMENTS_KEY) -> None:
        self._redis = redis
        self._key = key

    async def listed(self, symbols: Sequence[str]) -> list[bool] | None:
        known = await self._redis.smismember(self._key, list(symbols))
        if not await self._redis.exists(self._key):
            return None
        return [bool(k) for k in known]
