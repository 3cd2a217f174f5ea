"""Event-sourced replay end to end: the order path runs as `./dev run` runs it
(tools.supervisor, every service its own process, isolated servers), audit
consumes every topic, and the orders and positions rebuilt from the audit
store alone equal execution's and portfolio's exactly; a live position
altered behind the services' backs is reported as a difference, by the RPC
and by `tradingctl audit replay`.

Audit reads the live state under a delegation from identity for the tenant,
so identity runs too and the tenant is created there by the platform
operator; the test calls the services as the gateway (mutual TLS, a context
token for the tenant), the CLI as the operator.

marketdata's synthetic feed quotes two symbols; a fresh tenant places market
IOC orders both ways on both (risk checks them, the paper venue fills them,
the outbox relays order and fill events to Kafka, portfolio books the fills),
a resting limit order that it then cancels (PENDING_CANCEL, CANCELED) and an
order risk refuses (REJECTED).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import asyncpg
import grpc
import pytest
from trading.audit.v1 import audit_service_pb2 as apb
from trading.audit.v1 import audit_service_pb2_grpc as apb_grpc
from trading.audit.v1 import types_pb2 as audit_types
from trading.common.v1 import market_pb2
from trading.common.v1 import types_pb2 as common_types
from trading.execution.v1 import execution_service_pb2 as epb
from trading.execution.v1 import execution_service_pb2_grpc as epb_grpc
from trading.execution.v1 import types_pb2 as exec_types
from trading.marketdata.v1 import marketdata_service_pb2 as mpb
from trading.marketdata.v1 import marketdata_service_pb2_grpc as mpb_grpc
from trading.portfolio.v1 import portfolio_service_pb2 as ppb
from trading.portfolio.v1 import portfolio_service_pb2_grpc as ppb_grpc

from runtime.config import Settings, to_env
from runtime.decimals import from_proto, to_proto
from tests.integration.test_hot_path_e2e import new_tenant, operator_env
from tests.support.polling import eventually
from tests.support.security import as_user, secure_channel
from tools.supervisor import isolated_settings, platform_running

if TYPE_CHECKING:
    from trading.audit.v1.audit_service_pb2_grpc import AuditServiceAsyncStub
    from trading.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub
    from trading.marketdata.v1.marketdata_service_pb2_grpc import MarketDataServiceAsyncStub
    from trading.portfolio.v1.portfolio_service_pb2_grpc import PortfolioServiceAsyncStub

T = TypeVar("T")
pytestmark = pytest.mark.integration

SERVICES = ("identity", "marketdata", "risk", "execution", "portfolio", "audit")
SYMBOLS = ("BTC-USD", "ETH-USD")
QUANTITY = Decimal("0.01")
TERMINAL = frozenset(
    {
        exec_types.ORDER_STATUS_FILLED,
        exec_types.ORDER_STATUS_CANCELED,
        exec_types.ORDER_STATUS_REJECTED,
        exec_types.ORDER_STATUS_EXPIRED,
    }
)


SCOPES = ("orders:read", "orders:write", "portfolio:read", "audit:read", "admin")


@dataclass
class Platform:
    settings: Settings
    marketdata: MarketDataServiceAsyncStub
    execution: ExecutionServiceAsyncStub
    portfolio: PortfolioServiceAsyncStub
    audit: AuditServiceAsyncStub

    def md(self, service: str, tenant: str, scopes: Sequence[str] = SCOPES) -> tuple[tuple[str, str], ...]:
        """A call to `service` for `tenant`, as the gateway with the platform's certificates."""
        return as_user(self.settings, service, tenant, subject="user-audit-e2e", scopes=scopes)


