"""The last quotes marketdata writes to Redis (``md:quote:{symbol}``,
serialized ``trading.common.v1.Quote``), read as marks: the
:class:`services.portfolio.ports.QuoteCache` of production."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from google.protobuf.message import DecodeError
from redis.asyncio import Redis
from trading.common.v1 import market_pb2

from runtime.market_cache import quote_key
from services.portfolio import domain
from services.portfolio.views import mark_of_quote


class RedisQuoteCache:
    """Reads the last quotes marketdata writes to Redis (`md:quote:{symbol}`)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def marks(self, symbols: Iterable[str]) -> dict[str, domain.Mark]:
        """Marks of the symbols that have a usable quote; one round trip."""
        wanted: Sequence[str] = sorted(set(symbols))
        if not wanted:
            return {}
        values = await self._redis.mget([quote_key(s) for s in wanted])
        marks: dict[str, domain.Mark] = {}
        for symbol, raw in zip(wanted, values, strict=True):
            if not isinstance(raw, bytes) or not raw:
                continue  # missing (or a text value: not a serialized Quote)
            try:
                mark = mark_of_quote(market_pb2.Quote.FromString(raw))
            except (DecodeError, ArithmeticError, ValueError):
                continue  # a garbled cache entry: value at cost rather than fail the call
            if mark is not None:
                marks[symbol] = mark
        return marks
