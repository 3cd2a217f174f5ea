"""The portfolio service on real servers: fills published to tansu with the
platform's KafkaPublisher (the producer side execution uses), applied by the
service's consumer into PostgreSQL, marked with quotes written to Redis,
streamed over gRPC with NATS wake-ups. Expected figures are computed by hand
in the comments."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from nats.aio.msg import Msg
from redis.asyncio import Redis
from trading.common.v1 import decimal_pb2, event_pb2, market_pb2, types_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types
from trading.portfolio.v1 import events_pb2 as portfolio_events
from trading.portfolio.v1 import portfolio_service_pb2 as pb
from trading.portfolio.v1 import portfolio_service_pb2_grpc as pb_grpc
from trading.portfolio.v1 import types_pb2 as portfolio_types

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.market_cache import quote_key
from runtime.messaging import decode_envelope, new_envelope, unpack, uuid7
from runtime.messaging import headers as h
from runtime.messaging.kafka import KafkaDeadLetters, KafkaPublisher
from runtime.messaging.nats.connect import connect_nats
from runtime.resources import Resources
from runtime.storage.postgres import tenant_transaction
from services.portfolio.api import PortfolioApi
from services.portfolio.main import PORTFOLIO_SERVICE, make_spec
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

FILLS_TOPIC = "trading.execution.fills"
START = D(1_000_000)
T = TypeVar("T")


@dataclass
class Harness:
    stub: pb_grpc.PortfolioServiceAsyncStub
    publisher: KafkaPublisher
    group: str
    api: PortfolioApi  # the servicer itself, to watch stream teardown


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def portfolio(infra_settings: Settings) -> AsyncIterator[Harness]:
    """One running portfolio for the module, with its own consumer group."""
    group = f"portfolio.fills.test-{uuid.uuid4().hex[:8]}"
    spec = make_spec(fills_group=group)
    built: dict[str, Any] = {}

    async def build(resources: Resources) -> Mapping[str, Any]:
        built.update(await spec.build(resources))
        return built

    async with (
        running_service(dataclasses.replace(spec, build=build), infra_settings) as address,
        service_channel(address, "portfolio") as channel,
        KafkaPublisher(infra_settings.kafka, event_registry(), client_id="test-execution") as publisher,
    ):
        yield Harness(pb_grpc.PortfolioServiceStub(channel), publisher, group, built[PORTFOLIO_SERVICE])


def tenant_md(tenant: str) -> tuple[tuple[str, str], ...]:
    return user_md("portfolio", tenant)


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def new_symbol() -> str:
    """Unique per test: quotes in the shared Redis are global per symbol."""
    return f"P{uuid.uuid4().hex[:8].upper()}"


def fill_envelope(
    tenant: str,
    symbol: str,
    side: int,
    qty: str,
    price: str,
    fee: str = "0",
    *,
    order_id: str | None = None,
    execution_id: str | None = None,
) -> event_pb2.EventEnvelope:
    """An OrderFillReported as execution emits it (one fill filling the order)."""
    order_id = order_id or str(uuid7())
    fill = execution_types.Fill(
        execution_id=execution_id or str(uuid7()),
        order_id=order_id,
        client_order_id=f"c-{order_id[-8:]}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        price=decimal_pb2.Decimal(value=price),
        quantity=decimal_pb2.Decimal(value=qty),
        liquidity=execution_types.LIQUIDITY_TAKER,
        fee=decimal_pb2.Money(currency="USD", amount=decimal_pb2.Decimal(value=fee)),
        venue_execution_id="paper-1",
    )
    fill.executed_at.GetCurrentTime()
    order = execution_types.Order(
        order_id=order_id,
        client_order_id=fill.client_order_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        type=market_pb2.ORDER_TYPE_MARKET,
        time_in_force=execution_types.TIME_IN_FORCE_IOC,
        quantity=decimal_pb2.Decimal(value=qty),
        status=execution_types.ORDER_STATUS_FILLED,
        filled_quantity=decimal_pb2.Decimal(value=qty),
        remaining_quantity=decimal_pb2.Decimal(value="0"),
        average_fill_price=decimal_pb2.Decimal(value=price),
        venue="paper",
        version=3,
    )
    payload = execution_events.OrderFillReported(order_id=order_id, fill=fill, order=order)
    return new_envelope(payload, tenant_id=tenant, correlation_id=str(uuid.uuid4()), producer="execution")


BUY, SELL = types_pb2.SIDE_BUY, types_pb2.SIDE_SELL


async def eventually(probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0) -> T:
    """Poll `probe` until it returns something other than None (or time out)."""
    async with asyncio.timeout(timeout):
        while True:
            value = await probe()
            if value is not None:
                return value
            await asyncio.sleep(0.05)


async def portfolio_at_version(
    stub: pb_grpc.PortfolioServiceAsyncStub, tenant: str, version: int
) -> portfolio_types.Portfolio:
    async def probe() -> portfolio_types.Portfolio | None:
        got = (await stub.GetPortfolio(pb.GetPortfolioRequest(), metadata=tenant_md(tenant))).portfolio
        return got if got.version >= version else None

    return await eventually(probe)


def amount(money: decimal_pb2.Money) -> D:
    assert money.currency == "USD"
    return D(money.amount.value)


def quote(symbol: str, bid: str = "", ask: str = "", last: str = "") -> bytes:
    q = market_pb2.Quote(symbol=symbol, sequence=1, source="test")
    for name, value in (("bid_price", bid), ("ask_price", ask), ("last_price", last)):
        if value:
            getattr(q, name).value = value
    q.exchange_time.GetCurrentTime()
    q.receive_time.GetCurrentTime()
    return q.SerializeToString()


async def test_fills_make_positions_cash_and_pnl_marked_to_the_redis_quote(
    portfolio: Harness, redis_client: Redis
) -> None:
    tenant, s1, s2 = new_tenant(), new_symbol(), new_symbol()
    await redis_client.set(quote_key(s1), quote(s1, bid="124", ask="126", last="130"), ex=300)
    await redis_client.set(quote_key(s2), quote(s2, last="40"), ex=300)  # one-sided: last trade
    # Fills of different orders travel on different partitions (keyed by
    # order id), so each is awaited: the average price depends on their order.
    for version, envelope in enumerate(
        (
            fill_envelope(tenant, s1, BUY, "2", "100", "0.5"),
            fill_envelope(tenant, s1, BUY, "2", "110", "0.5"),
            fill_envelope(tenant, s1, SELL, "1", "120", "0.25"),
            fill_envelope(tenant, s2, SELL, "1", "50"),
        ),
        start=1,
    ):
        await portfolio.publisher.publish(envelope)
        p = await portfolio_at_version(portfolio.stub, tenant, version)
    # s1: 4 @ avg 105, sold 1 @ 120 -> qty 3, realised 15, fees 1.25; mark mid 125.
    # s2: short 1 @ 50, marked at last 40 -> market value -40, unrealised +10.
    # cash: 1e6 - 200.5 - 220.5 + 119.75 + 50 = 999748.75
    assert amount(p.cash) == D("999748.75")
    assert [x.symbol for x in p.positions] == sorted([s1, s2])
    by = {x.symbol: x for x in p.positions}
    a, b = by[s1], by[s2]
    assert (D(a.quantity.value), D(a.average_price.value), D(a.mark_price.value)) == (D(3), D(105), D(125))
    assert (amount(a.market_value), amount(a.cost_basis), amount(a.unrealized_pnl)) == (D(375), D(315), D(60))
    assert (amount(a.realized_pnl), amount(a.fees_paid), a.version) == (D(15), D("1.25"), 3)
    assert a.HasField("marked_at") and a.HasField("updated_at")
    assert (D(b.quantity.value), D(b.mark_price.value), amount(b.market_value)) == (D(-1), D(40), D(-40))
    assert amount(b.unrealized_pnl) == D(10)
    assert amount(p.market_value) == D(335)
    assert amount(p.gross_exposure) == D(415)
    assert amount(p.equity) == D("1000083.75")
    assert (amount(p.total_realized_pnl), amount(p.total_unrealized_pnl), amount(p.total_fees)) == (
        D(15),
        D(70),
        D("1.25"),
    )
    # The books balance: equity - start == realised + unrealised - fees.
    assert amount(p.equity) - START == D(15) + D(70) - D("1.25")

    # A new quote re-marks on the next read.
    await redis_client.set(quote_key(s1), quote(s1, bid="99", ask="101"), ex=300)
    again = (
        await portfolio.stub.GetPortfolio(pb.GetPortfolioRequest(), metadata=tenant_md(tenant))
    ).portfolio
    assert amount(again.total_unrealized_pnl) == D(-15) + D(10)  # 3 x (100 - 105) and the short's +10

    only = await portfolio.stub.GetPositions(pb.GetPositionsRequest(symbol=s2), metadata=tenant_md(tenant))
    assert [x.symbol for x in only.positions] == [s2] and only.HasField("as_of")
    never = await portfolio.stub.GetPositions(
        pb.GetPositionsRequest(symbol="NEVER1"), metadata=tenant_md(tenant)
    )
    assert list(never.positions) == []


async def test_a_redelivered_or_reemitted_fill_changes_nothing(portfolio: Harness) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    order_id = str(uuid7())
    first = fill_envelope(tenant, symbol, BUY, "1", "100", order_id=order_id)
    await portfolio.publisher.publish(first)
    await portfolio_at_version(portfolio.stub, tenant, 1)

    await portfolio.publisher.publish(first)  # the same event again (a redelivery)
    reemitted = execution_events.OrderFillReported()
    first.payload.Unpack(reemitted)  # the same fill in a new event (new event id)
    again = new_envelope(reemitted, tenant_id=tenant, correlation_id="c", producer="execution")
    await portfolio.publisher.publish(again)
    # A later fill of the same order (same partition, so handled after both).
    await portfolio.publisher.publish(fill_envelope(tenant, symbol, BUY, "1", "200", order_id=order_id))

    p = await portfolio_at_version(portfolio.stub, tenant, 2)
    assert p.version == 2
    (position,) = p.positions
    assert (D(position.quantity.value), D(position.average_price.value), position.version) == (
        D(2),
        D(150),
        2,
    )
    assert amount(p.cash) == START - D(300)


async def test_malformed_fills_are_dead_lettered_and_consumption_goes_on(
    portfolio: Harness, infra_settings: Settings
) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    order_id = str(uuid7())
    # All three on one partition (same key), so they are handled in this order.
    garbage_key = order_id.encode()
    await portfolio.publisher.publish_raw(FILLS_TOPIC, b"\x00not an envelope", key=garbage_key)
    zero = fill_envelope(tenant, symbol, BUY, "0", "100", order_id=order_id)  # quantity 0: refused
    await portfolio.publisher.publish(zero)
    await portfolio.publisher.publish(fill_envelope(tenant, symbol, BUY, "5", "10", order_id=order_id))

    p = await portfolio_at_version(portfolio.stub, tenant, 1)
    assert D(p.positions[0].quantity.value) == D(5) and amount(p.cash) == START - D(50)

    letters = await KafkaDeadLetters(portfolio.publisher, topics=[FILLS_TOPIC]).list(portfolio.group)
    ours = [x for x in letters if x.key == garbage_key]
    reasons = {x.headers.get(h.EVENT_ID, ""): x.reason for x in ours}
    assert reasons.get(zero.event_id) == "handler_failed"
    assert "undecodable" in {x.reason for x in ours if x.value == b"\x00not an envelope"}
    handler_failed = next(x for x in ours if x.reason == "handler_failed")
    assert handler_failed.attempts == 3 and "quantity" in handler_failed.error


async def test_stream_sends_a_snapshot_then_an_update_after_a_fill(portfolio: Harness) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    call = portfolio.stub.StreamPortfolio(
        pb.StreamPortfolioRequest(min_interval=Duration(nanos=100_000_000)), metadata=tenant_md(tenant)
    )
    try:
        async with asyncio.timeout(20):
            first = await call.read()
            assert isinstance(first, pb.StreamPortfolioResponse)
            assert amount(first.portfolio.cash) == START and list(first.portfolio.positions) == []
            assert first.portfolio.version == 0

            await portfolio.publisher.publish(fill_envelope(tenant, symbol, BUY, "4", "25"))
            update = await call.read()
            assert isinstance(update, pb.StreamPortfolioResponse)
            assert update.portfolio.version == 1
            assert [x.symbol for x in update.portfolio.positions] == [symbol]
            assert amount(update.portfolio.cash) == START - D(100)
    finally:
        call.cancel()
    assert call.cancelled()

    async def torn_down() -> bool | None:
        return True if portfolio.api.active_streams == 0 else None

    await eventually(torn_down)  # the server side ended too (its NATS subscriptions with it)

    # exclude_positions: totals only.
    totals = portfolio.stub.StreamPortfolio(
        pb.StreamPortfolioRequest(exclude_positions=True), metadata=tenant_md(tenant)
    )
    try:
        async with asyncio.timeout(20):
            snap = await totals.read()
        assert isinstance(snap, pb.StreamPortfolioResponse)
        assert list(snap.portfolio.positions) == [] and amount(snap.portfolio.market_value) == D(100)
    finally:
        totals.cancel()


async def test_tenants_never_see_each_other(portfolio: Harness, pg_pool: asyncpg.Pool) -> None:
    a, b, symbol = new_tenant(), new_tenant(), new_symbol()
    await portfolio.publisher.publish(fill_envelope(a, symbol, BUY, "1", "10"))
    await portfolio.publisher.publish(fill_envelope(b, symbol, SELL, "7", "10"))
    pa = await portfolio_at_version(portfolio.stub, a, 1)
    pb_ = await portfolio_at_version(portfolio.stub, b, 1)
    assert [D(x.quantity.value) for x in pa.positions] == [D(1)]
    assert [D(x.quantity.value) for x in pb_.positions] == [D(-7)]
    for tenant, qty in ((a, D(1)), (b, D(-7))):
        got = await portfolio.stub.GetPositions(
            pb.GetPositionsRequest(include_closed=True), metadata=tenant_md(tenant)
        )
        assert [D(x.quantity.value) for x in got.positions] == [qty]

    # RLS: in A's transaction, B's rows do not exist and cannot be written.
    async with tenant_transaction(pg_pool, a) as conn:
        for table in ("positions", "accounts", "processed_events"):
            owners = await conn.fetch(f"SELECT DISTINCT tenant_id FROM portfolio.{table}")
            assert [r["tenant_id"] for r in owners] == [a]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(pg_pool, a) as conn:
            await conn.execute(
                """INSERT INTO portfolio.positions
                   (tenant_id, symbol, quantity, average_price, version, updated_at)
                   VALUES ($1, 'FORGED', 1, 1, 1, now())""",
                b,
            )

    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await portfolio.stub.GetPortfolio(pb.GetPortfolioRequest())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_fills_publish_position_changed_and_a_snapshot_on_nats(
    portfolio: Harness, infra_settings: Settings
) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    nc = await connect_nats(infra_settings, "portfolio")
    received: asyncio.Queue[tuple[str, Message]] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        envelope = decode_envelope(msg.data)
        await received.put((envelope.event_type, unpack(envelope, event_registry())))

    try:
        for subject in (f"portfolio.positions.{tenant}", f"portfolio.updates.{tenant}"):
            await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        fill = fill_envelope(tenant, symbol, SELL, "2", "30", "0.1")
        await portfolio.publisher.publish(fill)
        got: dict[str, Message] = {}
        async with asyncio.timeout(20):
            while len(got) < 2:
                event_type, payload = await received.get()
                got[event_type] = payload
    finally:
        await nc.close()
    changed = got["trading.portfolio.v1.PositionChanged"]
    assert isinstance(changed, portfolio_events.PositionChanged)
    executed = execution_events.OrderFillReported()
    fill.payload.Unpack(executed)
    assert (changed.symbol, changed.execution_id, changed.order_id) == (
        symbol,
        executed.fill.execution_id,
        executed.order_id,
    )
    assert D(changed.previous_quantity.value) == 0 and D(changed.position.quantity.value) == D(-2)
    assert amount(changed.realized_pnl_change) == 0 and amount(changed.fee) == D("0.1")
    snapshot = got["trading.portfolio.v1.PortfolioSnapshot"]
    assert isinstance(snapshot, portfolio_events.PortfolioSnapshot)
    assert snapshot.portfolio.version == 1
    assert amount(snapshot.portfolio.cash) == START + D(60) - D("0.1")
