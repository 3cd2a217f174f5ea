"""marketdata's instrument universe over gRPC, on real PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from trading.marketdata.v1 import marketdata_service_pb2 as pb
from trading.marketdata.v1 import marketdata_service_pb2_grpc as pb_grpc

from runtime.config import Settings
from runtime.errors import error_details
from services.marketdata.feeds import FeedSettings
from services.marketdata.main import make_spec
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

# No feed: this test is about reference data, and must not quote shared symbols.
SPEC = make_spec(FeedSettings(feed="none"))


async def test_instruments_are_seeded_paged_filtered_and_looked_up(infra_settings: Settings) -> None:
    async with (
        running_service(SPEC, infra_settings) as address,
        service_channel(address, "marketdata") as channel,
    ):
        stub = pb_grpc.MarketDataServiceStub(channel)
        md = user_md("marketdata", "tenant-md")
        symbols: list[str] = []
        token = ""
        while True:
            page = await stub.ListInstruments(
                pb.ListInstrumentsRequest(page_size=3, page_token=token), metadata=md
            )
            assert len(page.instruments) <= 3
            symbols += [i.symbol for i in page.instruments]
            token = page.next_page_token
            if not token:
                break
        assert symbols == sorted(symbols) and len(symbols) == len(set(symbols)) == 8
        crypto = await stub.ListInstruments(
            pb.ListInstrumentsRequest(asset_class=pb.ASSET_CLASS_CRYPTO), metadata=md
        )
        assert {i.symbol for i in crypto.instruments} == {"BTC-USD", "ETH-USD", "SOL-USD"}

        btc = (await stub.GetInstrument(pb.GetInstrumentRequest(symbol="BTC-USD"), metadata=md)).instrument
        assert (btc.tick_size.value, btc.lot_size.value, btc.status) == (
            "0.01",
            "0.00001",
            pb.INSTRUMENT_STATUS_TRADING,
        )

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetInstrument(pb.GetInstrumentRequest(symbol="NOPE"), metadata=md)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        info = error_details(missing.value).error_info
        assert info is not None and info.reason == "INSTRUMENT_NOT_FOUND"

        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await stub.ListInstruments(pb.ListInstrumentsRequest(page_token="not-a-token!"), metadata=md)
        assert error_details(forged.value).violated_fields == ["page_token"]
