"""execution over gRPC with the real risk service, on real PostgreSQL, Redis,
NATS and tansu: placement (idempotent, risk-checked, filled by the paper
venue), cancels, listing, streaming and tenant isolation.

The test plays marketdata's part of the shared conventions: it writes the
last quote to Redis (``md:quote:{symbol}``) and publishes Tick envelopes on
NATS (``marketdata.ticks.{symbol}``). Every test uses its own tenant and
symbols, so runs never see each other's orders or quotes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from trading.common.v1 import decimal_pb2, market_pb2
from trading.common.v1 import types_pb2 as common
from trading.execution.v1 import execution_service_pb2 as pb
from trading.execution.v1 import execution_service_pb2_grpc as pb_grpc
from trading.execution.v1 import types_pb2 as types
from trading.marketdata.v1 import events_pb2 as md_events
from trading.risk.v1 import risk_service_pb2 as risk_pb
from trading.risk.v1 import risk_service_pb2_grpc as risk_grpc

from runtime.config import Settings
from runtime.errors import error_details
from runtime.messaging import new_envelope
from runtime.messaging.nats.connect import connect_nats
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from runtime.storage.postgres import tenant_transaction
from services.execution.main import SPEC as EXECUTION
from tests.support.risk import risk_spec
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

if TYPE_CHECKING:
    from trading.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub
    from trading.risk.v1.risk_service_pb2_grpc import RiskServiceAsyncStub

MARKET, LIMIT = market_pb2.ORDER_TYPE_MARKET, market_pb2.ORDER_TYPE_LIMIT
BUY, SELL = common.SIDE_BUY, common.SIDE_SELL


def D(value: str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=value)


SCOPES = ("orders:read", "orders:write", "risk:read", "risk:write", "risk:admin")


def md(tenant: str, service: str = "execution") -> tuple[tuple[str, str], ...]:
    return user_md(service, tenant, scopes=SCOPES)


def new_symbol() -> str:
    return f"X{uuid.uuid4().hex[:8].upper()}-USD"


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@dataclass
class Platform:
    execution: ExecutionServiceAsyncStub
    risk: RiskServiceAsyncStub
    redis: Redis
    nats: NatsClient
    settings: Settings
    sequence: int = 0

    async def quote(self, symbol: str, bid: str, bid_size: str, ask: str, ask_size: str) -> None:
        """What marketdata does on a tick: cache the quote, publish the tick."""
        self.sequence += 1
        now = datetime.now(UTC)
        quote = market_pb2.Quote(
            symbol=symbol,
            bid_price=D(bid),
            bid_size=D(bid_size),
            ask_price=D(ask),
            ask_size=D(ask_size),
            sequence=self.sequence,
            source="test",
        )
        quote.exchange_time.FromDatetime(now)
        quote.receive_time.FromDatetime(now)
        await self.redis.set(f"md:quote:{symbol}", quote.SerializeToString(), ex=600)
        tick = md_events.Tick(
            symbol=symbol,
            bid_price=D(bid),
            bid_size=D(bid_size),
            ask_price=D(ask),
            ask_size=D(ask_size),
            sequence=self.sequence,
            source="test",
        )
        tick.exchange_time.FromDatetime(now)
        tick.receive_time.FromDatetime(now)
        envelope = new_envelope(tick, tenant_id="", correlation_id="test", producer="test")
        await self.nats.publish(f"marketdata.ticks.{symbol}", envelope.SerializeToString())
        await self.nats.flush()

    async def place(self, tenant: str, **fields: Any) -> pb.PlaceOrderResponse:
        request = pb.PlaceOrderRequest(
            client_order_id=fields.pop("client_order_id", uuid.uuid4().hex),
            time_in_force=fields.pop("time_in_force", types.TIME_IN_FORCE_GTC),
            **fields,
        )
        response: pb.PlaceOrderResponse = await self.execution.PlaceOrder(request, metadata=md(tenant))
        return response

    async def get(self, tenant: str, order_id: str) -> types.Order:
        reply = await self.execution.GetOrder(pb.GetOrderRequest(order_id=order_id), metadata=md(tenant))
        return reply.order

    async def wait_for(self, tenant: str, order_id: str, status: int, timeout: float = 10.0) -> types.Order:
        deadline = time.monotonic() + timeout
        while True:
            order = await self.get(tenant, order_id)
            if order.status == status or time.monotonic() > deadline:
                return order
            await asyncio.sleep(0.05)


async def _risk_is_built(stub: RiskServiceAsyncStub) -> bool:
    """Poll risk's CheckOrder until it stops answering UNIMPLEMENTED (built by a colleague)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            await stub.CheckOrder(
                risk_pb.CheckOrderRequest(
                    client_order_id="probe",
                    symbol="PROBE-USD",
                    side=BUY,
                    quantity=D("1"),
                    order_type=MARKET,
                    dry_run=True,
                ),
                metadata=md("probe", "risk"),
            )
            return True
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(infra_settings: Settings) -> AsyncIterator[Platform]:
    async with running_service(risk_spec(), infra_settings) as risk_address:
        settings = infra_settings.model_copy(update={"service_addresses": {"risk": risk_address}})
        async with (
            running_service(EXECUTION, settings) as address,
            service_channel(address, "execution") as channel,
            service_channel(risk_address, "risk") as risk_channel,
        ):
            risk = risk_grpc.RiskServiceStub(risk_channel)
            if not await _risk_is_built(risk):
                pytest.skip("risk's CheckOrder is not built yet (UNIMPLEMENTED): needed by every placement")
            redis = open_redis(settings, REDIS_ADMIN)
            nc = await connect_nats(settings, "marketdata", connect_timeout=2)
            try:
                yield Platform(pb_grpc.ExecutionServiceStub(channel), risk, redis, nc, settings)
            finally:
                await nc.close()
                await redis.aclose()


