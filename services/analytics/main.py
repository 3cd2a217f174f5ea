"""Wiring of the analytics service: what it needs and what it serves.

build() creates the ClickHouse store (chdb by default, a server when
`TRADING_CLICKHOUSE__URL` is set; opened lazily, so the service starts and
answers UNAVAILABLE while ClickHouse is down), starts the Kafka sink (group
`analytics.sink` on the tick, fill, position, snapshot and signal topics) and
the model evaluator (evaluator.py: the trading_model_* gauges) and the
correlation clusters (correlations.py, on Kafka and NATS), and registers
their stops with `resources.on_close`. `make_spec` lets tests choose
the consumer group, the database and the settings; `SPEC` is the standard one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trading.analytics.v1 import analytics_service_pb2_grpc as pb_grpc

from runtime.contracts import event_registry
from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.analytics import domain
from services.analytics.adapters.clickhouse import ClickHouseAnalyticsStore
from services.analytics.api import AnalyticsApi
from services.analytics.consumers import AnalyticsSink
from services.analytics.correlations import CorrelationTask
from services.analytics.evaluator import ModelEvaluator
from services.analytics.settings import AnalyticsSettings

ANALYTICS_SERVICE = "trading.analytics.v1.AnalyticsService"


async def build(
    resources: Resources, *, settings: AnalyticsSettings | None = None, database: str | None = None
) -> Mapping[str, Any]:
    settings = settings or AnalyticsSettings()
    store = ClickHouseAnalyticsStore(resources.settings.clickhouse, settings, database=database)
    resources.on_close(store.close)
    sink = AnalyticsSink(
        resources.settings.kafka.for_batch_sink(),
        event_registry(),
        store.write,
        group=settings.consumer_group,
        dead_letters=resources.kafka_publisher,
        event_types=domain.SUNK_EVENTS,
        batch_max_rows=settings.batch_max_rows,
        batch_max_interval_s=settings.batch_max_interval_s,
    )
    await sink.start()
    # Closed last-registered-first: the sink stops before the store closes.
    resources.on_close(sink.stop)
    evaluator = ModelEvaluator(store, settings)
    evaluator.start()
    resources.on_close(evaluator.stop)
    # The instrument correlation clusters risk limits exposure by (correlations.py).
    correlations = CorrelationTask(store, [resources.nats_publisher, resources.kafka_publisher])
    correlations.start()
    resources.on_close(correlations.stop)
    return {ANALYTICS_SERVICE: AnalyticsApi(store, settings)}


def make_spec(*, settings: AnalyticsSettings | None = None, database: str | None = None) -> ServiceSpec:
    """The analytics ServiceSpec with given settings (consumer group, batching,
    budgets) and ClickHouse database."""

    async def build_with(resources: Resources) -> Mapping[str, Any]:
        return await build(resources, settings=settings, database=database)

    return ServiceSpec(
        name="analytics",
        # ClickHouse is not a start-up dependency: the store opens it on first
        # use and reports UNAVAILABLE per call while it is down. NATS carries
        # the correlation clusters to risk at once.
        needs=("kafka", "nats"),
        apis=[(ANALYTICS_SERVICE, pb_grpc.add_AnalyticsServiceServicer_to_server)],
        build=build_with,
    )


SPEC = make_spec()
