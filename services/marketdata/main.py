"""Wiring of the marketdata service: what it needs, what it serves, and the
feed it runs in the background (FeedSettings, env TRADING_MARKETDATA__*).

With several replicas every one serves the API, but only the holder of the
feed lease (runtime.leases: a PostgreSQL advisory lock) runs the feed, so no
tick is published twice; a standby takes over within ``lease_poll_s`` of the
leader's death."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from trading.marketdata.v1 import marketdata_service_pb2_grpc as pb_grpc

from runtime.contracts import event_registry
from runtime.leases import AdvisoryLease
from runtime.market_cache import INSTRUMENTS_KEY
from runtime.messaging.kafka import KafkaPublisher
from runtime.resources import Resources
from runtime.service import ServiceSpec
from runtime.tasks import stop_task
from services.marketdata.adapters.postgres import PostgresInstrumentStore
from services.marketdata.adapters.redis import RedisQuoteCache
from services.marketdata.api import MarketDataApi
from services.marketdata.domain import Normalizer
from services.marketdata.feeds import DEFAULT_PRICE, INITIAL_PRICES, FeedSettings, SymbolSpec, create_feed
from services.marketdata.pipeline import FeedRunner, TickPipeline
from services.marketdata.ports import InstrumentRow

log = logging.getLogger(__name__)

FEED_LEASE = "marketdata.feed"
# Bytes per Kafka partition in one produce request for the ticks' copies. The
# producer keeps one request in flight per broker: on tansu (S3 storage), 16 KiB
# batches took ~11,600 records/s, 1 MiB ~35,000 (260-byte records, measured).
TICKS_KAFKA_BATCH_BYTES = 1_048_576
# Ticks that may wait for Kafka: the producer gathers for kafka.bulk_linger_ms
# (a request per linger is what keeps tansu's S3 cheap), so this holds more
# than a linger's worth at the highest feed rates (20,000/s x 1 s) while a
# round is in flight; past it a feed faster than Kafka slows down (backpressure).
TICKS_KAFKA_MAX_PENDING = 65_536
MARKETDATA_SERVICE = "trading.marketdata.v1.MarketDataService"


def _spec(row: InstrumentRow) -> SymbolSpec:
    return SymbolSpec(row.symbol, INITIAL_PRICES.get(row.symbol, DEFAULT_PRICE), row.tick_size, row.lot_size)


async def build(resources: Resources, feed_settings: FeedSettings | None = None) -> Mapping[str, Any]:
    settings = feed_settings or resources.settings.marketdata
    instruments = PostgresInstrumentStore(resources.postgres)
    quotes = RedisQuoteCache(resources.redis)
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
        specs = [_spec(r) for r in rows]
        if create_feed(settings, specs) is not None:
            nats = resources.nats_publisher
            kafka = KafkaPublisher(
                resources.settings.kafka,
                event_registry(),
                client_id="marketdata-ticks",
                max_batch_size=TICKS_KAFKA_BATCH_BYTES,
                linger_ms=resources.settings.kafka.bulk_linger_ms,
            )
            await kafka.start()

            async def lead() -> None:
                # A feed of its own per leadership term: its sequences start
                # above those any earlier leader published (feeds.py).
                feed = create_feed(settings, specs)
                assert feed is not None
                pipeline = TickPipeline(
                    Normalizer(symbols),
                    quotes=quotes,
                    nats=nats,
                    kafka=kafka,
                    kafka_max_pending=max(settings.feed_max_batch, TICKS_KAFKA_MAX_PENDING),
                )
                runner = FeedRunner(feed, pipeline)
                runner.start()
                log.info("marketdata: leading; %s feed running over %d symbols", feed.name, len(rows))
                try:
                    await runner.finished.wait()
                finally:
                    await runner.stop()

            # One replica at a time publishes ticks: the holder of the feed lease.
            lease = AdvisoryLease(
                resources.postgres, FEED_LEASE, poll_s=settings.lease_poll_s, grace_s=settings.lease_grace_s
            )
            leadership = asyncio.create_task(lease.run(lead), name="marketdata-feed-lease")

            async def stop_leading() -> None:
                await stop_task(leadership, name="the feed lease")
                await kafka.close()

            resources.on_close(stop_leading)

    return {MARKETDATA_SERVICE: MarketDataApi(instruments, quotes, resources.nats)}


def make_spec(feed_settings: FeedSettings | None = None) -> ServiceSpec:
    """The service with the given feed settings (default: from the environment)."""
    return ServiceSpec(
        name="marketdata",
        needs=("postgres", "redis", "nats", "kafka"),
        apis=[(MARKETDATA_SERVICE, pb_grpc.add_MarketDataServiceServicer_to_server)],
        build=partial(build, feed_settings=feed_settings),
    )


SPEC = make_spec()