@pytest.fixture
async def platform(
    infra_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Platform]:
    settings = isolated_settings(infra_settings, tmp_path)
    settings.telemetry.log_level = "WARNING"
    settings.marketdata.feed = "synthetic"
    settings.marketdata.feed_symbols = list(SYMBOLS)
    settings.marketdata.feed_rate = 20.0
    settings.marketdata.feed_seed = 20240502
    operator_env(monkeypatch)
    async with (
        platform_running(settings, SERVICES, ready_timeout=90.0),
        secure_channel(settings, settings.address_of("marketdata"), "marketdata") as mch,
        secure_channel(settings, settings.address_of("execution"), "execution") as ech,
        secure_channel(settings, settings.address_of("portfolio"), "portfolio") as pch,
        secure_channel(settings, settings.address_of("audit"), "audit") as ach,
    ):
        yield Platform(
            settings,
            mpb_grpc.MarketDataServiceStub(mch),
            epb_grpc.ExecutionServiceStub(ech),
            ppb_grpc.PortfolioServiceStub(pch),
            apb_grpc.AuditServiceStub(ach),
        )


async def bid_of(p: Platform, tenant: str, symbol: str) -> Decimal:
    async def probe() -> Decimal | None:
        try:
            reply = await p.marketdata.GetQuote(
                mpb.GetQuoteRequest(symbol=symbol),
                metadata=p.md("marketdata", tenant, ["marketdata:read"]),
                timeout=5,
            )
        except grpc.aio.AioRpcError:
            return None
        bid = from_proto(reply.quote.bid_price)
        return bid if bid > 0 else None

    return await eventually(probe, 30.0, f"a quote of {symbol}")


async def place(p: Platform, tenant: str, **fields: object) -> epb.PlaceOrderResponse:
    request = epb.PlaceOrderRequest(client_order_id=f"ae-{uuid.uuid4().hex[:12]}", **fields)  # type: ignore[arg-type]
    reply: epb.PlaceOrderResponse = await p.execution.PlaceOrder(
        request, metadata=p.md("execution", tenant), timeout=10
    )
    return reply


async def list_orders(p: Platform, tenant: str) -> list[exec_types.Order]:
    reply = await p.execution.ListOrders(
        epb.ListOrdersRequest(page_size=500), metadata=p.md("execution", tenant), timeout=10
    )
    assert not reply.next_page_token
    return list(reply.orders)


async def replay(p: Platform, tenant: str) -> apb.ReplayTenantResponse:
    reply: apb.ReplayTenantResponse = await p.audit.ReplayTenant(
        apb.ReplayTenantRequest(), metadata=p.md("audit", tenant), timeout=30
    )
    return reply


def tradingctl(p: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as its own process, with the platform's settings (its certificates under <var_dir>/pki)."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "tradingctl"),
            "audit",
            "--address",
            p.settings.address_of("audit"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **to_env(p.settings)},
    )


