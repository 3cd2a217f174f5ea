"""The marketdata port suites on the in-memory adapters."""

from __future__ import annotations

import pytest

from services.marketdata.adapters.memory import MemoryInstrumentStore, MemoryQuoteCache
from tests.suites.marketdata_ports import InstrumentStoreSuite, QuoteCacheSuite, Universe


class TestMemoryInstrumentStore(InstrumentStoreSuite):
    @pytest.fixture
    def store(self, universe: Universe) -> MemoryInstrumentStore:
        return MemoryInstrumentStore(universe.rows)


class TestMemoryQuoteCache(QuoteCacheSuite):
    @pytest.fixture
    def cache(self) -> MemoryQuoteCache:
        return MemoryQuoteCache()
