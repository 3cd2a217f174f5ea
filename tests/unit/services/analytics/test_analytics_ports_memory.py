"""Analytics' in-memory store passes the port's suite (tests/suites/analytics_ports.py)."""

from __future__ import annotations

import pytest

from services.analytics.adapters.memory import MemoryAnalyticsStore
from services.analytics.ports import StoreUnavailableError
from tests.suites.analytics_ports import BASE, BUDGET, AnalyticsStoreSuite, new_symbol, trade


class TestMemoryAnalyticsStore(AnalyticsStoreSuite):
    @pytest.fixture
    def store(self) -> MemoryAnalyticsStore:
        return MemoryAnalyticsStore()

    async def test_a_store_taken_down_refuses_reads_until_it_comes_back(
        self, store: MemoryAnalyticsStore
    ) -> None:
        symbol = new_symbol()
        await store.write([trade(symbol, BASE, "10", "1")])
        store.go_down(retry_after_s=2.5)
        assert await store.ping() is False
        with pytest.raises(StoreUnavailableError) as down:
            await store.marks([symbol], BASE + 1, BUDGET)
        assert down.value.retry_after_s == 2.5
        store.come_back()
        assert await store.marks([symbol], BASE + 1, BUDGET) != {}
