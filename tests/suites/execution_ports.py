"""The contract of execution's storage ports (services/execution/ports.py), one
suite per port, run against every adapter: the in-memory ones
(tests/unit/services/execution/test_execution_ports_memory.py) and the real
PostgreSQL and Redis ones (tests/integration/storage/test_execution_ports_postgres.py).

A concrete class provides the fixtures: ``store`` (an :class:`OrderStore`) for
:class:`OrderStoreSuite`; ``quotes`` (a :class:`MarketQuotes`) and ``market``
(a :class:`MarketWriter`: writes the instrument set and quotes where those
quotes are read, as marketdata does) for :class:`MarketQuotesSuite`. Tenants
and symbols are unique per test, so the real adapters can share one server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Protocol

import pytest

from services.execution.domain import (
    Accept,
    Cancel,
    DuplicateFill,
    InvalidTransition,
    Order,
    OrderEvent,
    OrderInput,
    OrderStatus,
    OrderType,
    Quote,
    Reject,
    ReportFill,
    RequestCancel,
    Side,
    TimeInForce,
    apply_all,
    new_order,
)
from services.execution.outbox import outbox_rows
from services.execution.ports import Cursor, MarketQuotes, OrderFilter, OrderStore, StoredOrder

BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET
T0 = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)
# Expiries far in the future, so a real matcher sweeping the same database never expires them.
FAR = datetime(2999, 1, 1, tzinfo=UTC)


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def new_symbol() -> str:
    return f"X{uuid.uuid4().hex[:8].upper()}"


def make_order(
    tenant: str,
    symbol: str,
    *,
    side: Side = BUY,
    type: OrderType = LIMIT,
    tif: TimeInForce = TimeInForce.GTC,
    quantity: str = "2",
    limit: str | None = "100",
    client_order_id: str | None = None,
    created_at: datetime = T0,
    strategy_id: str = "s-1",
) -> Order:
    return new_order(
        order_id=str(uuid.uuid4()),
        tenant_id=tenant,
        client_order_id=client_order_id or f"c-{uuid.uuid4().hex[:12]}",
        symbol=symbol,
        side=side,
        type=type,
        time_in_force=tif,
        quantity=D(quantity),
        limit_price=D(limit) if limit is not None and type is LIMIT else None,
        created_at=created_at,
        strategy_id=strategy_id,
        venue="paper",
    )


def accept(at: datetime = T0) -> Accept:
    return Accept(at=at, venue="paper", venue_order_id="v-1")


def fill(price: str, quantity: str, *, at: datetime = T0, execution_id: str | None = None) -> ReportFill:
    return ReportFill(
        at=at, execution_id=execution_id or str(uuid.uuid4()), price=D(price), quantity=D(quantity)
    )


async def place(
    store: OrderStore,
    order: Order,
    *inputs: OrderInput,
    expires_at: datetime | None = None,
    request_hash: bytes = b"request-1",
) -> tuple[StoredOrder, tuple[OrderEvent, ...]]:
    """Store `order` in its state after `inputs` (what PlaceOrder does)."""
    final, events = apply_all(order, inputs)
    stored = await store.create(
        final, events, outbox_rows(events), request_hash=request_hash, expires_at=expires_at
    )
    assert stored is not None
    return stored, events


def bare(order: Order) -> Order:
    """How reads answer an order: without its execution ids."""
    return replace(order, execution_ids=frozenset())


def nothing(order: Order, expires_at: datetime | None) -> Sequence[OrderInput]:
    return ()


class OrderStoreSuite:
    """OrderStore: per-tenant orders, unique client order ids, atomic changes
    through the domain, newest-first keyset pages, and the matcher's
    cross-tenant scans."""

    async def test_a_placed_order_reads_back_by_either_id(self, store: OrderStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        order = make_order(tenant, sym, quantity="3", limit="100.125")
        stored, _ = await place(
            store, order, accept(), fill("100.125", "1", at=T0 + timedelta(seconds=1)), expires_at=FAR
        )
        assert stored.order.status is OrderStatus.PARTIALLY_FILLED
        for got in (
            await store.get(tenant, order_id=order.order_id),
            await store.get(tenant, client_order_id=order.client_order_id),
        ):
            assert got is not None
            assert got.order == bare(stored.order)
            assert (got.request_hash, got.expires_at) == (b"request-1", FAR)
            assert got.order.filled_notional == D("100.125")
            assert got.order.average_fill_price == D("100.125")

    async def test_a_market_order_has_no_limit_price_and_no_expiry(self, store: OrderStore) -> None:
        tenant = new_tenant()
        order = make_order(tenant, new_symbol(), side=SELL, type=MARKET, tif=TimeInForce.IOC)
        await place(store, order, Reject(at=T0, reason="RISK_TRADING_HALTED", message="halted"))
        got = await store.get(tenant, order_id=order.order_id)
        assert got is not None and got.expires_at is None
        assert got.order.limit_price is None
        assert (got.order.status, got.order.reject_reason, got.order.status_message) == (
            OrderStatus.REJECTED,
            "RISK_TRADING_HALTED",
            "halted",
        )

    async def test_client_order_ids_are_unique_per_tenant(self, store: OrderStore) -> None:
        tenant, other, sym = new_tenant(), new_tenant(), new_symbol()
        first = make_order(tenant, sym, client_order_id="same")
        await place(store, first, accept())
        again = make_order(tenant, sym, client_order_id="same", quantity="5")
        final, events = apply_all(again, [accept()])
        created = await store.create(
            final, events, outbox_rows(events), request_hash=b"request-2", expires_at=None
        )
        assert created is None
        assert await store.get(tenant, order_id=again.order_id) is None
        kept = await store.get(tenant, client_order_id="same")
        assert kept is not None
        assert (kept.order.order_id, kept.order.quantity, kept.request_hash) == (
            first.order_id,
            D(2),
            b"request-1",
        )
        # Another tenant may use the same client order id.
        theirs, _ = await place(store, make_order(other, sym, client_order_id="same"), accept())
        got = await store.get(other, client_order_id="same")
        assert got is not None and got.order.order_id == theirs.order.order_id

    async def test_concurrent_placements_of_one_client_order_id_insert_once(self, store: OrderStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        orders = [make_order(tenant, sym, client_order_id="race") for _ in range(5)]
        placed = [apply_all(o, [accept()]) for o in orders]
        results = await asyncio.gather(
            *(
                store.create(final, events, outbox_rows(events), request_hash=b"h", expires_at=None)
                for final, events in placed
            )
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        got = await store.get(tenant, client_order_id="race")
        assert got is not None and got.order.order_id == winners[0].order.order_id

    async def test_another_tenant_sees_and_changes_nothing(self, store: OrderStore) -> None:
        tenant, other, sym = new_tenant(), new_tenant(), new_symbol()
        order = make_order(tenant, sym)
        await place(store, order, accept())
        assert await store.get(other, order_id=order.order_id) is None
        assert await store.get(other, client_order_id=order.client_order_id) is None
        asked: list[Order] = []

        def cancel(o: Order, _expires: datetime | None) -> Sequence[OrderInput]:
            asked.append(o)
            return (RequestCancel(at=T0),)

        assert await store.update(other, cancel, outbox_rows, order_id=order.order_id) is None
        assert await store.update(other, cancel, outbox_rows, client_order_id=order.client_order_id) is None
        assert asked == []
        assert await store.page(other, where=OrderFilter(), after=None, limit=10) == []
        assert await store.open_orders(other, None) == []
        mine = await store.get(tenant, order_id=order.order_id)
        assert mine is not None and (mine.order.status, mine.order.version) == (OrderStatus.ACCEPTED, 2)

    async def test_update_applies_the_decided_inputs_and_stores_the_result(self, store: OrderStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        order = make_order(tenant, sym, quantity="4")
        first_fill = fill("99", "1", at=T0 + timedelta(seconds=1))
        await place(store, order, accept(), first_fill)
        seen: list[tuple[Order, datetime | None]] = []

        def fill_more(o: Order, expires_at: datetime | None) -> Sequence[OrderInput]:
            seen.append((o, expires_at))
            return (fill("101", "3", at=T0 + timedelta(seconds=2)),)

        result = await store.update(tenant, fill_more, outbox_rows, order_id=order.order_id)
        assert result is not None
        new, events = result
        # decide got the order as stored, with the execution ids it has.
        ((given, expires),) = seen
        assert given.execution_ids == {first_fill.execution_id}
        assert (given.version, expires) == (3, None)
        assert (new.status, new.filled_quantity, new.filled_notional, new.version) == (
            OrderStatus.FILLED,
            D(4),
            D(402),
            4,
        )
        assert [e.fill.quantity for e in events if e.fill is not None] == [D(3)]
        got = await store.get(tenant, client_order_id=order.client_order_id)
        assert got is not None and got.order == bare(new)
        assert got.order.updated_at == T0 + timedelta(seconds=2)

    async def test_a_redelivered_fill_is_refused_and_changes_nothing(self, store: OrderStore) -> None:
        tenant = new_tenant()
        order = make_order(tenant, new_symbol(), quantity="4")
        once = fill("99", "1")
        stored, _ = await place(store, order, accept(), once)

        def redeliver(o: Order, _expires: datetime | None) -> Sequence[OrderInput]:
            return (
                fill("99", "1", at=T0 + timedelta(seconds=5)),
                replace(once, at=T0 + timedelta(seconds=6)),
            )

        with pytest.raises(DuplicateFill):
            await store.update(tenant, redeliver, outbox_rows, order_id=order.order_id)
        got = await store.get(tenant, order_id=order.order_id)
        assert got is not None and got.order == bare(stored.order)

    async def test_an_invalid_step_or_an_error_in_decide_changes_nothing(self, store: OrderStore) -> None:
        tenant = new_tenant()
        order = make_order(tenant, new_symbol())
        stored, _ = await place(store, order, accept(), Cancel(at=T0))

        def refuse(o: Order, _expires: datetime | None) -> Sequence[OrderInput]:
            raise LookupError("decided against it")

        with pytest.raises(LookupError):
            await store.update(tenant, refuse, outbox_rows, order_id=order.order_id)
        with pytest.raises(InvalidTransition):
            await store.update(tenant, lambda o, e: (accept(),), outbox_rows, order_id=order.order_id)
        got = await store.get(tenant, order_id=order.order_id)
        assert got is not None and got.order == bare(stored.order)

    async def test_nothing_decided_changes_nothing(self, store: OrderStore) -> None:
        tenant = new_tenant()
        order = make_order(tenant, new_symbol())
        stored, _ = await place(store, order, accept(), fill("100", "1"))
        result = await store.update(tenant, nothing, outbox_rows, order_id=order.order_id)
        assert result is not None
        current, events = result
        assert events == ()
        assert current == stored.order  # as update hands it to decide: with its execution ids
        assert await store.update(tenant, nothing, outbox_rows, order_id=str(uuid.uuid4())) is None
        assert await store.update(tenant, nothing, outbox_rows, client_order_id="never-placed") is None

    async def test_pages_are_newest_first_and_resume_after_the_cursor(self, store: OrderStore) -> None:
        tenant, sym = new_tenant(), new_symbol()
        # Three orders at one instant (ordered by order id), two later ones.
        same = [make_order(tenant, sym) for _ in range(3)]
        later = [make_order(tenant, sym, created_at=T0 + timedelta(seconds=s)) for s in (1, 2)]
        for order in [*later, *same]:
            await place(store, order, accept())
        expected = [o.order_id for o in reversed(later)] + sorted(
            (o.order_id for o in same), key=uuid.UUID, reverse=True
        )
        seen: list[str] = []
        after: Cursor | None = None
        while True:
            page = await store.page(tenant, where=OrderFilter(), after=after, limit=2)
            seen += [o.order_id for o in page]
            if len(page) < 2:
                break
            after = Cursor(page[-1].created_at, page[-1].order_id)
        assert seen == expected
        assert all(
            not o.execution_ids for o in await store.page(tenant, where=OrderFilter(), after=None, limit=9)
        )

    async def test_page_filters(self, store: OrderStore) -> None:
        tenant, sym, other_sym = new_tenant(), new_symbol(), new_symbol()
        at = [T0 + timedelta(minutes=m) for m in range(4)]
        working = make_order(tenant, sym, created_at=at[0])
        done = make_order(tenant, sym, created_at=at[1], strategy_id="s-2")
        elsewhere = make_order(tenant, other_sym, created_at=at[2])
        rejected = make_order(tenant, sym, created_at=at[3])
        await place(store, working, accept())
        await place(store, done, accept(), fill("100", "2"))
        await place(store, elsewhere, accept())
        await place(store, rejected, Reject(at=at[3], reason="RISK_MAX_NOTIONAL_EXCEEDED"))

        async def ids(where: OrderFilter) -> list[str]:
            return [o.order_id for o in await store.page(tenant, where=where, after=None, limit=10)]

        assert await ids(OrderFilter(symbol=sym)) == [rejected.order_id, done.order_id, working.order_id]
        assert await ids(OrderFilter(statuses=(int(OrderStatus.FILLED), int(OrderStatus.REJECTED)))) == [
            rejected.order_id,
            done.order_id,
        ]
        assert await ids(OrderFilter(strategy_id="s-2")) == [done.order_id]
        # [from, to): the start is included, the end is not.
        assert await ids(OrderFilter(created_from=at[1], created_to=at[3])) == [
            elsewhere.order_id,
            done.order_id,
        ]
        assert await ids(OrderFilter(symbol=sym, statuses=(int(OrderStatus.CANCELED),))) == []

    async def test_open_orders_are_the_tenants_unfinished_ones_oldest_first(self, store: OrderStore) -> None:
        tenant, sym, other_sym = new_tenant(), new_symbol(), new_symbol()
        first = make_order(tenant, sym, created_at=T0)
        pending = make_order(tenant, sym, created_at=T0 + timedelta(seconds=1))
        partial = make_order(tenant, other_sym, created_at=T0 + timedelta(seconds=2))
        await place(store, make_order(tenant, sym), accept(), fill("100", "2"))  # filled: not open
        await place(store, partial, accept(), fill("100", "1"))
        await place(store, pending, accept(), RequestCancel(at=T0))
        await place(store, first, accept())
        everything = await store.open_orders(tenant, None)
        assert [o.order_id for o in everything] == [first.order_id, pending.order_id, partial.order_id]
        assert [o.status for o in everything] == [
            OrderStatus.ACCEPTED,
            OrderStatus.PENDING_CANCEL,
            OrderStatus.PARTIALLY_FILLED,
        ]
        assert [o.order_id for o in await store.open_orders(tenant, other_sym)] == [partial.order_id]

    async def test_marketable_orders_are_the_working_ones_the_touch_crosses(self, store: OrderStore) -> None:
        a, b, sym = new_tenant(), new_tenant(), new_symbol()
        buy_high = make_order(a, sym, side=BUY, limit="101", created_at=T0)
        buy_low = make_order(b, sym, side=BUY, limit="99")
        buy_market = make_order(
            b, sym, side=BUY, type=MARKET, tif=TimeInForce.DAY, created_at=T0 + timedelta(1)
        )
        sell_low = make_order(a, sym, side=SELL, limit="98", created_at=T0 + timedelta(2))
        sell_high = make_order(b, sym, side=SELL, limit="102")
        canceled = make_order(a, sym, side=BUY, limit="200")
        for order in (buy_high, buy_low, buy_market, sell_low, sell_high):
            await place(store, order, accept())
        await place(store, canceled, accept(), RequestCancel(at=T0))  # pending cancel: not working
        both = await store.marketable(sym, bid=D(99), ask=D(100))
        assert both == [(a, buy_high.order_id), (b, buy_market.order_id), (a, sell_low.order_id)]
        assert await store.marketable(sym, bid=None, ask=D(100)) == [
            (a, buy_high.order_id),
            (b, buy_market.order_id),
        ]
        assert await store.marketable(sym, bid=D(98), ask=None) == [(a, sell_low.order_id)]
        assert await store.marketable(sym, bid=D(99), ask=D(100), limit=1) == [(a, buy_high.order_id)]
        assert await store.marketable(new_symbol(), bid=D(99), ask=D(100)) == []

    async def test_working_symbols_name_each_symbol_with_working_orders(self, store: OrderStore) -> None:
        tenant, resting, done, pending = new_tenant(), new_symbol(), new_symbol(), new_symbol()
        await place(store, make_order(tenant, resting), accept())
        await place(store, make_order(new_tenant(), resting), accept(), fill("100", "1"))
        await place(store, make_order(tenant, done), accept(), fill("100", "2"))
        await place(store, make_order(tenant, pending), accept(), RequestCancel(at=T0))
        symbols = await store.working_symbols()
        assert symbols.count(resting) == 1
        assert done not in symbols and pending not in symbols

    async def test_due_expiries_are_open_orders_past_their_expiry_earliest_first(
        self, store: OrderStore
    ) -> None:
        tenant, sym = new_tenant(), new_symbol()
        day = TimeInForce.DAY
        late = make_order(tenant, sym, tif=day)
        early = make_order(tenant, sym, tif=day)
        pending = make_order(tenant, sym, tif=day)
        await place(store, late, accept(), expires_at=FAR + timedelta(hours=2))
        await place(store, early, accept(), fill("100", "1"), expires_at=FAR)
        await place(store, pending, accept(), RequestCancel(at=T0), expires_at=FAR + timedelta(hours=1))
        await place(store, make_order(tenant, sym, tif=day), accept(), Cancel(at=T0), expires_at=FAR)
        await place(store, make_order(tenant, sym, tif=day), Reject(at=T0, reason="RISK_X"), expires_at=FAR)
        await place(store, make_order(tenant, sym, tif=day), accept(), expires_at=FAR + timedelta(days=1))

        async def due(now: datetime) -> list[str]:
            return [oid for t, oid in await store.due_expiries(now) if t == tenant]

        assert await due(FAR - timedelta(seconds=1)) == []
        assert await due(FAR) == [early.order_id]
        assert await due(FAR + timedelta(hours=2)) == [early.order_id, pending.order_id, late.order_id]

    async def test_an_order_id_that_is_no_uuid_is_a_value_error(self, store: OrderStore) -> None:
        with pytest.raises(ValueError):
            await store.get(new_tenant(), order_id="not-a-uuid")


class MarketWriter(Protocol):
    """What marketdata writes to its cache (the suite's side of :class:`MarketQuotes`)."""

    async def list_instruments(self, symbols: Sequence[str]) -> None: ...

    async def put(self, quote: Quote) -> None: ...


def quote(symbol: str, bid: str = "99.5", ask: str = "100.25", sequence: int = 7) -> Quote:
    return Quote(symbol, D(bid), D("1.5"), D(ask), D("0.25"), sequence)


class MarketQuotesSuite:
    """MarketQuotes: each symbol's last quote, and which symbols are listed."""

    async def test_the_last_quote_is_the_newest_written(
        self, quotes: MarketQuotes, market: MarketWriter
    ) -> None:
        sym = new_symbol()
        assert await quotes.last_quote(sym) is None
        await market.put(quote(sym))
        assert await quotes.last_quote(sym) == quote(sym)
        await market.put(quote(sym, bid="99.75", ask="100", sequence=8))
        assert await quotes.last_quote(sym) == quote(sym, bid="99.75", ask="100", sequence=8)
        assert await quotes.last_quote(new_symbol()) is None

    async def test_listed_or_quoted_symbols_are_listed_others_not(
        self, quotes: MarketQuotes, market: MarketWriter
    ) -> None:
        listed, quoted, unknown = new_symbol(), new_symbol(), new_symbol()
        await market.list_instruments([listed])
        await market.put(quote(quoted))
        assert await quotes.lists(listed)
        assert await quotes.lists(quoted)
        assert not await quotes.lists(unknown)
