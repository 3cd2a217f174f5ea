"""The Python client SDK (clients/python, package trading-client) against the
running platform, through the public gRPC edge, as a client team uses it:
log in, quote, place an order once (a repeat with the same idempotency key is
replayed), stream it to FILLED, read the portfolio; the sync client reads too;
no credential is Unauthenticated; another tenant cannot see the order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio
import trading_client
from trading.common.v1 import decimal_pb2, market_pb2, types_pb2
from trading.execution.v1 import execution_service_pb2 as ex
from trading.execution.v1 import types_pb2 as ex_types
from trading.marketdata.v1 import marketdata_service_pb2 as md
from trading.portfolio.v1 import portfolio_service_pb2 as pf
from trading.portfolio.v1 import types_pb2 as pf_types
from trading_client import AsyncTradingClient, TradingClient, idempotency_key, replayed

from gateway.edge import edge_ca_file, edge_target
from tests.contract.conftest import RunningPlatform, create_tenant
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def market_buy(quantity: str = "0.01") -> ex.PlaceOrderRequest:
    return ex.PlaceOrderRequest(
        client_order_id=f"py-sdk-{uuid.uuid4().hex[:12]}",
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        type=market_pb2.ORDER_TYPE_MARKET,
        time_in_force=ex_types.TIME_IN_FORCE_IOC,
        quantity=decimal_pb2.Decimal(value=quantity),
    )


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def login(platform: RunningPlatform) -> tuple[str, str, str]:
    """A trader of a tenant of its own: the demo tenant's limits and trading
    state are whatever earlier contract tests left (the every-RPC walk sets them)."""
    tenant = await create_tenant(platform, "py-sdk-other")
    return tenant.slug, tenant.email, tenant.password


@pytest_asyncio.fixture(loop_scope="session")
async def trader(platform: RunningPlatform, login: tuple[str, str, str]) -> AsyncIterator[AsyncTradingClient]:
    settings = platform.settings
    async with AsyncTradingClient(
        edge_target(settings), ca_file=edge_ca_file(settings), login=login
    ) as client:
        yield client


def _btc_position(reply: pf.GetPortfolioResponse) -> pf_types.Position | None:
    return next((p for p in reply.portfolio.positions if p.symbol == "BTC-USD"), None)


async def test_a_trader_quotes_orders_once_streams_to_filled_and_reads_the_portfolio(
    platform: RunningPlatform, trader: AsyncTradingClient, login: tuple[str, str, str]
) -> None:
    await trader.authenticate()
    assert trader.tokens is not None and trader.tokens.tokens is not None

    quote = await trader.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"))
    assert quote.quote.symbol == "BTC-USD"

    stream = trader.execution.StreamOrderUpdates(ex.StreamOrderUpdatesRequest(symbol="BTC-USD"))
    order_id = ""

    async def until_filled() -> list[int]:
        seen: list[int] = []
        async for update in stream:
            if order_id and update.order.order_id == order_id:
                seen.append(update.order.status)
                if update.order.status == ex_types.ORDER_STATUS_FILLED:
                    break
        return seen

    watcher = asyncio.create_task(until_filled())
    await asyncio.sleep(1.0)  # the edge subscribes the stream when the call arrives

    key = f"py-sdk-{uuid.uuid4()}"
    request = market_buy()
    first = trader.execution.PlaceOrder(request, metadata=idempotency_key(key), timeout=10)
    placed = await first
    order_id = placed.order.order_id
    assert order_id and not replayed(await first.initial_metadata())
    again = trader.execution.PlaceOrder(request, metadata=idempotency_key(key), timeout=10)
    assert (await again).order.order_id == order_id
    assert replayed(await again.initial_metadata())

    try:
        statuses = await asyncio.wait_for(watcher, 20)
    finally:
        stream.cancel()
    assert statuses and statuses[-1] == ex_types.ORDER_STATUS_FILLED, statuses

    # Without a key of its own a mutating call gets one from the client.
    other = await trader.execution.PlaceOrder(market_buy())
    assert other.order.order_id not in ("", order_id)

    async def long_position() -> pf_types.Position | None:
        held = _btc_position(await trader.portfolio.GetPortfolio(pf.GetPortfolioRequest()))
        return held if held is not None and Decimal(held.quantity.value or "0") > 0 else None

    await eventually(long_position, 20, "a long BTC-USD position in the portfolio")

    # The sync client, in a thread (this loop runs the async one).
    def sync_reads() -> tuple[list[str], int, trading_client.TradingError | None]:
        settings = platform.settings
        with TradingClient(edge_target(settings), ca_file=edge_ca_file(settings), login=login) as client:
            page = client.marketdata.ListInstruments(md.ListInstrumentsRequest(page_size=3))
            rest = client.marketdata.ListInstruments(
                md.ListInstrumentsRequest(page_size=3, page_token=page.next_page_token)
            )
            status = client.execution.GetOrder(ex.GetOrderRequest(order_id=order_id)).order.status
            try:
                client.marketdata.GetInstrument(md.GetInstrumentRequest(symbol="NOPE-USD"))
            except trading_client.TradingError as exc:
                return [i.symbol for i in [*page.instruments, *rest.instruments]], status, exc
        return [], status, None

    symbols, status, missing = await asyncio.to_thread(sync_reads)
    assert {"BTC-USD", "ETH-USD"} <= set(symbols) and symbols == sorted(symbols), symbols
    assert status == ex_types.ORDER_STATUS_FILLED
    assert isinstance(missing, trading_client.NotFound), missing


async def test_a_call_without_credentials_is_unauthenticated(platform: RunningPlatform) -> None:
    settings = platform.settings
    async with AsyncTradingClient(edge_target(settings), ca_file=edge_ca_file(settings)) as anonymous:
        with pytest.raises(trading_client.Unauthenticated) as refused:
            await anonymous.marketdata.GetQuote(md.GetQuoteRequest(symbol="BTC-USD"))
    assert refused.value.domain == "trading.gateway", refused.value


async def test_another_tenant_cannot_read_the_order(
    platform: RunningPlatform, trader: AsyncTradingClient
) -> None:
    placed = await trader.execution.PlaceOrder(market_buy())
    tenant = await create_tenant(platform, "py-sdk-other")
    settings = platform.settings
    async with AsyncTradingClient(
        edge_target(settings),
        ca_file=edge_ca_file(settings),
        login=(tenant.slug, tenant.email, tenant.password),
    ) as other:
        with pytest.raises((trading_client.NotFound, trading_client.PermissionDenied)):
            await other.execution.GetOrder(ex.GetOrderRequest(order_id=placed.order.order_id))
        # ...while its own reads work.
        assert (await other.portfolio.GetPortfolio(pf.GetPortfolioRequest())).portfolio is not None
