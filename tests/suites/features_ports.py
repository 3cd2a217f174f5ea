"""The contract of features' storage ports (services/features/ports.py),
run against every adapter: the in-memory ones
(tests/unit/services/features/test_features_ports_memory.py) and the Redis
ones (tests/integration/storage/test_features_ports_redis.py).

A concrete class provides: ``vectors`` (a VectorStore) for
:class:`VectorStoreSuite`; ``universe`` (an InstrumentUniverse nothing has
published yet) and ``publish_universe`` (lists symbols in it, as marketdata
does) for :class:`InstrumentUniverseSuite`. Symbols are unique per test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable

from trading.common.v1 import decimal_pb2
from trading.features.v1 import features_service_pb2 as pb

from services.features.ports import InstrumentUniverse, Listing, VectorStore

PublishUniverse = Callable[[Iterable[str]], Awaitable[None]]


def new_symbol() -> str:
    return f"F{uuid.uuid4().hex[:8].upper()}"


def vector(symbol: str, sequence: int, mid: str = "100.5") -> pb.FeatureVector:
    message = pb.FeatureVector(
        symbol=symbol,
        tick_sequence=sequence,
        feature_set_version="v1:test",
        tick_count=sequence,
        mid_price=decimal_pb2.Decimal(value=mid),
        rsi=55.5,
    )
    message.as_of.GetCurrentTime()
    return message


class VectorStoreSuite:
    """VectorStore: the last saved vector per symbol, whole, platform-wide."""

    async def test_a_symbol_never_saved_has_no_vector(self, vectors: VectorStore) -> None:
        assert await vectors.latest(new_symbol()) is None

    async def test_the_last_saved_vector_is_read_back_whole(self, vectors: VectorStore) -> None:
        a, b = new_symbol(), new_symbol()
        await vectors.save({a: vector(a, 1), b: vector(b, 7, mid="3.25")})
        got_a, got_b = await vectors.latest(a), await vectors.latest(b)
        assert got_a is not None and (got_a.symbol, got_a.tick_sequence, got_a.mid_price.value) == (
            a,
            1,
            "100.5",
        )
        assert got_b is not None and (got_b.tick_sequence, got_b.mid_price.value, got_b.rsi) == (
            7,
            "3.25",
            55.5,
        )
        await vectors.save({a: vector(a, 2, mid="101")})
        again = await vectors.latest(a)
        assert again is not None and (again.tick_sequence, again.mid_price.value) == (2, "101")
        assert await vectors.latest(b) == got_b  # untouched by a's save

    async def test_a_saved_vector_is_a_copy(self, vectors: VectorStore) -> None:
        symbol = new_symbol()
        mine = vector(symbol, 3)
        await vectors.save({symbol: mine})
        mine.tick_sequence = 99  # changing the caller's message changes nothing stored
        read = await vectors.latest(symbol)
        assert read is not None and read.tick_sequence == 3
        read.tick_sequence = 42
        again = await vectors.latest(symbol)
        assert again is not None and again.tick_sequence == 3

    async def test_saving_nothing_is_harmless(self, vectors: VectorStore) -> None:
        await vectors.save({})

    async def test_concurrent_saves_keep_one_whole_vector(self, vectors: VectorStore) -> None:
        symbol = new_symbol()
        await asyncio.gather(*(vectors.save({symbol: vector(symbol, i)}) for i in range(1, 9)))
        read = await vectors.latest(symbol)
        assert (
            read is not None and read.tick_sequence in range(1, 9) and read.tick_count == read.tick_sequence
        )


class InstrumentUniverseSuite:
    """InstrumentUniverse: unpublished until marketdata lists symbols, then listed or not."""

    async def test_before_marketdata_publishes_every_symbol_is_unpublished(
        self, universe: InstrumentUniverse
    ) -> None:
        assert await universe.listing(new_symbol()) is Listing.UNPUBLISHED

    async def test_listed_and_unlisted_symbols(
        self, universe: InstrumentUniverse, publish_universe: PublishUniverse
    ) -> None:
        listed, later, unlisted = new_symbol(), new_symbol(), new_symbol()
        await publish_universe([listed])
        assert await universe.listing(listed) is Listing.LISTED
        assert await universe.listing(unlisted) is Listing.UNLISTED
        await publish_universe([later])
        assert await universe.listing(later) is Listing.LISTED
        assert await universe.listing(listed) is Listing.LISTED
