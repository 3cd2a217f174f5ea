"""The hot path end to end, every service its own process as `./dev run` runs
them (tools.supervisor), isolated: its own database, Redis, NATS and tansu.

marketdata's synthetic feed quotes two symbols; features turns the ticks into
vectors; a fresh tenant (created in identity by the platform operator)
turns a strategy on through decision's SetStrategy (gRPC over mutual TLS,
as the gateway, with a context token for the tenant), with a threshold low
enough that the trained models trade within seconds; decision places market
IOC orders with execution under identity's delegation for the tenant;
execution checks them with risk and fills them on the paper venue; the
outbox relay publishes order and fill events to Kafka; portfolio books the
fills. Once the strategy is off and everything has settled, the test
checks, exactly in Decimal:

- orders: all placed by the strategy (its deterministic client order ids),
  and each order's fills (read from Kafka) add up to its filled quantity and
  average fill price (ListOrders);
- Kafka: every order's events are there once each and in order: versions
  2..final with no gap or repeat, increasing in offset order on each topic,
  the last one equal to the final order (ListOrders);
- positions (GetPositions) equal the sum of fills per instrument;
- the books replayed from the fills in the order portfolio applied them (its
  PositionChanged events name the execution and the position version) give
  exactly each step's quantity, average price, realised PnL and its change,
  and the final positions;
- cash equals the starting cash minus the signed notional of the fills minus
  fees; market value, unrealised PnL, equity and the totals (GetPortfolio)
  equal the recomputation at the marks the response reports; and, whatever
  the order of the fills, realised + unrealised - fees = equity - starting cash.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf import duration_pb2
from trading.common.v1 import decimal_pb2
from trading.common.v1 import types_pb2 as common_types
from trading.decision.v1 import decision_service_pb2 as dpb
from trading.decision.v1 import decision_service_pb2_grpc as dpb_grpc
from trading.execution.v1 import events_pb2 as exec_events
from trading.execution.v1 import execution_service_pb2 as epb
from trading.execution.v1 import execution_service_pb2_grpc as epb_grpc
from trading.execution.v1 import types_pb2 as exec_types
from trading.identity.v1 import identity_service_pb2 as ipb
from trading.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from trading.portfolio.v1 import events_pb2 as portfolio_events
from trading.portfolio.v1 import portfolio_service_pb2 as ppb
from trading.portfolio.v1 import portfolio_service_pb2_grpc as ppb_grpc
from trading.portfolio.v1 import types_pb2 as portfolio_types

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.decimals import from_proto
from runtime.messaging import decode_envelope, unpack
from services.decision import train
from services.decision.settings import TrainingSettings
from services.identity.seed import PLATFORM_SLUG
from services.portfolio.domain import DEFAULT_STARTING_CASH
from tests.support.gateway_stack import OPERATOR_EMAIL, OPERATOR_PASSWORD
from tests.support.polling import eventually
from tests.support.security import as_user, secure_channel
from tools.supervisor import isolated_settings, platform_running

if TYPE_CHECKING:
    from trading.decision.v1.decision_service_pb2_grpc import DecisionServiceAsyncStub
    from trading.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub
    from trading.portfolio.v1.portfolio_service_pb2_grpc import PortfolioServiceAsyncStub

T = TypeVar("T")

# The hot path, and identity: decision places a strategy's orders under a
# delegation from identity. The gateway and the analytics/audit/notification
# processes play no part in it and would only slow the start on 2 cores.
SERVICES = ("identity", "marketdata", "features", "risk", "execution", "portfolio", "decision")
SYMBOLS = ("BTC-USD", "ETH-USD")
QUANTITY = Decimal("0.01")
ORDERS_TOPIC = "trading.execution.orders"
FILLS_TOPIC = "trading.execution.fills"
POSITIONS_TOPIC = "trading.portfolio.positions"
# Filled orders to wait for: in all, and of each symbol.
WANT_FILLED = 8
WANT_FILLED_PER_SYMBOL = 2
# How long to wait, at most, for the strategy to also reduce a position.
REDUCE_WAIT_S = 15.0

TERMINAL = frozenset(
    {
        exec_types.ORDER_STATUS_FILLED,
        exec_types.ORDER_STATUS_CANCELED,
        exec_types.ORDER_STATUS_REJECTED,
        exec_types.ORDER_STATUS_EXPIRED,
    }
)
FIRST_EVENTS = frozenset(
    {exec_events.OrderAccepted.DESCRIPTOR.full_name, exec_events.OrderRejected.DESCRIPTOR.full_name}
)

# Exact arithmetic: any rounding raises. The one rounding the books do is the
# re-weighted average price, half-even to the contract's 12 fractional digits.
EXACT = Context(prec=100, traps=[Inexact])
DIVIDE = Context(prec=100, rounding=ROUND_HALF_EVEN)
QUANTUM = Decimal("1e-12")
ZERO = Decimal(0)


SCOPES = ("strategies:read", "strategies:write", "orders:read", "portfolio:read")


def _md(hot: Hot, service: str, tenant: str) -> tuple[tuple[str, str], ...]:
    """A call to `service` for `tenant` (the user the gateway verified), with the platform's certificates."""
    return as_user(hot.settings, service, tenant, subject="user-e2e", scopes=SCOPES)


