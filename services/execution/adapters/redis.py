"""Marketdata's shared cache in Redis, read-only: the
:class:`services.execution.ports.MarketQuotes` of production (keys in
:mod:`runtime.market_cache`)."""

from __future__ import annotations

import time

from redis.asyncio import Redis
from trading.common.v1 import market_pb2

from runtime.market_cache import is_known_instrument, quote_key
from services.execution.domain import Quote
from services.execution.wire import quote_from_proto

# How long a symbol found listed is believed without asking again. Listings
# change by the day, not by the order: the order path then reads nothing.
LISTED_TTL_S = 60.0
_LISTED_CACHE_SIZE = 100_000


class RedisMarketQuotes:
    """The instrument set (``md:instruments``) and last quotes (``md:quote:{symbol}``)."""

    def __init__(self, redis: Redis, *, listed_ttl_s: float = LISTED_TTL_S) -> None:
        self._redis = redis
        self._listed_ttl_s = listed_ttl_s
        # symbol -> when it was last found listed (monotonic s). Only found
        # ones are kept: a symbol just listed is never refused from a cache.
        self._listed: dict[str, float] = {}

    async def lists(self, symbol: str) -> bool:
        now = time.monotonic()
        seen = self._listed.get(symbol)
        if seen is not None and now - seen < self._listed_ttl_s:
            return True
        listed = await is_known_instrument(self._redis, symbol)
        if listed:
            if len(self._listed) >= _LISTED_CACHE_SIZE:
                self._listed.clear()
            self._listed[symbol] = now
        return listed

    async def last_quote(self, symbol: str) -> Quote | None:
        raw = await self._redis.get(quote_key(symbol))
        if not isinstance(raw, bytes):
            return None  # no quote yet
        return quote_from_proto(market_pb2.Quote.FromString(raw))
