"""gRPC API of the marketdata service (trading.marketdata.v1.MarketDataService).

The instrument universe (ListInstruments, GetInstrument) from the
InstrumentStore port (PostgreSQL); the last quote (GetQuote) from the
QuoteCache port (Redis ``md:quote:{symbol}``); StreamQuotes sends a
snapshot of the cache and then live ticks from a NATS core subscription on the
symbols' tick subjects (subscribed before the snapshot is read, so nothing
falls in between; live ticks not newer than the snapshot are dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient
from prometheus_client import Gauge
from trading.common.v1 import market_pb2
from trading.marketdata.v1 import events_pb2
from trading.marketdata.v1 import marketdata_service_pb2 as pb

from runtime import decimals, paging
from runtime.contracts import event_registry
from runtime.errors import FieldViolation, ServiceError, domain_error, invalid_argument
from runtime.messaging import Event
from runtime.messaging.nats.live import LiveSubscription, live_subscription
from services.marketdata.ports import InstrumentFilter, InstrumentRow, InstrumentStore, QuoteCache

log = logging.getLogger(__name__)

DOMAIN = "trading.marketdata"
TICK_EVENT = events_pb2.Tick.DESCRIPTOR.full_name
# Live updates a slow StreamQuotes client may fall behind by before the
# oldest are dropped (each stream has its own buffer).
STREAM_BUFFER = 10_000
# Open StreamQuotes calls of this process (shows streams that never end).
ACTIVE_STREAMS = Gauge("trading_marketdata_quote_streams", "Open StreamQuotes calls.")
# How long to wait before asking again for a quote that has no tick yet.
NO_QUOTE_RETRY_S = 1.0


def _instrument(row: InstrumentRow) -> pb.Instrument:
    return pb.Instrument(
        symbol=row.symbol,
        base_asset=row.base_asset,
        quote_asset=row.quote_asset,
        asset_class=pb.AssetClass.Value(f"ASSET_CLASS_{row.asset_class}"),
        tick_size=decimals.to_proto(row.tick_size),
        lot_size=decimals.to_proto(row.lot_size),
        min_quantity=decimals.to_proto(row.min_quantity),
        status=pb.InstrumentStatus.Value(f"INSTRUMENT_STATUS_{row.status}"),
        description=row.description,
    )


def _enum_filter(enum: Any, value: int, prefix: str) -> str | None:
    """The stored name of an optional enum filter (UNSPECIFIED means "any")."""
    return None if value == 0 else str(enum.Name(value)).removeprefix(prefix)


def _not_found(symbols: list[str]) -> ServiceError:
    return ServiceError(
        domain_error(
            grpc.StatusCode.NOT_FOUND,
            "INSTRUMENT_NOT_FOUND",
            DOMAIN,
            f"no instrument {', '.join(symbols)}",
            {"symbol": ",".join(symbols)},
        )
    )


def tick_subject(symbol: str) -> str:
    """The NATS subject the ticks of `symbol` are published on."""
    return event_registry().nats_subject(TICK_EVENT, "", events_pb2.Tick(symbol=symbol))


class MarketDataApi:
    """Instrument reference data and live quotes."""

    def __init__(self, instruments: InstrumentStore, quotes: QuoteCache, nats: NatsClient) -> None:
        self._instruments = instruments
        self._quotes = quotes
        self._nats = nats

    async def ListInstruments(
        self, request: pb.ListInstrumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListInstrumentsResponse:
        try:
            cursor = paging.decode_token(request.page_token)
        except paging.InvalidPageTokenError as exc:
            raise ServiceError(invalid_argument([FieldViolation("page_token", str(exc))])) from None
        limit = paging.page_size(request.page_size)
        where = InstrumentFilter(
            status=_enum_filter(pb.InstrumentStatus, request.status, "INSTRUMENT_STATUS_"),
            asset_class=_enum_filter(pb.AssetClass, request.asset_class, "ASSET_CLASS_"),
            quote_asset=request.quote_asset or None,
        )
        # One extra row tells whether another page exists.
        rows = await self._instruments.list(after=str(cursor.get("after", "")), limit=limit + 1, where=where)
        page, more = rows[:limit], len(rows) > limit
        return pb.ListInstrumentsResponse(
            instruments=[_instrument(r) for r in page],
            next_page_token=paging.encode_token({"after": page[-1].symbol}) if more else "",
        )

    async def GetInstrument(
        self, request: pb.GetInstrumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetInstrumentResponse:
        row = await self._instruments.get(request.symbol)
        if row is None:
            raise _not_found([request.symbol])
        return pb.GetInstrumentResponse(instrument=_instrument(row))

    async def GetQuote(
        self, request: pb.GetQuoteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetQuoteResponse:
        quote = await self._quotes.latest(request.symbol)
        if quote is not None:
            return pb.GetQuoteResponse(quote=quote)
        if await self._instruments.get(request.symbol) is None:
            raise _not_found([request.symbol])
        raise ServiceError(
            domain_error(
                grpc.StatusCode.UNAVAILABLE,
                "QUOTE_NOT_AVAILABLE",
                DOMAIN,
                f"no tick received for {request.symbol} yet",
                {"symbol": request.symbol},
                retry_after_s=NO_QUOTE_RETRY_S,
            )
        )

    async def StreamQuotes(
        self, request: pb.StreamQuotesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.StreamQuotesResponse]:
        symbols = list(request.symbols)
        missing = sorted(set(symbols) - await self._instruments.existing(symbols))
        if missing:
            raise _not_found(missing)
        interval = request.conflation_interval.ToNanoseconds() / 1e9
        # Subscribe before reading the snapshot: a tick published in between
        # is then delivered live instead of being lost.
        ACTIVE_STREAMS.inc()
        ticks: LiveSubscription | None = None
        try:
            async with live_subscription(
                self._nats,
                event_registry(),
                [tick_subject(s) for s in symbols],
                name="marketdata-quote-stream",
                event_types=[TICK_EVENT],
                buffer=STREAM_BUFFER,  # slow client: the oldest updates are dropped, the newest kept
            ) as ticks:
                # Live ticks not newer than the snapshot (same source) are stale.
                floor: dict[str, tuple[str, int]] = {}
                if not request.skip_snapshot:
                    for quote in await self._quotes.latest_many(symbols):
                        if quote is None:
                            continue
                        floor[quote.symbol] = (quote.source, quote.sequence)
                        yield pb.StreamQuotesResponse(quote=quote, snapshot=True)
                async for quote in _conflated(ticks, floor, interval):
                    yield pb.StreamQuotesResponse(quote=quote, snapshot=False)
        finally:
            ACTIVE_STREAMS.dec()
            if ticks is not None and ticks.dropped:
                log.warning("StreamQuotes dropped %d updates for a slow client", ticks.dropped)


async def _conflated(
    ticks: LiveSubscription, floor: dict[str, tuple[str, int]], interval: float
) -> AsyncIterator[market_pb2.Quote]:
    """Live quotes in arrival order; with `interval` > 0 at most one per symbol
    per interval, the latest one (the first after a quiet spell goes at once)."""
    loop = asyncio.get_running_loop()
    pending: dict[str, market_pb2.Quote] = {}
    next_at: dict[str, float] = {}
    while True:
        timeout = max(0.0, min(next_at[s] for s in pending) - loop.time()) if pending else None
        tick: Event | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                tick = await anext(ticks)
        if tick is not None:
            # Tick and Quote share their fields: the tick's bytes parse as its quote.
            quote = market_pb2.Quote.FromString(tick.envelope.payload.value)
            stale = floor.get(quote.symbol)
            if stale is not None:
                if quote.source == stale[0] and quote.sequence <= stale[1]:
                    continue
                del floor[quote.symbol]
            if interval <= 0:
                yield quote
                continue
            pending[quote.symbol] = quote
        now = loop.time()
        for symbol in [s for s in pending if next_at.get(s, 0.0) <= now]:
            next_at[symbol] = now + interval
            yield pending.pop(symbol)
