"""Execution's in-memory adapters pass the ports' suites (tests/suites/execution_ports.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.execution.adapters.memory import MemoryMarketQuotes, MemoryOrderStore
from services.execution.domain import Quote
from services.execution.outbox import outbox_rows
from tests.suites.execution_ports import (
    MarketQuotesSuite,
    OrderStoreSuite,
    accept,
    fill,
    make_order,
    new_symbol,
    new_tenant,
    place,
)


class TestMemoryOrderStore(OrderStoreSuite):
    @pytest.fixture
    def store(self) -> MemoryOrderStore:
        return MemoryOrderStore()

    async def test_executions_and_outbox_rows_are_kept_with_their_change(
        self, store: MemoryOrderStore
    ) -> None:
        tenant = new_tenant()
        order = make_order(tenant, new_symbol())
        _, events = await place(store, order, accept(), fill("100", "1"))
        assert [(t, f.order_id) for t, f in store.executions] == [(tenant, order.order_id)]
        assert [r.event_type for r in store.outbox] == [r.event_type for r in outbox_rows(events)]
        assert {r.partition_key for r in store.outbox} == {order.order_id}
        assert [r.destination for r in store.outbox] == ["kafka", "nats", "kafka", "nats"]


class MemoryMarket:
    """Writes to a MemoryMarketQuotes as marketdata writes to its cache."""

    def __init__(self, quotes: MemoryMarketQuotes) -> None:
        self._quotes = quotes

    async def list_instruments(self, symbols: Sequence[str]) -> None:
        self._quotes.list_instruments(symbols)

    async def put(self, quote: Quote) -> None:
        self._quotes.put(quote)


class TestMemoryMarketQuotes(MarketQuotesSuite):
    @pytest.fixture
    def quotes(self) -> MemoryMarketQuotes:
        return MemoryMarketQuotes()

    @pytest.fixture
    def market(self, quotes: MemoryMarketQuotes) -> MemoryMarket:
        return MemoryMarket(quotes)

    async def test_every_symbol_is_listed_before_an_instrument_set_exists(
        self, quotes: MemoryMarketQuotes
    ) -> None:
        assert await quotes.lists(new_symbol())