# ---------------------------------------------------------------------------- placement


async def test_market_order_fills_at_the_touch_and_ioc_cancels_the_rest(platform: Platform) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    await platform.quote(symbol, "99", "10", "100", "3")

    ioc = await platform.place(
        tenant, symbol=symbol, side=BUY, type=MARKET, quantity=D("5"), time_in_force=types.TIME_IN_FORCE_IOC
    )
    o = ioc.order
    assert not ioc.replayed
    assert o.status == types.ORDER_STATUS_CANCELED
    assert (o.filled_quantity.value, o.average_fill_price.value, o.remaining_quantity.value) == (
        "3",
        "100",
        "0",
    )
    assert o.cancel_reason == types.CANCEL_REASON_UNFILLED_REMAINDER
    assert o.venue == "paper" and o.version == 4  # NEW -> ACCEPTED -> fill -> CANCELED

    gtc = await platform.place(tenant, symbol=symbol, side=SELL, type=MARKET, quantity=D("2.5"))
    assert gtc.order.status == types.ORDER_STATUS_FILLED
    assert (gtc.order.filled_quantity.value, gtc.order.average_fill_price.value) == ("2.5", "99")

    # GTC with short size: a partial fill, the rest keeps working.
    partial = await platform.place(tenant, symbol=symbol, side=BUY, type=MARKET, quantity=D("4"))
    assert partial.order.status == types.ORDER_STATUS_PARTIALLY_FILLED
    assert (partial.order.filled_quantity.value, partial.order.remaining_quantity.value) == ("3", "1")


def _risk_checks(result: str) -> float:
    return REGISTRY.get_sample_value("trading_risk_checks_total", {"result": result}) or 0.0


