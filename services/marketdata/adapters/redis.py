"""The QuoteCache port (services.marketdata.ports) on Redis (or DragonflyDB):
``md:quote:{symbol}`` (runtime.market_cache) holds the symbol's last quote."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.asyncio import Redis
from trading.common.v1 import market_pb2

from runtime.market_cache import quote_key


def _quote(data: bytes | str) -> market_pb2.Quote:
    """A Quote from Redis (bytes: the client does not decode responses)."""
    return market_pb2.Quote.FromString(data if isinstance(data, bytes) else data.encode())


class RedisQuoteCache:
    """Last quotes in Redis, one key per symbol."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def put_latest(self, quotes: Mapping[str, bytes]) -> None:
        # A pipeline of SETs rather than one MSET: keys may sit in different
        # cluster slots (Dragonfly/Redis cluster).
        pipe = self._redis.pipeline(transaction=False)
        for symbol, value in quotes.items():
            pipe.set(quote_key(symbol), value)
        await pipe.execute()

    async def latest(self, symbol: str) -> market_pb2.Quote | None:
        data = await self._redis.get(quote_key(symbol))
        return None if data is None else _quote(data)

    async def latest_many(self, symbols: Sequence[str]) -> list[market_pb2.Quote | None]:
        if not symbols:
            return []
        found = await self._redis.mget([quote_key(s) for s in symbols])
        return [None if data is None else _quote(data) for data in found]
