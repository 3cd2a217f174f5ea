"""Risk's in-memory adapter passes the port's suite (tests/suites/risk_ports.py),
and its expiries follow its clock."""

from __future__ import annotations

import pytest
from trading.common.v1 import market_pb2

from services.risk.adapters.memory import MemoryRiskStore
from tests.suites.risk_ports import PutQuote, RiskStoreSuite, StoredRows, new_tenant, rows_of


class TestMemoryRiskStore(RiskStoreSuite):
    @pytest.fixture
    def store(self) -> MemoryRiskStore:
        return MemoryRiskStore()

    @pytest.fixture
    def put_quote(self, store: MemoryRiskStore) -> PutQuote:
        async def put(symbol: str, quote: market_pb2.Quote) -> None:
            store.put_quote(symbol, quote)

        return put

    @pytest.fixture
    def stored_rows(self, store: MemoryRiskStore) -> StoredRows:
        async def rows(tenant: str) -> list[tuple[str, bytes]]:
            return [(r.destination, r.envelope) for r in store.outbox(tenant)]

        return rows


async def test_an_alert_can_be_raised_again_a_minute_later() -> None:
    now = [1_000.0]
    store = MemoryRiskStore(clock=lambda: now[0])
    tenant = new_tenant()
    assert await store.alert_once(tenant, "STALE_QUOTE", "BTC-USD", rows_of(tenant, "1"))
    now[0] += 59.9
    assert not await store.alert_once(tenant, "STALE_QUOTE", "BTC-USD", rows_of(tenant, "2"))
    now[0] += 0.2
    assert await store.alert_once(tenant, "STALE_QUOTE", "BTC-USD", rows_of(tenant, "3"))
    assert len(store.outbox(tenant)) == 4
