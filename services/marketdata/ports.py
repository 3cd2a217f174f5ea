"""The interfaces marketdata's servicer and tick pipeline depend on, and their values.

- :class:`InstrumentStore`: the instrument universe (`adapters.postgres`,
  `adapters.memory`);
- :class:`QuoteCache`: the last quote of each symbol (`adapters.redis`,
  `adapters.memory`).

One suite per port (``tests/suites/marketdata_ports.py``) runs against both
of its adapters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from trading.common.v1 import market_pb2


@dataclass(frozen=True, slots=True)
class InstrumentRow:
    """One instrument (status and asset class by their contract enum names,
    without the prefix: ``TRADING``, ``CRYPTO``)."""

    symbol: str
    base_asset: str
    quote_asset: str
    asset_class: str
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    status: str
    description: str


@dataclass(frozen=True, slots=True)
class InstrumentFilter:
    """Optional filters of ListInstruments; None means "any"."""

    status: str | None = None
    asset_class: str | None = None
    quote_asset: str | None = None


class InstrumentStore(Protocol):
    """Instrument reference data, platform-wide (no tenant): read-only here
    (the migrations seed it). Symbols are unique; every listing is ordered by
    symbol and keyset-paged by it."""

    async def get(self, symbol: str) -> InstrumentRow | None:
        """The instrument, or None."""
        ...

    async def list(self, *, after: str, limit: int, where: InstrumentFilter) -> list[InstrumentRow]:
        """Up to `limit` instruments matching `where` with symbol > `after`, ordered by symbol."""
        ...

    async def symbols(self) -> Sequence[str]:
        """Every listed symbol, whatever its status (what normalisation accepts), ordered."""
        ...

    async def existing(self, symbols: Sequence[str]) -> set[str]:
        """The subset of `symbols` that are instruments."""
        ...

    async def trading(self) -> Sequence[InstrumentRow]:
        """Instruments in TRADING status (what the synthetic feed quotes by default), ordered."""
        ...


class QuoteCache(Protocol):
    """The last quote of each symbol, shared by every process that reads quotes
    (risk, portfolio, the gateway read the same keys: runtime.market_cache).

    Values are a Quote's serialized bytes (a Tick's bytes are its quote's:
    the messages share their fields). A write replaces the symbol's quote;
    the last write wins."""

    async def put_latest(self, quotes: Mapping[str, bytes]) -> None:
        """Store the quote bytes of each symbol in one round trip."""
        ...

    async def latest(self, symbol: str) -> market_pb2.Quote | None:
        """The symbol's last quote, or None when none was written."""
        ...

    async def latest_many(self, symbols: Sequence[str]) -> list[market_pb2.Quote | None]:
        """The last quote of each of `symbols`, aligned with them (None: none yet)."""
        ...
