"""Wiring of the risk service: what it needs and what it serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trading.risk.v1 import risk_service_pb2_grpc as pb_grpc

from runtime.outbox import OutboxRelay
from runtime.outbox_redis import RedisOutbox
from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.risk.adapters.redis import RedisRiskStore
from services.risk.api import RiskApi
from services.risk.consumers import CLUSTERS_GROUP, FILLS_GROUP, clusters_subscribers, fill_subscriber
from services.risk.domain import SubmissionTimeBound
from services.risk.events import RiskEvents

RISK_SERVICE = "trading.risk.v1.RiskService"


async def build(
    resources: Resources, *, fills_group: str = FILLS_GROUP, clusters_group: str = CLUSTERS_GROUP
) -> Mapping[str, Any]:
    risk = resources.settings.risk
    outbox = RedisOutbox(resources.redis, "risk")
    store = RedisRiskStore(
        resources.redis,
        outbox,
        time_bound=SubmissionTimeBound(risk.submitted_at_max_back_s, risk.submitted_at_max_ahead_s),
    )
    await store.load_scripts()
    relay = OutboxRelay(
        outbox, kafka=resources.kafka_publisher, nats=resources.nats_publisher, service="risk"
    )
    await relay.start()
    relay.wake()  # rows a previous process stored but did not publish
    events = RiskEvents(store, relay)
    subscriber = fill_subscriber(
        resources.settings, store, events, resources.kafka_publisher, group=fills_group
    )
    await subscriber.start()
    clusters_kafka, clusters_nats = clusters_subscribers(
        resources.settings, store, resources.nats, resources.kafka_publisher, group=clusters_group
    )
    await clusters_kafka.start()
    await clusters_nats.start()
    # Last added runs first: stop consuming, let background work store its
    # events, then stop the relay (what it did not publish waits in Redis).
    resources.on_close(relay.stop)
    resources.on_close(events.drain)
    resources.on_close(subscriber.stop)
    resources.on_close(clusters_kafka.stop)
    resources.on_close(clusters_nats.stop)
    return {RISK_SERVICE: RiskApi(store, events)}


SPEC = ServiceSpec(
    name="risk",
    needs=("redis", "nats", "kafka"),
    apis=[(RISK_SERVICE, pb_grpc.add_RiskServiceServicer_to_server)],
    build=build,
)
