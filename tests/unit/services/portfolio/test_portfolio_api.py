"""The PortfolioService servicer on the in-memory adapters: positions and the
portfolio as the contract shows them, per tenant, marked with the last quotes.
Expected figures are worked out in the comments."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import grpc
import pytest
from nats.aio.client import Client as NatsClient
from trading.common.v1 import decimal_pb2, market_pb2
from trading.portfolio.v1 import portfolio_service_pb2 as pb

from runtime import decimals
from services.portfolio import domain
from services.portfolio.adapters.memory import MemoryBookStore, MemoryQuoteCache
from services.portfolio.api import PortfolioApi
from services.portfolio.views import PortfolioViews
from tests.suites.portfolio_ports import fill, record
from tests.support.servicers import ServicerContext, as_caller, expect_error, servicer_context

BUY, SELL = domain.Side.BUY, domain.Side.SELL
START = domain.DEFAULT_STARTING_CASH
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SCOPES = ["portfolio:read"]


class Desk:
    """The servicer with its in-memory books and quotes."""

    def __init__(self) -> None:
        self.books = MemoryBookStore()
        self.quotes = MemoryQuoteCache()
        # StreamPortfolio's NATS wake-ups are not exercised here (no server): an unconnected client.
        self.api = PortfolioApi(PortfolioViews(self.books, self.quotes), NatsClient())

    async def fill(
        self, tenant: str, symbol: str, side: domain.Side, qty: str, price: str, fee: str = "0"
    ) -> None:
        assert await self.books.apply_fill(tenant, record(), fill(symbol, side, qty, price, fee), now=AT)

    def quote(self, symbol: str, bid: str, ask: str) -> None:
        message = market_pb2.Quote(
            symbol=symbol, bid_price=decimal_pb2.Decimal(value=bid), ask_price=decimal_pb2.Decimal(value=ask)
        )
        message.exchange_time.FromDatetime(AT)
        self.quotes.put(symbol, message)


@pytest.fixture
def desk() -> Desk:
    return Desk()


def num(value: decimal_pb2.Decimal) -> D:
    return decimals.from_proto(value)


async def positions(desk: Desk, tenant: str, **request: object) -> pb.GetPositionsResponse:
    with as_caller(tenant, scopes=SCOPES):
        return await desk.api.GetPositions(pb.GetPositionsRequest(**request), servicer_context())  # type: ignore[arg-type]


async def portfolio(desk: Desk, tenant: str) -> pb.GetPortfolioResponse:
    with as_caller(tenant, scopes=SCOPES):
        return await desk.api.GetPortfolio(pb.GetPortfolioRequest(), servicer_context())


async def test_positions_are_marked_at_the_mid_of_the_last_quote(desk: Desk) -> None:
    await desk.fill("tenant-a", "BTC-USD", BUY, "2", "100", fee="0.5")
    desk.quote("BTC-USD", "109", "111")  # mid 110
    response = await positions(desk, "tenant-a")
    (position,) = response.positions
    assert position.symbol == "BTC-USD"
    assert (num(position.quantity), num(position.average_price), num(position.mark_price)) == (
        D(2),
        D(100),
        D(110),
    )
    assert num(position.market_value.amount) == 220  # 2 x 110
    assert num(position.cost_basis.amount) == 200  # 2 x 100
    assert num(position.unrealized_pnl.amount) == 20
    assert num(position.fees_paid.amount) == D("0.5")
    assert position.market_value.currency == "USD"
    assert position.marked_at.ToDatetime(tzinfo=UTC) == AT
    assert position.updated_at.ToDatetime(tzinfo=UTC) == AT
    assert position.version == 1
    assert response.HasField("as_of")


async def test_without_a_quote_a_position_is_valued_at_cost(desk: Desk) -> None:
    await desk.fill("tenant-a", "ETH-USD", SELL, "3", "50")
    (position,) = (await positions(desk, "tenant-a")).positions
    assert not position.HasField("mark_price")
    assert num(position.market_value.amount) == -150  # short 3 at cost 50
    assert num(position.unrealized_pnl.amount) == 0


async def test_closed_positions_only_on_request_and_the_symbol_filter(desk: Desk) -> None:
    await desk.fill("tenant-a", "BTC-USD", BUY, "1", "100")
    await desk.fill("tenant-a", "BTC-USD", SELL, "1", "130")  # closed, realised 30
    await desk.fill("tenant-a", "ETH-USD", BUY, "1", "10")
    assert [p.symbol for p in (await positions(desk, "tenant-a")).positions] == ["ETH-USD"]
    everything = (await positions(desk, "tenant-a", include_closed=True)).positions
    assert [p.symbol for p in everything] == ["BTC-USD", "ETH-USD"]
    closed = everything[0]
    assert num(closed.quantity) == 0 and not closed.HasField("average_price")
    assert num(closed.realized_pnl.amount) == 30
    only = await positions(desk, "tenant-a", symbol="BTC-USD", include_closed=True)
    assert [p.symbol for p in only.positions] == ["BTC-USD"]


async def test_the_portfolio_adds_cash_and_marked_positions(desk: Desk) -> None:
    await desk.fill("tenant-a", "BTC-USD", BUY, "2", "100", fee="1")  # cash -201
    await desk.fill("tenant-a", "ETH-USD", SELL, "4", "25")  # cash +100
    await desk.fill("tenant-a", "SOL-USD", BUY, "1", "5")
    await desk.fill("tenant-a", "SOL-USD", SELL, "1", "7")  # flat: cash -5 +7, realised 2
    desk.quote("BTC-USD", "119", "121")  # long 2 marked at 120: +240, unrealised +40
    desk.quote("ETH-USD", "29", "31")  # short 4 marked at 30: -120, unrealised -20
    p = (await portfolio(desk, "tenant-a")).portfolio
    cash = START - 201 + 100 - 5 + 7
    assert num(p.cash.amount) == cash
    assert num(p.market_value.amount) == 120  # 240 - 120
    assert num(p.equity.amount) == cash + 120
    assert num(p.gross_exposure.amount) == 360  # 240 + 120
    assert num(p.total_unrealized_pnl.amount) == 20  # 40 - 20
    assert num(p.total_realized_pnl.amount) == 2
    assert num(p.total_fees.amount) == 1
    assert [q.symbol for q in p.positions] == ["BTC-USD", "ETH-USD"]  # open ones only
    assert p.version == 4


async def test_a_tenant_never_sees_another_tenants_books(desk: Desk) -> None:
    await desk.fill("tenant-a", "BTC-USD", BUY, "5", "100")
    assert list((await positions(desk, "tenant-b", include_closed=True)).positions) == []
    b = (await portfolio(desk, "tenant-b")).portfolio
    assert num(b.cash.amount) == START and num(b.equity.amount) == START
    assert list(b.positions) == [] and b.version == 0
    a = (await portfolio(desk, "tenant-a")).portfolio
    assert num(a.cash.amount) == START - 500


async def test_a_call_without_a_tenant_is_unauthenticated(desk: Desk) -> None:
    with as_caller("", scopes=SCOPES):
        await expect_error(
            desk.api.GetPortfolio(pb.GetPortfolioRequest(), ServicerContext()),  # type: ignore[arg-type]
            grpc.StatusCode.UNAUTHENTICATED,
        )


async def test_a_tenant_id_that_is_no_subject_token_cannot_be_streamed(desk: Desk) -> None:
    with as_caller("tenant.a", scopes=SCOPES):
        stream = desk.api.StreamPortfolio(pb.StreamPortfolioRequest(), servicer_context())
        await expect_error(anext(stream), grpc.StatusCode.INVALID_ARGUMENT)
    assert desk.api.active_streams == 0
