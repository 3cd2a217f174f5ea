"""Wiring of the portfolio service: what it needs and what it serves.

build() opens the books (PostgreSQL), the quote cache (Redis), starts the fill
consumer (Kafka group `portfolio.fills` on `trading.execution.fills`) and the
snapshot publisher (NATS + Kafka), and registers their stops with
`resources.on_close`. `make_spec` lets tests (and deployments that need it)
choose the consumer group and the starting cash; `SPEC` is the standard one.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from trading.portfolio.v1 import portfolio_service_pb2_grpc as pb_grpc

from runtime.contracts import event_registry
from runtime.messaging import RetryPolicy
from runtime.messaging.kafka import KafkaSubscriber
from runtime.outbox import OutboxRelay, PostgresOutbox
from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.portfolio import domain
from services.portfolio.adapters.postgres import PostgresBookStore
from services.portfolio.adapters.redis import RedisQuoteCache
from services.portfolio.api import PortfolioApi
from services.portfolio.consumers import FILL_EVENT, FillConsumer, SnapshotPublisher
from services.portfolio.views import PortfolioViews

PORTFOLIO_SERVICE = "trading.portfolio.v1.PortfolioService"
FILLS_GROUP = "portfolio.fills"
# The contract: at most one PortfolioSnapshot event per second per tenant.
SNAPSHOT_INTERVAL_S = 1.0


async def build(
    resources: Resources,
    *,
    fills_group: str = FILLS_GROUP,
    starting_cash: Decimal = domain.DEFAULT_STARTING_CASH,
) -> Mapping[str, Any]:
    store = PostgresBookStore(resources.postgres, starting_cash=starting_cash)
    quotes = RedisQuoteCache(resources.redis)
    views = PortfolioViews(store, quotes)
    snapshots = SnapshotPublisher(
        views, resources.nats_publisher, resources.kafka_publisher, interval_s=SNAPSHOT_INTERVAL_S
    )
    resources.on_close(snapshots.close)
    # PositionChanged goes through portfolio's outbox; closed after the consumer stopped.
    relay = OutboxRelay(
        PostgresOutbox(resources.postgres, "portfolio"),
        kafka=resources.kafka_publisher,
        nats=resources.nats_publisher,
    )
    await relay.start()
    resources.on_close(relay.stop)
    consumer = FillConsumer(store, quotes, relay, snapshots)
    subscriber = KafkaSubscriber(
        resources.settings.kafka,
        event_registry(),
        consumer.handle,
        group=fills_group,
        event_types=[FILL_EVENT],
        dead_letters=resources.kafka_publisher,
        # Invalid fills fail the same way every time: a few quick tries, then the DLQ.
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.5),
        client_id="portfolio",
    )
    await subscriber.start()
    # Closed last-registered-first: the consumer stops before the snapshot publisher.
    resources.on_close(subscriber.stop)
    return {PORTFOLIO_SERVICE: PortfolioApi(views, resources.nats)}


def make_spec(
    *, fills_group: str = FILLS_GROUP, starting_cash: Decimal = domain.DEFAULT_STARTING_CASH
) -> ServiceSpec:
    """The portfolio's ServiceSpec with a given consumer group and starting cash."""

    async def build_with(resources: Resources) -> Mapping[str, Any]:
        return await build(resources, fills_group=fills_group, starting_cash=starting_cash)

    return ServiceSpec(
        name="portfolio",
        needs=("postgres", "redis", "nats", "kafka"),
        apis=[(PORTFOLIO_SERVICE, pb_grpc.add_PortfolioServiceServicer_to_server)],
        build=build_with,
    )


SPEC = make_spec()
