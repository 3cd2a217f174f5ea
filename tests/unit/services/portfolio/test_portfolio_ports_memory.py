"""The portfolio's in-memory adapters pass the ports' suites (tests/suites/portfolio_ports.py)."""

from __future__ import annotations

import pytest
from trading.common.v1 import market_pb2

from runtime.outbox import OutboxRow
from services.portfolio import domain
from services.portfolio.adapters.memory import MemoryBookStore, MemoryQuoteCache
from services.portfolio.ports import AppliedFill
from tests.suites.portfolio_ports import (
    BookStoreSuite,
    PutQuote,
    QuoteCacheSuite,
    announcement,
    fill,
    new_symbol,
    new_tenant,
    record,
)


class TestMemoryBookStore(BookStoreSuite):
    @pytest.fixture
    def store(self) -> MemoryBookStore:
        return MemoryBookStore()

    async def test_announced_rows_are_kept_per_tenant_with_their_fill(self, store: MemoryBookStore) -> None:
        tenant, other, sym = new_tenant(), new_tenant(), new_symbol()

        def announce(applied: AppliedFill) -> list[OutboxRow]:
            return announcement(tenant, applied)

        await store.apply_fill(tenant, record(), fill(sym, domain.Side.BUY, "1", "10"), announce=announce)
        rows = store.outbox(tenant)
        assert [(r.tenant_id, r.partition_key) for r in rows] == [(tenant, f"{tenant}/{sym}")]
        assert store.outbox(other) == []


class TestMemoryQuoteCache(QuoteCacheSuite):
    @pytest.fixture
    def quotes(self) -> MemoryQuoteCache:
        return MemoryQuoteCache()

    @pytest.fixture
    def put_quote(self, quotes: MemoryQuoteCache) -> PutQuote:
        async def put(symbol: str, quote: market_pb2.Quote) -> None:
            quotes.put(symbol, quote)

        return put
