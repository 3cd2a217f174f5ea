"""Wiring of the marketdata service: what it needs, what it serves, and the
feed it runs in the background (FeedSettings, env TRADING_MARKETDATA_*)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from trading.marketdata.v1 import marketdata_service_pb2_grpc as pb_grpc

from runtime.market_cache import INSTRUMENTS_KEY
from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.marketdata.api import MarketDataApi
from services.marketdata.domain import Normalizer
from services.marketdata.feeds import DEFAULT_PRICE, INITIAL_PRICES, FeedSettings, SymbolSpec, create_feed
from services.marketdata.pipeline import FeedRunner, TickPipeline
from services.marketdata.storage import InstrumentRow, InstrumentStore

log = logging.getLogger(__name__)

MARKETDATA_SERVICE = "trading.marketdata.v1.MarketDataService"


def _spec(row: InstrumentRow) -> SymbolSpec:
    return SymbolSpec(row.symbol, INITIAL_PRICES.get(row.symbol, DEFAULT_PRICE), row.tick_size, row.lot_size)


async def build(resources: Resources, feed_settings: FeedSettings | None = None) -> Mapping[str, Any]:
    assert resources.postgres is not None and resources.redis is not None
    assert resources.nats is not None and resources.nats_publisher is not None
    assert resources.kafka_publisher is not None
    settings = feed_settings or resources.settings.marketdata
    instruments = InstrumentStore(resources.postgres)
    symbols = await instruments.symbols()
    # The instrument universe for other services (features answers NOT_FOUND
    # from it); only added to, so replicas and restarts never race a delete.
    if symbols:
        await resources.redis.sadd(INSTRUMENTS_KEY, *symbols)

    if settings.feed != "none":
        rows: Sequence[InstrumentRow]
        if settings.feed_symbols:
            rows = [row for s in settings.feed_symbols if (row := await instruments.get(s)) is not None]
            unknown = set(settings.feed_symbols) - {r.symbol for r in rows}
            if unknown:
                raise ValueError(f"feed symbols are not instruments: {', '.join(sorted(unknown))}")
        else:
            rows = await instruments.trading()
        feed = create_feed(settings, [_spec(r) for r in rows])
        if feed is not None:
            pipeline = TickPipeline(
                Normalizer(symbols),
                redis=resources.redis,
                nats=resources.nats_publisher,
                kafka=resources.kafka_publisher,
            )
            runner = FeedRunner(feed, pipeline)
            runner.start()
            resources.on_close(runner.stop)
            log.info("marketdata: %s feed running over %d symbols", feed.name, len(rows))

    return {MARKETDATA_SERVICE: MarketDataApi(instruments, resources.redis, resources.nats)}


def make_spec(feed_settings: FeedSettings | None = None) -> ServiceSpec:
    """The service with the given feed settings (default: from the environment)."""
    return ServiceSpec(
        name="marketdata",
        needs=("postgres", "redis", "nats", "kafka"),
        apis=[(MARKETDATA_SERVICE, pb_grpc.add_MarketDataServiceServicer_to_server)],
        build=partial(build, feed_settings=feed_settings),
    )


SPEC = make_spec()
