"""gRPC API of the features service (trading.features.v1.FeaturesService).

GetFeatures answers from the latest vectors in memory, then from the vector
store (a vector another replica computed; Redis in production). Without a
vector: NOT_FOUND when the symbol is not in marketdata's instrument universe
(Redis ``md:instruments``), UNAVAILABLE with RetryInfo when it is (no tick
seen yet) or when the universe is not published yet.
"""

from __future__ import annotations

from typing import Any

import grpc
from trading.features.v1 import features_service_pb2 as pb

from runtime.errors import ServiceError, domain_error
from services.features.consumer import FeatureProcessor
from services.features.ports import InstrumentUniverse, Listing, VectorStore

DOMAIN = "trading.features"
RETRY_AFTER_S = 1.0


class FeaturesApi:
    """The FeaturesService servicer."""

    def __init__(
        self, processor: FeatureProcessor, vectors: VectorStore, universe: InstrumentUniverse
    ) -> None:
        self._processor = processor
        self._vectors = vectors
        self._universe = universe

    async def GetFeatures(
        self, request: pb.GetFeaturesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetFeaturesResponse:
        symbol = request.symbol
        vector = self._processor.latest(symbol)
        if vector is not None:
            return pb.GetFeaturesResponse(vector=vector)
        stored = await self._vectors.latest(symbol)
        if stored is not None:
            return pb.GetFeaturesResponse(vector=stored)
        listing = await self._universe.listing(symbol)
        if listing is Listing.UNLISTED:
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
                f"no tick seen for {symbol} yet"
                if listing is Listing.LISTED
                else "instrument universe not known yet",
                {"symbol": symbol},
                retry_after_s=RETRY_AFTER_S,
            )
        )
