"""Features' ports on Redis: its latest vectors (``features:vector:{symbol}``,
serialized FeatureVector) and marketdata's instrument universe
(``md:instruments``, a set; absent until marketdata publishes it)."""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis
from trading.features.v1 import features_service_pb2 as pb

from runtime.market_cache import INSTRUMENTS_KEY
from services.features.ports import Listing


def vector_key(symbol: str) -> str:
    """Redis key of a symbol's latest FeatureVector (platform-wide)."""
    return f"features:vector:{symbol}"


class RedisVectorStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def latest(self, symbol: str) -> pb.FeatureVector | None:
        stored = await self._redis.get(vector_key(symbol))
        if stored is None:
            return None
        return pb.FeatureVector.FromString(stored if isinstance(stored, bytes) else stored.encode())

    async def save(self, vectors: Mapping[str, pb.FeatureVector]) -> None:
        """One round trip (a pipeline) for all of them."""
        if not vectors:
            return
        pipe = self._redis.pipeline(transaction=False)
        for symbol, vector in vectors.items():
            pipe.set(vector_key(symbol), vector.SerializeToString())
        await pipe.execute()


class RedisInstrumentUniverse:
    """``key``: the set marketdata writes (another only for tests of their own)."""

    def __init__(self, redis: Redis, *, key: str = INSTRUMENTS_KEY) -> None:
        self._redis = redis
        self._key = key

    async def listing(self, symbol: str) -> Listing:
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists(self._key)
        pipe.sismember(self._key, symbol)
        published, listed = await pipe.execute()
        if not published:
            return Listing.UNPUBLISHED
        return Listing.LISTED if listed else Listing.UNLISTED
