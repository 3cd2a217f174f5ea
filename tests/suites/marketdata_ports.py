"""The contracts of marketdata's ports (services.marketdata.ports), run against
each adapter: the ``TestMemory*`` classes (unit) and ``TestPostgresInstrumentStore``
/ ``TestRedisQuoteCache`` (integration) subclass these suites and provide the
``store`` / ``cache`` fixture.

The instrument store is read-only, so its suite's fixture is built from
:func:`instruments`: rows whose symbols share a prefix no other instrument has
(``after=prefix`` lists exactly them)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
from trading.common.v1 import decimal_pb2, market_pb2

from services.marketdata.ports import InstrumentFilter, InstrumentRow, InstrumentStore, QuoteCache


@dataclass(frozen=True)
class Universe:
    """Instruments a store was built with, all starting with `prefix`."""

    prefix: str
    rows: tuple[InstrumentRow, ...]

    @property
    def symbols(self) -> list[str]:
        return sorted(r.symbol for r in self.rows)


def instruments() -> Universe:
    """Six instruments of one test; symbols after every seeded one ("Z...")."""
    prefix = "Z" + uuid.uuid4().hex[:7].upper()

    def row(n: int, quote: str, asset_class: str, status: str) -> InstrumentRow:
        base = f"{prefix}{n}"
        return InstrumentRow(
            symbol=f"{base}-{quote}",
            base_asset=base,
            quote_asset=quote,
            asset_class=asset_class,
            tick_size=Decimal("0.01"),
            lot_size=Decimal("0.001"),
            min_quantity=Decimal("0.001"),
            status=status,
            description=f"test instrument {n}",
        )

    return Universe(
        prefix,
        (
            row(1, "USD", "CRYPTO", "TRADING"),
            row(2, "EUR", "CRYPTO", "TRADING"),
            row(3, "USD", "FX", "HALTED"),
            row(4, "USD", "EQUITY", "TRADING"),
            row(5, "EUR", "EQUITY", "DELISTED"),
            row(6, "USD", "CRYPTO", "TRADING"),
        ),
    )


class InstrumentStoreSuite:
    """Lookups, ordering by symbol, keyset paging and filters."""

    @pytest.fixture
    def universe(self) -> Universe:
        return instruments()

    async def test_an_instrument_reads_back_as_listed(
        self, store: InstrumentStore, universe: Universe
    ) -> None:
        first = universe.rows[0]
        assert await store.get(first.symbol) == first
        assert await store.get(universe.prefix + "9-USD") is None

    async def test_listing_pages_by_symbol(self, store: InstrumentStore, universe: Universe) -> None:
        everything = InstrumentFilter()
        first = await store.list(after=universe.prefix, limit=4, where=everything)
        rest = await store.list(after=first[-1].symbol, limit=4, where=everything)
        assert [r.symbol for r in first + rest] == universe.symbols
        assert await store.list(after=rest[-1].symbol, limit=4, where=everything) == []

    async def test_filters_combine(self, store: InstrumentStore, universe: Universe) -> None:
        async def symbols(where: InstrumentFilter) -> list[str]:
            return [r.symbol for r in await store.list(after=universe.prefix, limit=100, where=where)]

        p = universe.prefix
        assert await symbols(InstrumentFilter(status="TRADING")) == [
            f"{p}1-USD",
            f"{p}2-EUR",
            f"{p}4-USD",
            f"{p}6-USD",
        ]
        assert await symbols(InstrumentFilter(asset_class="EQUITY")) == [f"{p}4-USD", f"{p}5-EUR"]
        assert await symbols(InstrumentFilter(quote_asset="EUR")) == [f"{p}2-EUR", f"{p}5-EUR"]
        assert await symbols(InstrumentFilter(status="TRADING", asset_class="CRYPTO", quote_asset="USD")) == [
            f"{p}1-USD",
            f"{p}6-USD",
        ]
        assert await symbols(InstrumentFilter(status="DELISTED", asset_class="FX")) == []

    async def test_symbols_existing_and_trading(self, store: InstrumentStore, universe: Universe) -> None:
        mine = set(universe.symbols)
        every = list(await store.symbols())
        assert every == sorted(every)
        assert [s for s in every if s in mine] == universe.symbols  # whatever the status
        unknown = universe.prefix + "9-USD"
        assert await store.existing([*universe.symbols[:2], unknown]) == set(universe.symbols[:2])
        assert await store.existing([]) == set()
        trading = [r for r in await store.trading() if r.symbol in mine]
        assert [r.symbol for r in trading] == [r.symbol for r in universe.rows if r.status == "TRADING"]


def quote(symbol: str, sequence: int, bid: str = "100.25") -> market_pb2.Quote:
    return market_pb2.Quote(
        symbol=symbol,
        sequence=sequence,
        source="test",
        bid_price=decimal_pb2.Decimal(value=bid),
        ask_price=decimal_pb2.Decimal(value="100.5"),
    )


class QuoteCacheSuite:
    """The last write of each symbol wins; unknown symbols have no quote."""

    async def test_the_last_quote_of_each_symbol_is_kept(self, cache: QuoteCache) -> None:
        a, b = f"QA{uuid.uuid4().hex[:6].upper()}", f"QB{uuid.uuid4().hex[:6].upper()}"
        await cache.put_latest({a: quote(a, 1).SerializeToString(), b: quote(b, 1).SerializeToString()})
        await cache.put_latest({a: quote(a, 2, bid="101").SerializeToString()})
        assert await cache.latest(a) == quote(a, 2, bid="101")
        assert await cache.latest(b) == quote(b, 1)

    async def test_unknown_symbols_have_no_quote(self, cache: QuoteCache) -> None:
        known, unknown = f"QK{uuid.uuid4().hex[:6].upper()}", f"QU{uuid.uuid4().hex[:6].upper()}"
        await cache.put_latest({known: quote(known, 7).SerializeToString()})
        assert await cache.latest(unknown) is None
        assert await cache.latest_many([unknown, known, unknown]) == [None, quote(known, 7), None]
        assert await cache.latest_many([]) == []
        await cache.put_latest({})
