"""Marketdata's shared cache in Redis, read-only: the
:class:`services.execution.ports.MarketQuotes` of production (keys in
:mod:`runtime.market_cache`)."""

from __future__ import annotations

from redis.asyncio import Redis
from trading.common.v1 import market_pb2

from runtime.market_cache import is_known_instrument, quote_key
from services.execution.domain import Quote
from services.execution.wire import quote_from_proto


class RedisMarketQuotes:
    """The instrument set (``md:instruments``) and last quotes (``md:quote:{symbol}``)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def lists(self, symbol: str) -> bool:
        return await is_known_instrument(self._redis, symbol)

    async def last_quote(self, symbol: str) -> Quote | None:
        raw = await self._redis.get(quote_key(symbol))
        if not isinstance(raw, bytes):
            return None  # no quote yet
        return quote_from_proto(market_pb2.Quote.FromString(raw))
