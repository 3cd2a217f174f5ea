"""Marketdata's ports in process memory, for servicer tests: the instruments
and last quotes with the PostgreSQL and Redis adapters' behaviour (the same
port suites, ``tests/suites/marketdata_ports.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from trading.common.v1 import market_pb2

from services.marketdata.ports import InstrumentFilter, InstrumentRow


class MemoryInstrumentStore:
    """The InstrumentStore port on a fixed set of instruments."""

    def __init__(self, instruments: Iterable[InstrumentRow]) -> None:
        self._rows = {row.symbol: row for row in instruments}

    def _ordered(self) -> list[InstrumentRow]:
        # Symbols compare as PostgreSQL's C collation does: by code point.
        return [self._rows[s] for s in sorted(self._rows)]

    async def get(self, symbol: str) -> InstrumentRow | None:
        return self._rows.get(symbol)

    async def list(self, *, after: str, limit: int, where: InstrumentFilter) -> list[InstrumentRow]:
        found = (
            row
            for row in self._ordered()
            if row.symbol > after
            and (where.status is None or row.status == where.status)
            and (where.asset_class is None or row.asset_class == where.asset_class)
            and (where.quote_asset is None or row.quote_asset == where.quote_asset)
        )
        return [row for _, row in zip(range(limit), found, strict=False)]

    async def symbols(self) -> Sequence[str]:
        return sorted(self._rows)

    async def existing(self, symbols: Sequence[str]) -> set[str]:
        return {s for s in symbols if s in self._rows}

    async def trading(self) -> Sequence[InstrumentRow]:
        return [row for row in self._ordered() if row.status == "TRADING"]


class MemoryQuoteCache:
    """The QuoteCache port in a dict."""

    def __init__(self) -> None:
        self._quotes: dict[str, bytes] = {}

    async def put_latest(self, quotes: Mapping[str, bytes]) -> None:
        self._quotes.update(quotes)

    async def latest(self, symbol: str) -> market_pb2.Quote | None:
        data = self._quotes.get(symbol)
        return None if data is None else market_pb2.Quote.FromString(data)

    async def latest_many(self, symbols: Sequence[str]) -> list[market_pb2.Quote | None]:
        return [await self.latest(s) for s in symbols]
