"""gRPC API of the features service (trading.features.v1.FeaturesService).

GetFeatures answers from the latest vectors in memory, then from Redis (a
vector another replica computed). Without a vector: NOT_FOUND when the symbol
is not in marketdata's instrument universe (Redis ``md:instruments``),
UNAVAILABLE with RetryInfo when it is (no tick seen yet) or when the universe
is not published yet.
"""

from __future__ import annotations

from typing import Any

import grpc
from redis.asyncio import Redis
from trading.features.v1 import features_service_pb2 as pb

from runtime.errors import ServiceError, domain_error
from runtime.market_cache import INSTRUMENTS_KEY
from services.features.consumer import FeatureProcessor, vector_key

DOMAIN = "trading.features"
RETRY_AFTER_S = 1.0


class FeaturesApi:
    """The FeaturesService servicer."""

    def __init__(self, processor: FeatureProcessor, redis: Redis) -> None:
        self._processor = processor
        self._redis = redis

    async def GetFeatures(
        self, request: pb.GetFeaturesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetFeaturesResponse:
        symbol = request.symbol
        vector = self._processor.latest(symbol)
        if vector is not None:
            return pb.GetFeaturesResponse(vector=vector)
        stored = await self._redis.get(vector_key(symbol))
        if stored is not None:
            data = stored if isinstance(stored, bytes) else stored.encode()
            return pb.GetFeaturesResponse(vector=pb.FeatureVector.FromString(data))
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists(INSTRUMENTS_KEY)
        pipe.sismember(INSTRUMENTS_KEY, symbol)
        universe_known, known = await pipe.execute()
        if universe_known and not known:
            raise ServiceError(
                domain_error(
                    grpc.StatusCode.NOT_FOUND,
                    "INSTRUMENT_NOT_FOUND",
                    DOMAIN,
                    f"no instrument {symbol}",
                    {"symbol": symbol},
                )
            )
        raise ServiceError(
            domain_error(
                grpc.StatusCode.UNAVAILABLE,
                "FEATURES_NOT_AVAILABLE",
                DOMAIN,
                f"no tick seen for {symbol} yet" if universe_known else "instrument universe not known yet",
                {"symbol": symbol},
                retry_after_s=RETRY_AFTER_S,
            )
        )
