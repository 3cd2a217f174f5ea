"""The contract of the portfolio's ports (services/portfolio/ports.py), one
suite per port, run against every adapter: the in-memory ones
(tests/unit/services/portfolio/test_portfolio_ports_memory.py) and the real
PostgreSQL and Redis ones (tests/integration/storage/test_portfolio_ports_postgres.py).

A concrete class provides the fixtures: ``store`` (a :class:`BookStore` with
the default starting cash) for :class:`BookStoreSuite`; ``quotes`` (a
:class:`QuoteCache`) and ``put_quote`` (writes a symbol's last quote where
that cache reads it) for :class:`QuoteCacheSuite`. Tenants and symbols are
unique per test, so the real adapters can share one server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from trading.common.v1 import decimal_pb2, market_pb2
from trading.portfolio.v1 import events_pb2 as portfolio_events

from runtime.messaging import new_envelope
from runtime.outbox import KAFKA, OutboxRow, outbox_row
from services.portfolio import domain
from services.portfolio.ports import AppliedFill, BookStore, FillRecord, QuoteCache

BUY, SELL = domain.Side.BUY, domain.Side.SELL
START = domain.DEFAULT_STARTING_CASH
T0 = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)

PutQuote = Callable[[str, market_pb2.Quote], Awaitable[None]]


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def new_symbol() -> str:
    return f"P{uuid.uuid4().hex[:8].upper()}"


def record(event_id: str | None = None, execution_id: str | None = None) -> FillRecord:
    return FillRecord(
        event_id or str(uuid.uuid4()), execution_id or str(uuid.uuid4()), f"o-{uuid.uuid4().hex[:8]}"
    )


def fill(symbol: str, side: domain.Side, qty: str, price: str, fee: str = "0") -> domain.Fill:
    return domain.Fill(symbol, side, D(qty), D(price), D(fee))


def announcement(tenant: str, applied: AppliedFill) -> list[OutboxRow]:
    """A PositionChanged row as the fill consumer writes one (the payload is what the rows carry)."""
    payload = portfolio_events.PositionChanged(symbol=applied.outcome.position.symbol)
    envelope = new_envelope(payload, tenant_id=tenant, correlation_id="suite", producer="portfolio-suite")
    return [outbox_row(envelope, KAFKA, partition_key=f"{tenant}/{payload.symbol}")]


class BookStoreSuite:
    """BookStore: per-tenant books, fills applied once by event or execution id,
    atomically with their announcement, positions ordered by symbol."""

    async def test_a_tenant_without_fills_has_the_starting_account_and_no_positions(
        self, store: BookStore
    ) -> None:
        books = await store.books(new_tenant())
        assert (books.account.currency, books.account.cash, books.account.version) == ("USD", START, 0)
        assert books.positions == ()
        assert books.updated_at == {}
        assert store.starting_cash == START

    async def test_fills_move_position_cash_and_version(self, store: BookStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        first = await store.apply_fill(tenant, record(), fill(sym, BUY, "2", "100", "0.5"), now=T0)
        assert first is not None
        assert first.outcome.previous_quantity == 0
        assert first.outcome.cash_change == D("-200.5")
        assert (first.account.cash, first.account.version) == (START - D("200.5"), 1)
        assert first.updated_at == T0
        # Sell 3 at 110: realises (110 - 100) x 2 = 20, flips to short 1 opened at 110.
        later = T0 + timedelta(seconds=1)
        second = await store.apply_fill(tenant, record(), fill(sym, SELL, "3", "110", "0.25"), now=later)
        assert second is not None
        assert second.outcome.previous_quantity == 2
        assert second.outcome.realized_pnl_change == 20
        assert (second.account.cash, second.account.version) == (START - D("200.5") + D("329.75"), 2)

        books = await store.books(tenant)
        (position,) = books.positions
        assert (position.symbol, position.quantity, position.average_price) == (sym, D(-1), D(110))
        assert (position.realized_pnl, position.fees_paid, position.version) == (D(20), D("0.75"), 2)
        assert books.account.cash == START + D("129.25")
        assert books.account.version == 2
        assert books.updated_at == {sym: later}

    async def test_a_redelivered_event_id_changes_nothing(self, store: BookStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        again = record()
        assert await store.apply_fill(tenant, again, fill(sym, BUY, "1", "50")) is not None
        other_execution = FillRecord(again.event_id, str(uuid.uuid4()), again.order_id)
        assert await store.apply_fill(tenant, other_execution, fill(sym, BUY, "1", "50")) is None
        books = await store.books(tenant)
        assert books.positions[0].quantity == 1
        assert (books.account.cash, books.account.version) == (START - 50, 1)

    async def test_a_reemitted_execution_id_changes_nothing(self, store: BookStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        first = record()
        assert await store.apply_fill(tenant, first, fill(sym, SELL, "1", "50")) is not None
        reemitted = FillRecord(str(uuid.uuid4()), first.execution_id, first.order_id)
        assert await store.apply_fill(tenant, reemitted, fill(sym, SELL, "1", "50")) is None
        assert (await store.books(tenant)).positions[0].quantity == -1

    async def test_ids_are_unique_per_tenant_only(self, store: BookStore) -> None:
        a, b, sym = new_tenant(), new_tenant(), new_symbol()
        shared = record()
        assert await store.apply_fill(a, shared, fill(sym, BUY, "1", "10")) is not None
        assert await store.apply_fill(b, shared, fill(sym, BUY, "4", "10")) is not None
        assert (await store.books(a)).positions[0].quantity == 1
        assert (await store.books(b)).positions[0].quantity == 4

    async def test_a_tenant_never_sees_another_tenants_books(self, store: BookStore) -> None:
        a, b, sym = new_tenant(), new_tenant(), new_symbol()
        await store.apply_fill(a, record(), fill(sym, BUY, "3", "10"))
        books = await store.books(b)
        assert books.positions == ()
        assert (books.account.cash, books.account.version) == (START, 0)
        assert (await store.books(b, symbol=sym)).positions == ()

    async def test_positions_are_ordered_by_symbol_flat_ones_kept_and_filtered_by_symbol(
        self, store: BookStore
    ) -> None:
        tenant, base = new_tenant(), new_symbol()
        c, a, b = f"{base}-C", f"{base}-A", f"{base}-B"
        for sym in (c, a, b):
            await store.apply_fill(tenant, record(), fill(sym, BUY, "1", "10"))
        await store.apply_fill(tenant, record(), fill(b, SELL, "1", "12"))  # flat, realised 2
        books = await store.books(tenant)
        assert [p.symbol for p in books.positions] == [a, b, c]
        flat = books.positions[1]
        assert (flat.quantity, flat.average_price, flat.realized_pnl, flat.version) == (D(0), None, D(2), 2)
        only = await store.books(tenant, symbol=b)
        assert [p.symbol for p in only.positions] == [b]
        assert set(only.updated_at) == {b}
        assert only.account == books.account
        assert (await store.books(tenant, symbol=f"{base}-Z")).positions == ()

    async def test_announce_sees_the_applied_fill_and_is_skipped_for_a_duplicate(
        self, store: BookStore
    ) -> None:
        tenant, sym = new_tenant(), new_symbol()
        seen: list[AppliedFill] = []

        def announce(applied: AppliedFill) -> list[OutboxRow]:
            seen.append(applied)
            return announcement(tenant, applied)

        once = record()
        applied = await store.apply_fill(tenant, once, fill(sym, BUY, "1", "10"), now=T0, announce=announce)
        assert seen == [applied]
        assert await store.apply_fill(tenant, once, fill(sym, BUY, "1", "10"), announce=announce) is None
        assert len(seen) == 1

    async def test_a_failing_announce_stores_nothing(self, store: BookStore) -> None:
        tenant, sym = new_tenant(), new_symbol()

        def announce(applied: AppliedFill) -> list[OutboxRow]:
            raise RuntimeError("cannot announce")

        retried = record()
        with pytest.raises(RuntimeError, match="cannot announce"):
            await store.apply_fill(tenant, retried, fill(sym, BUY, "1", "10"), announce=announce)
        books = await store.books(tenant)
        assert books.positions == ()
        assert (books.account.cash, books.account.version) == (START, 0)
        # Not recorded as applied either: the redelivery applies it.
        assert await store.apply_fill(tenant, retried, fill(sym, BUY, "1", "10")) is not None

    async def test_concurrent_fills_of_one_tenant_all_apply_exactly(self, store: BookStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        fills = [fill(sym, BUY if i % 3 else SELL, "0.5", str(100 + i), "0.01") for i in range(12)]
        results = await asyncio.gather(*(store.apply_fill(tenant, record(), f) for f in fills))
        assert all(r is not None for r in results)
        books = await store.books(tenant)
        assert books.account.version == 12
        assert books.account.cash == START + sum((f.cash_change for f in fills), D(0))
        assert books.positions[0].quantity == sum((f.signed_quantity for f in fills), D(0))
        assert books.positions[0].version == 12

    async def test_concurrent_redeliveries_apply_once(self, store: BookStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        same = record()
        results = await asyncio.gather(
            *(store.apply_fill(tenant, same, fill(sym, BUY, "1", "10")) for _ in range(5))
        )
        assert sum(r is not None for r in results) == 1
        assert (await store.books(tenant)).account.version == 1


def quote(
    *,
    bid: str = "",
    ask: str = "",
    last: str = "",
    exchange_time: datetime | None = None,
    receive_time: datetime | None = None,
) -> market_pb2.Quote:
    message = market_pb2.Quote(
        bid_price=decimal_pb2.Decimal(value=bid),
        ask_price=decimal_pb2.Decimal(value=ask),
        last_price=decimal_pb2.Decimal(value=last),
    )
    if exchange_time is not None:
        message.exchange_time.FromDatetime(exchange_time)
    if receive_time is not None:
        message.receive_time.FromDatetime(receive_time)
    return message


class QuoteCacheSuite:
    """QuoteCache: marks of the symbols with a usable quote, the others left out."""

    async def test_a_two_sided_quote_marks_at_the_mid_timed_by_the_exchange(
        self, quotes: QuoteCache, put_quote: PutQuote
    ) -> None:
        sym = new_symbol()
        await put_quote(
            sym, quote(bid="99.5", ask="100.25", last="1", exchange_time=T0, receive_time=T0 + timedelta(1))
        )
        assert await quotes.marks([sym]) == {sym: domain.Mark(D("99.875"), T0)}

    async def test_a_one_sided_quote_marks_at_the_last_trade_timed_by_receipt(
        self, quotes: QuoteCache, put_quote: PutQuote
    ) -> None:
        sym = new_symbol()
        await put_quote(sym, quote(bid="99", last="98.5", receive_time=T0))
        assert await quotes.marks([sym]) == {sym: domain.Mark(D("98.5"), T0)}

    async def test_symbols_without_a_usable_quote_are_left_out(
        self, quotes: QuoteCache, put_quote: PutQuote
    ) -> None:
        priced, unpriced, unquoted = new_symbol(), new_symbol(), new_symbol()
        await put_quote(priced, quote(last="7"))
        await put_quote(unpriced, quote(bid="5"))  # one side, no last trade: no mark
        marks = await quotes.marks([unquoted, priced, unpriced, priced])
        assert marks == {priced: domain.Mark(D(7), None)}
        assert await quotes.marks([]) == {}

    async def test_the_last_quote_written_is_the_one_read(
        self, quotes: QuoteCache, put_quote: PutQuote
    ) -> None:
        sym = new_symbol()
        await put_quote(sym, quote(last="7"))
        await put_quote(sym, quote(bid="8", ask="9"))
        assert await quotes.marks(iter([sym])) == {sym: domain.Mark(D("8.5"), None)}