async def test_an_approval_is_decided_in_executions_process_and_a_denial_by_risk(platform: Platform) -> None:
    """Risk runs in this test process too, so its CheckOrder counter shows
    whether execution asked it: not for a plain approval (the embedded check,
    while risk is seen SERVING over mTLS), but for a denial, which risk
    decides and records."""
    tenant, symbol = new_tenant(), new_symbol()
    await platform.quote(symbol, "99", "10", "100", "3")
    approved, denied = _risk_checks("approved"), _risk_checks("denied")

    placed = await platform.place(tenant, symbol=symbol, side=BUY, type=MARKET, quantity=D("1"))
    assert placed.order.status == types.ORDER_STATUS_FILLED
    assert (_risk_checks("approved"), _risk_checks("denied")) == (approved, denied)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await platform.place(tenant, symbol=symbol, side=BUY, type=MARKET, quantity=D("1000000"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _risk_checks("denied") == denied + 1


async def test_fok_fills_completely_or_not_at_all(platform: Platform) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    await platform.quote(symbol, "99", "10", "100", "3")
    fok = types.TIME_IN_FORCE_FOK
    killed = await platform.place(
        tenant, symbol=symbol, side=BUY, type=MARKET, quantity=D("4"), time_in_force=fok
    )
    assert killed.order.status == types.ORDER_STATUS_CANCELED
    assert killed.order.filled_quantity.value == "0"
    assert not killed.order.HasField("average_fill_price")

    filled = await platform.place(
        tenant, symbol=symbol, side=BUY, type=LIMIT, limit_price=D("100"), quantity=D("3"), time_in_force=fok
    )
    assert filled.order.status == types.ORDER_STATUS_FILLED
    assert filled.order.average_fill_price.value == "100"


async def test_retry_returns_the_first_result_even_under_concurrency(
    platform: Platform, pg_pool: asyncpg.Pool
) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    await platform.quote(symbol, "99", "10", "100", "10")
    first = await platform.place(
        tenant, client_order_id="retry-1", symbol=symbol, side=BUY, type=MARKET, quantity=D("1")
    )
    again = await platform.place(
        tenant, client_order_id="retry-1", symbol=symbol, side=BUY, type=MARKET, quantity=D("1")
    )
    assert again.replayed and not first.replayed
    assert again.order == first.order
    # The contract: a retry returns the first result even if the other fields differ.
    other = await platform.place(
        tenant, client_order_id="retry-1", symbol=symbol, side=SELL, type=MARKET, quantity=D("9")
    )
    assert other.replayed and other.order.order_id == first.order.order_id

    replies = await asyncio.gather(
        *(
            platform.place(
                tenant, client_order_id="burst-1", symbol=symbol, side=BUY, type=MARKET, quantity=D("1")
            )
            for _ in range(12)
        )
    )
    assert len({r.order.order_id for r in replies}) == 1
    assert sum(not r.replayed for r in replies) == 1
    async with tenant_transaction(pg_pool, tenant) as conn:
        count = await conn.fetchval("SELECT count(*) FROM execution.orders WHERE client_order_id = 'burst-1'")
        fills = await conn.fetchval(
            "SELECT count(*) FROM execution.executions WHERE order_id = $1::uuid", replies[0].order.order_id
        )
    assert (count, fills) == (1, 1)


async def test_risk_denial_is_stored_as_rejected_and_replayed(platform: Platform) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    await platform.quote(symbol, "9999", "10", "10000", "10")
    # 20 x 10,000 = 200,000 > the default 100,000 per order (position 20 < 100).
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await platform.place(
            tenant, client_order_id="big-1", symbol=symbol, side=BUY, type=MARKET, quantity=D("20")
        )
    assert denied.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details(denied.value).error_info
    assert info is not None
    assert (info.domain, info.reason) == ("trading.risk", "RISK_MAX_NOTIONAL_EXCEEDED")

    stored = await platform.execution.GetOrder(
        pb.GetOrderRequest(client_order_id="big-1"), metadata=md(tenant)
    )
    assert stored.order.status == types.ORDER_STATUS_REJECTED
    assert stored.order.reject_reason == "RISK_MAX_NOTIONAL_EXCEEDED"
    assert info.metadata["order_id"] == stored.order.order_id

    with pytest.raises(grpc.aio.AioRpcError) as replay:
        await platform.place(
            tenant, client_order_id="big-1", symbol=symbol, side=BUY, type=MARKET, quantity=D("20")
        )
    replay_info = error_details(replay.value).error_info
    assert replay_info is not None and replay_info.metadata["order_id"] == stored.order.order_id


async def test_risk_unavailable_fails_without_an_order(
    infra_settings: Settings, pg_pool: asyncpg.Pool
) -> None:
    # Risk's address points at a port where nothing listens.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    settings = infra_settings.model_copy(update={"service_addresses": {"risk": dead}})
    tenant = new_tenant()
    async with (
        running_service(EXECUTION, settings) as address,
        service_channel(address, "execution") as channel,
    ):
        stub = pb_grpc.ExecutionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.PlaceOrder(
                pb.PlaceOrderRequest(
                    client_order_id="no-risk",
                    symbol="BTC-USD",
                    side=BUY,
                    type=MARKET,
                    time_in_force=types.TIME_IN_FORCE_IOC,
                    quantity=D("1"),
                ),
                metadata=md(tenant),
            )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_details(err.value).error_info
    assert info is not None and info.reason == "RISK_UNAVAILABLE"
    async with tenant_transaction(pg_pool, tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM execution.orders") == 0


# ---------------------------------------------------------------------------- resting orders


async def test_resting_limit_fills_when_a_new_quote_crosses_it(platform: Platform) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    await platform.quote(symbol, "99", "5", "101", "5")
    buy = await platform.place(
        tenant, symbol=symbol, side=BUY, type=LIMIT, limit_price=D("100"), quantity=D("2")
    )
    sell = await platform.place(
        tenant, symbol=symbol, side=SELL, type=LIMIT, limit_price=D("102"), quantity=D("1"),
        time_in_force=types.TIME_IN_FORCE_DAY,
    )  # fmt: skip
    assert buy.order.status == sell.order.status == types.ORDER_STATUS_ACCEPTED

    await platform.quote(symbol, "99", "5", "99.5", "1")  # the ask crosses the buy: 1 of 2
    part = await platform.wait_for(tenant, buy.order.order_id, types.ORDER_STATUS_PARTIALLY_FILLED)
    assert (part.status, part.filled_quantity.value, part.average_fill_price.value) == (
        types.ORDER_STATUS_PARTIALLY_FILLED,
        "1",
        "100",  # a resting order fills at its own limit (maker)
    )
    await platform.quote(symbol, "99", "5", "99.8", "5")
    done = await platform.wait_for(tenant, buy.order.order_id, types.ORDER_STATUS_FILLED)
    assert (done.status, done.filled_quantity.value) == (types.ORDER_STATUS_FILLED, "2")
    assert (await platform.get(tenant, sell.order.order_id)).status == types.ORDER_STATUS_ACCEPTED

    await platform.quote(symbol, "102.5", "5", "103", "5")  # the bid crosses the sell
    sold = await platform.wait_for(tenant, sell.order.order_id, types.ORDER_STATUS_FILLED)
    assert (sold.status, sold.average_fill_price.value) == (types.ORDER_STATUS_FILLED, "102")


async def test_day_order_expires_at_session_end(platform: Platform, pg_pool: asyncpg.Pool) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    await platform.quote(symbol, "99", "5", "101", "5")
    day = await platform.place(
        tenant, symbol=symbol, side=BUY, type=LIMIT, limit_price=D("98"), quantity=D("1"),
        time_in_force=types.TIME_IN_FORCE_DAY,
    )  # fmt: skip
    # Move its session end into the past (the superuser login bypasses RLS).
    await pg_pool.execute(
        "UPDATE execution.orders SET expires_at = now() - interval '1 second' WHERE order_id = $1::uuid",
        day.order.order_id,
    )
    expired = await platform.wait_for(tenant, day.order.order_id, types.ORDER_STATUS_EXPIRED)
    assert expired.status == types.ORDER_STATUS_EXPIRED


async def test_cancel_is_idempotent_and_refuses_finished_orders(platform: Platform) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    await platform.quote(symbol, "99", "5", "101", "5")
    resting = await platform.place(
        tenant,
        client_order_id="c-1",
        symbol=symbol,
        side=BUY,
        type=LIMIT,
        limit_price=D("98"),
        quantity=D("1"),
    )
    canceled = await platform.execution.CancelOrder(
        pb.CancelOrderRequest(client_order_id="c-1"), metadata=md(tenant)
    )
    assert canceled.order.status == types.ORDER_STATUS_CANCELED
    assert canceled.order.cancel_reason == types.CANCEL_REASON_CLIENT_REQUEST
    assert canceled.order.version == resting.order.version + 2  # PENDING_CANCEL, then CANCELED
    again = await platform.execution.CancelOrder(
        pb.CancelOrderRequest(order_id=resting.order.order_id), metadata=md(tenant)
    )
    assert again.order == canceled.order

    filled = await platform.place(tenant, symbol=symbol, side=BUY, type=MARKET, quantity=D("1"))
    assert filled.order.status == types.ORDER_STATUS_FILLED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await platform.execution.CancelOrder(
            pb.CancelOrderRequest(order_id=filled.order.order_id), metadata=md(tenant)
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details(err.value).error_info
    assert info is not None and info.reason == "EXECUTION_ORDER_NOT_CANCELABLE"


# ---------------------------------------------------------------------------- reads


async def test_list_orders_pages_newest_first_with_filters(platform: Platform) -> None:
    tenant, symbol, other = new_tenant(), new_symbol(), new_symbol()
    await platform.quote(symbol, "99", "50", "101", "50")
    await platform.quote(other, "99", "50", "101", "50")
    placed = [
        (
            await platform.place(
                tenant, symbol=symbol, side=BUY, type=LIMIT, limit_price=D("98"), quantity=D("1")
            )
        ).order
        for _ in range(7)
    ]
    await platform.place(tenant, symbol=other, side=BUY, type=MARKET, quantity=D("1"))

    seen: list[str] = []
    token = ""
    while True:
        page = await platform.execution.ListOrders(
            pb.ListOrdersRequest(page_size=3, page_token=token, symbol=symbol), metadata=md(tenant)
        )
        assert len(page.orders) <= 3
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == [o.order_id for o in reversed(placed)]

    filled = await platform.execution.ListOrders(
        pb.ListOrdersRequest(statuses=[types.ORDER_STATUS_FILLED]), metadata=md(tenant)
    )
    assert [o.symbol for o in filled.orders] == [other]

    first = await platform.execution.ListOrders(
        pb.ListOrdersRequest(page_size=2, symbol=symbol), metadata=md(tenant)
    )
    for bad in ("not-a-token!", first.next_page_token):  # forged; issued for other filters
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await platform.execution.ListOrders(
                pb.ListOrdersRequest(page_size=2, page_token=bad, symbol=other), metadata=md(tenant)
            )
        assert error_details(err.value).violated_fields == ["page_token"]


async def test_stream_order_updates_snapshots_then_live_changes(platform: Platform) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    await platform.quote(symbol, "99", "5", "101", "5")
    resting = await platform.place(
        tenant, symbol=symbol, side=BUY, type=LIMIT, limit_price=D("98"), quantity=D("1")
    )

    call = platform.execution.StreamOrderUpdates(
        pb.StreamOrderUpdatesRequest(symbol=symbol, include_open_orders=True), metadata=md(tenant)
    )
    first = await asyncio.wait_for(call.read(), 10)
    assert isinstance(first, pb.StreamOrderUpdatesResponse)
    assert first.snapshot and first.order.order_id == resting.order.order_id

    placed = await platform.place(tenant, symbol=symbol, side=BUY, type=MARKET, quantity=D("1"))
    updates: list[pb.StreamOrderUpdatesResponse] = []
    while len(updates) < 2:  # ACCEPTED, then the fill (FILLED)
        update = await asyncio.wait_for(call.read(), 10)
        assert isinstance(update, pb.StreamOrderUpdatesResponse)
        if update.order.order_id == placed.order.order_id:
            updates.append(update)
    accepted, fill = updates
    assert (accepted.order.status, accepted.previous_status, accepted.snapshot) == (
        types.ORDER_STATUS_ACCEPTED,
        types.ORDER_STATUS_UNSPECIFIED,
        False,
    )
    assert (fill.order.status, fill.previous_status) == (
        types.ORDER_STATUS_FILLED,
        types.ORDER_STATUS_ACCEPTED,
    )
    assert fill.fill.quantity.value == "1" and fill.fill.price.value == "101"
    call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED


# ---------------------------------------------------------------------------- tenancy


async def test_tenant_cannot_read_or_cancel_another_tenants_orders(
    platform: Platform, pg_pool: asyncpg.Pool
) -> None:
    a, b, symbol = new_tenant(), new_tenant(), new_symbol()
    await platform.quote(symbol, "99", "5", "101", "5")
    order = (
        await platform.place(
            a,
            client_order_id="mine",
            symbol=symbol,
            side=BUY,
            type=LIMIT,
            limit_price=D("98"),
            quantity=D("1"),
        )
    ).order

    for call in (
        platform.execution.GetOrder(pb.GetOrderRequest(order_id=order.order_id), metadata=md(b)),
        platform.execution.GetOrder(pb.GetOrderRequest(client_order_id="mine"), metadata=md(b)),
        platform.execution.CancelOrder(pb.CancelOrderRequest(order_id=order.order_id), metadata=md(b)),
        platform.execution.CancelOrder(pb.CancelOrderRequest(client_order_id="mine"), metadata=md(b)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await platform.execution.ListOrders(pb.ListOrdersRequest(), metadata=md(b))
    assert list(listed.orders) == []
    # B reusing A's client_order_id places B's own order.
    await platform.place(
        b, client_order_id="mine", symbol=symbol, side=BUY, type=LIMIT, limit_price=D("98"), quantity=D("1")
    )
    assert (await platform.get(a, order.order_id)).status == types.ORDER_STATUS_ACCEPTED

    # The database itself refuses: no tenant filter in these statements, RLS alone.
    async with tenant_transaction(pg_pool, b) as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM execution.orders WHERE order_id = $1::uuid", order.order_id
            )
            == 0
        )
        assert (
            await conn.execute(
                "UPDATE execution.orders SET status = 6 WHERE order_id = $1::uuid", order.order_id
            )
            == "UPDATE 0"
        )
        assert await conn.fetchval("SELECT count(*) FROM execution.outbox WHERE tenant_id = $1", a) == 0
    async with tenant_transaction(pg_pool, a) as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM execution.orders WHERE order_id = $1::uuid", order.order_id
            )
            == 1
        )
