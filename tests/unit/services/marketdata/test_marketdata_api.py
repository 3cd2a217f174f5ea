"""MarketDataService's instrument and quote RPCs on the in-memory adapters.

Instruments and quotes are platform-wide reference data (no tenant: every
tenant reads the same). StreamQuotes' live part (NATS) runs against a real
nats-server in tests/integration/services/test_marketdata_instruments.py;
here only its refusal of unknown symbols, made before it subscribes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
import pytest
from nats.aio.client import Client as NatsClient
from trading.common.v1 import decimal_pb2, market_pb2
from trading.marketdata.v1 import marketdata_service_pb2 as pb

from services.marketdata.adapters.memory import MemoryInstrumentStore, MemoryQuoteCache
from services.marketdata.api import MarketDataApi
from services.marketdata.ports import InstrumentRow
from tests.support.servicers import as_caller, expect_error, servicer_context

Context = grpc.aio.ServicerContext[Any, Any]


def instrument(symbol: str, asset_class: str = "CRYPTO", status: str = "TRADING") -> InstrumentRow:
    base, _, quote = symbol.partition("-")
    return InstrumentRow(
        symbol=symbol,
        base_asset=base,
        quote_asset=quote or "USD",
        asset_class=asset_class,
        tick_size=Decimal("0.01"),
        lot_size=Decimal("0.0001"),
        min_quantity=Decimal("0.0001"),
        status=status,
        description=f"{symbol} for tests",
    )


UNIVERSE = (
    instrument("BTC-USD"),
    instrument("ETH-USD"),
    instrument("EUR-USD", asset_class="FX"),
    instrument("AAPL", asset_class="EQUITY", status="HALTED"),
)


@dataclass
class Harness:
    api: MarketDataApi
    quotes: MemoryQuoteCache


@pytest.fixture
def marketdata() -> Harness:
    quotes = MemoryQuoteCache()
    # StreamQuotes' NATS client is never connected here (no call below subscribes).
    return Harness(MarketDataApi(MemoryInstrumentStore(UNIVERSE), quotes, NatsClient()), quotes)


def context() -> Context:
    """A fresh recorded call context, typed as the servicer's."""
    return servicer_context()


def quote(symbol: str, sequence: int) -> market_pb2.Quote:
    return market_pb2.Quote(
        symbol=symbol,
        sequence=sequence,
        source="synthetic",
        bid_price=decimal_pb2.Decimal(value="100.25"),
        ask_price=decimal_pb2.Decimal(value="100.5"),
    )


async def test_instruments_page_by_symbol(marketdata: Harness) -> None:
    api = marketdata.api
    with as_caller("tenant-a", scopes=["marketdata:read"]):
        first = await api.ListInstruments(pb.ListInstrumentsRequest(page_size=3), context())
        second = await api.ListInstruments(
            pb.ListInstrumentsRequest(page_size=3, page_token=first.next_page_token), context()
        )
    assert [i.symbol for i in first.instruments] == ["AAPL", "BTC-USD", "ETH-USD"]
    assert [i.symbol for i in second.instruments] == ["EUR-USD"]
    assert second.next_page_token == ""
    aapl = first.instruments[0]
    assert (aapl.asset_class, aapl.status) == (pb.ASSET_CLASS_EQUITY, pb.INSTRUMENT_STATUS_HALTED)
    assert aapl.tick_size.value == "0.01" and aapl.min_quantity.value == "0.0001"


async def test_instrument_filters_combine(marketdata: Harness) -> None:
    request = pb.ListInstrumentsRequest(
        status=pb.INSTRUMENT_STATUS_TRADING, asset_class=pb.ASSET_CLASS_CRYPTO, quote_asset="USD"
    )
    with as_caller("tenant-a"):
        listed = await marketdata.api.ListInstruments(request, context())
        halted = await marketdata.api.ListInstruments(
            pb.ListInstrumentsRequest(status=pb.INSTRUMENT_STATUS_HALTED), context()
        )
    assert [i.symbol for i in listed.instruments] == ["BTC-USD", "ETH-USD"]
    assert [i.symbol for i in halted.instruments] == ["AAPL"]


async def test_a_page_token_not_ours_is_invalid_argument(marketdata: Harness) -> None:
    with as_caller("tenant-a"):
        await expect_error(
            marketdata.api.ListInstruments(pb.ListInstrumentsRequest(page_token="garbage"), context()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )


async def test_an_instrument_is_found_by_symbol_or_not_found(marketdata: Harness) -> None:
    with as_caller("tenant-a"):
        found = await marketdata.api.GetInstrument(pb.GetInstrumentRequest(symbol="EUR-USD"), context())
        await expect_error(
            marketdata.api.GetInstrument(pb.GetInstrumentRequest(symbol="DOGE-USD"), context()),
            grpc.StatusCode.NOT_FOUND,
        )
    assert (found.instrument.symbol, found.instrument.asset_class) == ("EUR-USD", pb.ASSET_CLASS_FX)


async def test_the_last_quote_is_served_and_every_tenant_reads_the_same(marketdata: Harness) -> None:
    h = marketdata
    await h.quotes.put_latest({"BTC-USD": quote("BTC-USD", 6).SerializeToString()})
    await h.quotes.put_latest({"BTC-USD": quote("BTC-USD", 7).SerializeToString()})
    for tenant in ("tenant-a", "tenant-b"):
        with as_caller(tenant):
            answer = await h.api.GetQuote(pb.GetQuoteRequest(symbol="BTC-USD"), context())
        assert answer.quote == quote("BTC-USD", 7)


async def test_a_quote_not_ticked_yet_is_unavailable_and_an_unknown_symbol_not_found(
    marketdata: Harness,
) -> None:
    with as_caller("tenant-a"):
        error = await expect_error(
            marketdata.api.GetQuote(pb.GetQuoteRequest(symbol="ETH-USD"), context()),
            grpc.StatusCode.UNAVAILABLE,
        )
        await expect_error(
            marketdata.api.GetQuote(pb.GetQuoteRequest(symbol="DOGE-USD"), context()),
            grpc.StatusCode.NOT_FOUND,
        )
    assert "ETH-USD" in str(error)


async def test_streaming_unknown_symbols_is_not_found_before_subscribing(marketdata: Harness) -> None:
    request = pb.StreamQuotesRequest(symbols=["BTC-USD", "DOGE-USD", "XRP-USD"])
    with as_caller("tenant-a"):
        stream = marketdata.api.StreamQuotes(request, context())
        error = await expect_error(anext(stream), grpc.StatusCode.NOT_FOUND)
    assert "DOGE-USD, XRP-USD" in str(error)