async def trading_models(settings: Settings, symbols: Sequence[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Decision ready to trade on a platform about to start: small models
    trained before the start into <var_dir>/models, where the decision process
    looks by default (it would otherwise train the full default set during its
    start-up), and a generous inference budget and placement deadline, so a
    loaded machine does not turn every signal into a timeout fallback."""
    await asyncio.to_thread(
        train.train,
        settings.var_dir / "models",
        # Small and fast; both models must exist whatever the quality gate says of so few ticks.
        TrainingSettings(ticks_per_symbol=2500, symbols=list(symbols), seed=5, promote_without_gate=True),
    )
    # Read by the decision processes from their environment (DecisionSettings).
    monkeypatch.setenv("TRADING_DECISION__INFERENCE_BUDGET_MS", "2000")
    monkeypatch.setenv("TRADING_DECISION__PLACE_ORDER_TIMEOUT_S", "5")
    monkeypatch.setenv("TRADING_DECISION__TRAIN_IF_MISSING", "false")


def operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """identity (its own process) seeds a platform operator with these, and hashes cheaply."""
    monkeypatch.setenv("TRADING_IDENTITY__PLATFORM_ADMIN_EMAIL", OPERATOR_EMAIL)
    monkeypatch.setenv("TRADING_IDENTITY__PLATFORM_ADMIN_PASSWORD", OPERATOR_PASSWORD)
    monkeypatch.setenv("TRADING_IDENTITY__ARGON2_TIME_COST", "1")
    monkeypatch.setenv("TRADING_IDENTITY__ARGON2_MEMORY_KIB", "1024")
    monkeypatch.setenv("TRADING_IDENTITY__ARGON2_PARALLELISM", "1")


async def new_tenant(settings: Settings, prefix: str, slug: str = "") -> str:
    """A fresh tenant, created in identity by the platform operator (logged in,
    then through the gateway's channel): identity issues delegations only for
    tenants it knows."""
    async with secure_channel(settings, settings.address_of("identity"), "identity") as channel:
        identity = ipb_grpc.IdentityServiceStub(channel)
        operator = await identity.Login(
            ipb.LoginRequest(tenant_slug=PLATFORM_SLUG, email=OPERATOR_EMAIL, password=OPERATOR_PASSWORD),
            timeout=10,
        )
        slug = slug or f"{prefix}-{uuid.uuid4().hex[:10]}"
        created = await identity.CreateTenant(
            ipb.CreateTenantRequest(
                slug=slug,
                display_name=slug,
                admin_email=f"admin@{slug}.test",
                admin_password="admin-password-1",
            ),
            metadata=as_user(
                settings,
                "identity",
                operator.tenant_id,
                subject=operator.user_id,
                scopes=["admin"],
                roles=["ADMIN"],
            ),
            timeout=10,
        )
    return created.tenant.tenant_id


def _dec(value: str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=value)


def wire(value: Decimal) -> Decimal:
    """`value` as the contract carries it: half-even to 12 fractional digits
    (services keep amounts exact inside and round them only on the way out)."""
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def money(value: decimal_pb2.Money) -> Decimal:
    return from_proto(value.amount)


def total(values: Iterable[Decimal]) -> Decimal:
    """Exact sum (the builtin sum rounds in the thread's default context)."""
    result = ZERO
    for v in values:
        result = EXACT.add(result, v)
    return result


def signed(fill: exec_types.Fill) -> Decimal:
    qty = from_proto(fill.quantity)
    return qty if fill.side == common_types.SIDE_BUY else -qty


def fee_of(fill: exec_types.Fill) -> Decimal:
    return money(fill.fee) if fill.HasField("fee") else ZERO


# ------------------------------------------------------------------ the platform


@dataclass
class Hot:
    settings: Settings
    decision: DecisionServiceAsyncStub
    execution: ExecutionServiceAsyncStub
    portfolio: PortfolioServiceAsyncStub


@pytest.fixture
async def hot(
    infra_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Hot]:
    settings = isolated_settings(infra_settings, tmp_path)
    settings.telemetry.log_level = "WARNING"
    settings.marketdata.feed = "synthetic"
    settings.marketdata.feed_symbols = list(SYMBOLS)
    # 50 ticks/s per symbol: the features' 100-tick warm-up passes in ~2 s.
    settings.marketdata.feed_rate = 100.0
    settings.marketdata.feed_seed = 20240501
    await trading_models(settings, SYMBOLS, monkeypatch)
    operator_env(monkeypatch)
    # The test dials as the gateway, with the isolated platform's certificates (<var_dir>/pki).
    async with (
        platform_running(settings, SERVICES, ready_timeout=90.0),
        secure_channel(settings, settings.address_of("decision"), "decision") as dch,
        secure_channel(settings, settings.address_of("execution"), "execution") as ech,
        secure_channel(settings, settings.address_of("portfolio"), "portfolio") as pch,
    ):
        yield Hot(
            settings,
            dpb_grpc.DecisionServiceStub(dch),
            epb_grpc.ExecutionServiceStub(ech),
            ppb_grpc.PortfolioServiceStub(pch),
        )


# ------------------------------------------------------------------ reading state


async def list_orders(hot: Hot, tenant: str) -> list[exec_types.Order]:
    orders: list[exec_types.Order] = []
    token = ""
    while True:
        page = await hot.execution.ListOrders(
            epb.ListOrdersRequest(page_size=500, page_token=token),
            metadata=_md(hot, "execution", tenant),
            timeout=10,
        )
        orders.extend(page.orders)
        token = page.next_page_token
        if not token:
            return orders


async def positions_of(hot: Hot, tenant: str) -> list[portfolio_types.Position]:
    reply = await hot.portfolio.GetPositions(
        ppb.GetPositionsRequest(include_closed=True), metadata=_md(hot, "portfolio", tenant), timeout=10
    )
    return list(reply.positions)


@dataclass
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    event_id: str
    event_type: str
    payload: Any


async def read_topics(
    settings: Settings,
    tenant: str,
    topics: Sequence[str],
    want: int | Callable[[list[KafkaRecord]], bool],
) -> list[KafkaRecord]:
    """The tenant's events on `topics` from the beginning (no consumer group),
    until `want` of them were read (or `want(found)` holds: records can come
    twice, so a count alone can stop short of a distinct one) or 10 s passed."""
    enough = want if callable(want) else (lambda found: len(found) >= want)
    registry = event_registry()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        parts: list[TopicPartition] = []
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or {0}
            parts.extend(TopicPartition(topic, p) for p in sorted(partitions))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        found: list[KafkaRecord] = []
        deadline = time.monotonic() + 10.0
        while not enough(found) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for tp, records in batch.items():
                for r in records:
                    assert r.value is not None
                    envelope = decode_envelope(r.value)
                    if envelope.tenant_id == tenant:
                        payload = unpack(envelope, registry)
                        found.append(
                            KafkaRecord(
                                tp.topic,
                                tp.partition,
                                r.offset,
                                envelope.event_id,
                                envelope.event_type,
                                payload,
                            )
                        )
        return found
    finally:
        await consumer.stop()


@dataclass
class Settled:
    orders: list[exec_types.Order]
    records: list[KafkaRecord]  # order and fill events
    changes: list[KafkaRecord]  # PositionChanged
    positions: list[portfolio_types.Position]


async def settle(hot: Hot, tenant: str, timeout: float = 25.0) -> Settled:
    """Wait until every order is terminal, all its events are in Kafka, every
    fill is booked (and its PositionChanged out), and no order was placed
    meanwhile (a vector in flight when the strategy was turned off may still
    place one)."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "the platform did not settle after the strategy was turned off"
        orders = await list_orders(hot, tenant)
        if all(o.status in TERMINAL for o in orders):
            want = sum(o.version - 1 for o in orders)  # one event per step after NEW (version 1)
            records = await read_topics(hot.settings, tenant, (ORDERS_TOPIC, FILLS_TOPIC), want)
            fills = sum(1 for r in records if r.topic == FILLS_TOPIC)
            positions = await positions_of(hot, tenant)
            booked = sum(p.version for p in positions)  # +1 per applied fill
            if len(records) >= want and booked == fills:
                changes = await read_topics(hot.settings, tenant, (POSITIONS_TOPIC,), fills)
                again = await list_orders(hot, tenant)
                if len(changes) >= fills and [(o.order_id, o.version) for o in again] == [
                    (o.order_id, o.version) for o in orders
                ]:
                    return Settled(orders, records, changes, positions)
        await asyncio.sleep(0.3)


# ------------------------------------------------------------------ recomputation


@dataclass
class Book:
    """One symbol's position replayed from fills under portfolio's documented
    rules (services/portfolio/domain/books.py), written out independently."""

    quantity: Decimal = ZERO
    average: Decimal | None = None
    realized: Decimal = ZERO
    fees: Decimal = ZERO
    fills: int = 0
    # True once an average price was rounded (a quotient that does not terminate).
    rounded: bool = False

    def apply(self, fill: exec_types.Fill) -> Decimal:
        """Book `fill`; returns the realised PnL it changed."""
        qty, price, delta = from_proto(fill.quantity), from_proto(fill.price), signed(fill)
        old = self.quantity
        new = EXACT.add(old, delta)
        realized = ZERO
        if old == 0 or (delta > 0) == (old > 0):
            if self.average is None or old == 0:
                self.average = price
            else:
                cost = EXACT.add(EXACT.multiply(abs(old), self.average), EXACT.multiply(qty, price))
                exact = DIVIDE.divide(cost, abs(new))
                self.average = exact.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)
                self.rounded |= exact != self.average
        else:
            assert self.average is not None
            closed = min(abs(old), qty)
            per_unit = price - self.average if old > 0 else self.average - price
            realized = EXACT.multiply(per_unit, closed)
            if new == 0:
                self.average = None
            elif (new > 0) != (old > 0):
                self.average = price
        self.quantity = new
        self.realized = EXACT.add(self.realized, realized)
        self.fees = EXACT.add(self.fees, fee_of(fill))
        self.fills += 1
        return realized


# ------------------------------------------------------------------ the test


async def test_strategy_trades_and_books_reconcile_with_fills_and_kafka(hot: Hot) -> None:
    tenant = await new_tenant(hot.settings, "t-e2e")
    began = time.monotonic()
    strategy_id = "e2e-momentum"
    spec = dpb.StrategySpec(
        name="end-to-end momentum",
        symbols=list(SYMBOLS),
        enabled=True,
        # Four lots at most either way: a signal that keeps its sign for a
        # while still trades a few times, then the limit makes it turn over.
        max_position=_dec("0.04"),
        sizing=dpb.OrderSizing(fixed_quantity=_dec(str(QUANTITY))),
        model_ids=["gbt-trend", "logreg-trend"],
        signal_threshold=0.01,
        cooldown=duration_pb2.Duration(nanos=250_000_000),
    )
    created = await hot.decision.SetStrategy(
        dpb.SetStrategyRequest(strategy_id=strategy_id, spec=spec),
        metadata=_md(hot, "decision", tenant),
        timeout=10,
    )
    assert created.created and created.strategy.spec.enabled

    async def enough_filled() -> bool:
        filled = [o for o in await list_orders(hot, tenant) if from_proto(o.filled_quantity) > 0]
        per_symbol = [sum(1 for o in filled if o.symbol == s) for s in SYMBOLS]
        # Realised PnL needs a position reduced: an instrument traded both
        # ways. When the signal changes sign depends on the market, so that
        # part of the wait is given up after REDUCE_WAIT_S.
        reduced = any(len({o.side for o in filled if o.symbol == s}) == 2 for s in SYMBOLS)
        return (
            len(filled) >= WANT_FILLED
            and min(per_symbol) >= WANT_FILLED_PER_SYMBOL
            and (reduced or time.monotonic() - began > REDUCE_WAIT_S)
        )

    await eventually(enough_filled, 40.0, f"{WANT_FILLED} filled orders of the strategy over {SYMBOLS}")
    trading_s = time.monotonic() - began
    off = await hot.decision.SetStrategyEnabled(
        dpb.SetStrategyEnabledRequest(strategy_id=strategy_id, enabled=False),
        metadata=_md(hot, "decision", tenant),
        timeout=10,
    )
    assert not off.strategy.spec.enabled
    s = await settle(hot, tenant)
    portfolio = (
        await hot.portfolio.GetPortfolio(
            ppb.GetPortfolioRequest(), metadata=_md(hot, "portfolio", tenant), timeout=10
        )
    ).portfolio

    # ---- orders: placed by the strategy, each filled or its IOC rest cancelled
    by_id = {o.order_id: o for o in s.orders}
    assert len(by_id) == len(s.orders)
    for o in s.orders:
        assert o.client_order_id.startswith("dc-") and o.strategy_id == strategy_id, o
        assert o.symbol in SYMBOLS and from_proto(o.quantity) == QUANTITY, o

    # ---- Kafka: every order's events once each, in order, ending in the final state
    assert len({r.event_id for r in s.records}) == len(s.records), "an event is in Kafka twice"
    events: dict[str, list[KafkaRecord]] = defaultdict(list)
    for r in s.records:
        events[r.payload.order_id].append(r)
    assert set(events) == set(by_id), "Kafka holds events of unknown orders or misses orders"
    fills_of: dict[str, list[exec_types.Fill]] = defaultdict(list)
    for order_id, evs in events.items():
        final = by_id[order_id]
        versions = sorted(e.payload.order.version for e in evs)
        assert versions == list(range(2, final.version + 1)), (order_id, versions, final.version)
        for topic in (ORDERS_TOPIC, FILLS_TOPIC):
            on_topic = sorted((e for e in evs if e.topic == topic), key=lambda e: e.offset)
            assert len({e.partition for e in on_topic}) <= 1, (order_id, "events span partitions")
            seen = [e.payload.order.version for e in on_topic]
            assert seen == sorted(seen), (order_id, topic, seen)
        ordered = sorted(evs, key=lambda e: e.payload.order.version)
        assert ordered[0].event_type in FIRST_EVENTS, (order_id, ordered[0].event_type)
        statuses = [e.payload.order.status for e in ordered]
        assert all(st not in TERMINAL for st in statuses[:-1]), (order_id, statuses)
        assert ordered[-1].payload.order == final, (order_id, ordered[-1].payload.order, final)
        fills_of[order_id] = [e.payload.fill for e in ordered if e.topic == FILLS_TOPIC]

    # ---- each order's fills add up to its filled quantity and average price
    fills = [f for fs in fills_of.values() for f in fs]
    assert len({f.execution_id for f in fills}) == len(fills)
    for order_id, order in by_id.items():
        fs = fills_of[order_id]
        assert all(f.side == order.side and f.symbol == order.symbol and f.order_id == order_id for f in fs)
        qty = total(from_proto(f.quantity) for f in fs)
        assert qty == from_proto(order.filled_quantity), order_id
        if fs:
            notional = total(EXACT.multiply(from_proto(f.quantity), from_proto(f.price)) for f in fs)
            vwap = DIVIDE.divide(notional, qty).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)
            assert vwap == from_proto(order.average_fill_price), order_id
    filled_orders = sum(1 for o in s.orders if from_proto(o.filled_quantity) > 0)
    assert filled_orders >= WANT_FILLED

    # ---- positions: the sum of fills per instrument
    got = {p.symbol: p for p in s.positions}
    traded = {f.symbol for f in fills}
    assert set(got) == traded, (set(got), traded)
    for symbol in traded:
        assert from_proto(got[symbol].quantity) == total(signed(f) for f in fills if f.symbol == symbol), (
            symbol
        )

    # ---- the books, replayed in the order portfolio applied the fills
    by_execution = {f.execution_id: f for f in fills}
    changes = [r.payload for r in s.changes]
    assert all(isinstance(c, portfolio_events.PositionChanged) for c in changes)
    assert sorted(c.execution_id for c in changes) == sorted(by_execution), (
        "a fill was booked twice or not at all"
    )
    books: dict[str, Book] = defaultdict(Book)
    out_of_execution_order = 0
    for symbol in traded:
        steps = sorted((c for c in changes if c.symbol == symbol), key=lambda c: c.position.version)
        assert [c.position.version for c in steps] == list(range(1, len(steps) + 1)), symbol
        applied = [by_execution[c.execution_id] for c in steps]
        executed = sorted(applied, key=lambda f: (f.executed_at.ToNanoseconds(), f.execution_id))
        out_of_execution_order += applied != executed
        book = books[symbol]
        for change, fill in zip(steps, applied, strict=True):
            before = book.quantity
            realized = book.apply(fill)
            p = change.position
            assert from_proto(change.previous_quantity) == before, (symbol, p.version)
            assert money(change.realized_pnl_change) == wire(realized), (symbol, p.version)
            assert from_proto(p.quantity) == book.quantity, (symbol, p.version)
            assert money(p.realized_pnl) == wire(book.realized), (symbol, p.version)
            assert (from_proto(p.average_price) if p.HasField("average_price") else None) == book.average, (
                symbol,
                p.version,
            )
        last = got[symbol]
        assert last.version == book.fills == len(applied), symbol
        assert from_proto(last.quantity) == book.quantity, symbol
        assert money(last.realized_pnl) == wire(book.realized), symbol
        assert money(last.fees_paid) == wire(book.fees), symbol
        if book.average is not None:
            assert from_proto(last.average_price) == book.average, symbol

    # ---- cash and PnL, exact at the marks GetPortfolio reports
    cash = EXACT.subtract(
        EXACT.subtract(
            DEFAULT_STARTING_CASH, total(EXACT.multiply(signed(f), from_proto(f.price)) for f in fills)
        ),
        total(fee_of(f) for f in fills),
    )
    assert money(portfolio.cash) == wire(cash)
    open_books = {sym: b for sym, b in books.items() if b.quantity != 0}
    shown = {p.symbol: p for p in portfolio.positions}
    assert set(shown) == set(open_books)
    market_value = unrealized = ZERO
    for symbol, book in open_books.items():
        p = shown[symbol]
        assert p.HasField("mark_price"), f"{symbol} is not marked to a quote"
        mark = from_proto(p.mark_price)
        assert book.average is not None
        value = EXACT.multiply(book.quantity, mark)
        cost = EXACT.multiply(book.quantity, book.average)
        assert money(p.market_value) == wire(value) and money(p.cost_basis) == wire(cost), symbol
        assert money(p.unrealized_pnl) == wire(EXACT.subtract(value, cost)), symbol
        market_value = EXACT.add(market_value, value)
        unrealized = EXACT.add(unrealized, EXACT.subtract(value, cost))
    realized = total(b.realized for b in books.values())
    fees = total(b.fees for b in books.values())
    assert money(portfolio.market_value) == wire(market_value)
    assert money(portfolio.total_unrealized_pnl) == wire(unrealized)
    assert money(portfolio.total_realized_pnl) == wire(realized)
    assert money(portfolio.total_fees) == wire(fees)
    assert money(portfolio.equity) == wire(EXACT.add(cash, market_value))
    # Whatever the order of the fills: what they earned at these marks is
    # equity - starting cash. Exact unless an average price was rounded (the
    # mean of three lots' prices need not terminate; the books keep it to 12
    # digits), which leaves that rounding times the quantity at most.
    earned = EXACT.subtract(EXACT.add(realized, unrealized), fees)
    residual = abs(
        EXACT.subtract(earned, EXACT.subtract(EXACT.add(cash, market_value), DEFAULT_STARTING_CASH))
    )
    rounded = any(b.rounded for b in books.values())
    assert residual <= (Decimal("1e-9") if rounded else ZERO), (residual, rounded)

    print(
        f"\nhot path e2e: {len(s.orders)} orders ({filled_orders} filled) in {trading_s:.1f}s of trading, "
        f"{len(fills)} fills, {len(s.records)} order/fill events, {len(changes)} position changes, "
        f"{out_of_execution_order} symbol(s) booked out of execution order; realised {realized}, "
        f"unrealised {unrealized}, fees {fees}, cash {cash}"
    )