async def test_replay_from_the_audit_store_reproduces_orders_and_positions(platform: Platform) -> None:
    p = platform
    tenant = await new_tenant(p.settings, "t-audit")
    market = {"type": market_pb2.ORDER_TYPE_MARKET, "time_in_force": exec_types.TIME_IN_FORCE_IOC}
    buy, sell = common_types.SIDE_BUY, common_types.SIDE_SELL
    for symbol in SYMBOLS:
        await bid_of(p, tenant, symbol)
    # Market orders both ways: three buys and a sell per symbol, interleaved.
    for side in (buy, buy, sell, buy):
        for symbol in SYMBOLS:
            placed = await place(p, tenant, symbol=symbol, side=side, quantity=to_proto(QUANTITY), **market)
            assert placed.order.status == exec_types.ORDER_STATUS_FILLED, placed.order
    # A resting limit buy 2% under the bid (inside risk's 5% collar), then canceled.
    limit = (await bid_of(p, tenant, "BTC-USD") * Decimal("0.98")).quantize(Decimal("0.01"))
    resting = await place(
        p,
        tenant,
        symbol="BTC-USD",
        side=buy,
        quantity=to_proto(QUANTITY),
        type=market_pb2.ORDER_TYPE_LIMIT,
        time_in_force=exec_types.TIME_IN_FORCE_GTC,
        limit_price=to_proto(limit),
    )
    assert resting.order.status == exec_types.ORDER_STATUS_ACCEPTED, resting.order
    canceled = await p.execution.CancelOrder(
        epb.CancelOrderRequest(order_id=resting.order.order_id),
        metadata=p.md("execution", tenant),
        timeout=10,
    )
    assert canceled.order.status == exec_types.ORDER_STATUS_CANCELED
    # An order risk refuses: far above the 100,000 notional limit.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await place(p, tenant, symbol="ETH-USD", side=buy, quantity=to_proto(Decimal(100_000)), **market)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    orders = await list_orders(p, tenant)
    assert len(orders) == 10 and all(o.status in TERMINAL for o in orders)
    assert {o.status for o in orders} == {
        exec_types.ORDER_STATUS_FILLED,
        exec_types.ORDER_STATUS_CANCELED,
        exec_types.ORDER_STATUS_REJECTED,
    }
    fills = sum(1 for o in orders if from_proto(o.filled_quantity) > 0)
    want_order_events = sum(o.version - 1 for o in orders)

    async def audited() -> bool:
        """Audit stored every order event and a PositionChanged per fill, and
        portfolio booked every fill."""
        records = await p.audit.QueryEvents(
            apb.QueryEventsRequest(page_size=500), metadata=p.md("audit", tenant), timeout=10
        )
        types = [r.event_type for r in records.records]
        order_events = sum(1 for t in types if t.startswith("trading.execution.v1."))
        changes = types.count("trading.portfolio.v1.PositionChanged")
        positions = await p.portfolio.GetPositions(
            ppb.GetPositionsRequest(include_closed=True), metadata=p.md("portfolio", tenant), timeout=10
        )
        booked = sum(pos.version for pos in positions.positions)
        return order_events >= want_order_events and changes >= fills and booked == fills

    await eventually(audited, 45.0, "audit holds every order event and every booking")

    reply = await replay(p, tenant)
    assert reply.consistent, list(reply.differences)
    assert reply.differences == [] and not reply.truncated
    assert reply.orders_compared == 10 and reply.positions_compared == len(SYMBOLS)
    assert reply.events_replayed >= want_order_events + fills
    chain = await p.audit.VerifyChain(apb.VerifyChainRequest(), metadata=p.md("audit", tenant), timeout=10)
    assert chain.ok and reply.up_to_sequence <= chain.last_sequence

    cli = await asyncio.to_thread(tradingctl, p, "replay", "--tenant", tenant)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "consistent" in cli.stdout and "10 orders, 2 positions compared" in cli.stdout

    # ---- diverge the live state behind the services' backs
    admin = await asyncpg.connect(p.settings.postgres.dsn)
    try:
        altered = await admin.execute(
            "UPDATE portfolio.positions SET realized_pnl = realized_pnl + 1"
            " WHERE tenant_id = $1 AND symbol = $2",
            tenant,
            "ETH-USD",
        )
        assert altered == "UPDATE 1"
    finally:
        await admin.close()
    diverged = await replay(p, tenant)
    assert not diverged.consistent
    assert [(d.aggregate_type, d.aggregate_id, d.field, d.kind) for d in diverged.differences] == [
        ("position", "ETH-USD", "realized_pnl", audit_types.DIFFERENCE_KIND_VALUE_MISMATCH)
    ]
    difference = diverged.differences[0]
    assert Decimal(difference.live_value) - Decimal(difference.replayed_value) == 1
    cli = await asyncio.to_thread(tradingctl, p, "replay", "--tenant", tenant)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "VALUE_MISMATCH" in cli.stdout and "position ETH-USD realized_pnl" in cli.stdout
    print(
        f"\naudit replay e2e: {reply.events_replayed} events replayed up to sequence {reply.up_to_sequence}, "
        f"{reply.orders_compared} orders ({fills} filled), {reply.positions_compared} positions: consistent; "
        f"after the edit: {difference.aggregate_id} {difference.field} replayed={difference.replayed_value} "
        f"live={difference.live_value}"
    )
