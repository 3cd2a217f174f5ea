"""Wiring of the risk service: what it needs and what it serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trading.risk.v1 import risk_service_pb2_grpc as pb_grpc

from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.risk.api import RiskApi
from services.risk.consumers import FILLS_GROUP, fill_subscriber
from services.risk.domain import SubmissionTimeBound
from services.risk.events import RiskEvents
from services.risk.storage import RiskStore

RISK_SERVICE = "trading.risk.v1.RiskService"


async def build(resources: Resources, *, fills_group: str = FILLS_GROUP) -> Mapping[str, Any]:
    assert resources.redis is not None and resources.kafka_publisher is not None
    risk = resources.settings.risk
    store = RiskStore(
        resources.redis,
        time_bound=SubmissionTimeBound(risk.submitted_at_max_back_s, risk.submitted_at_max_ahead_s),
    )
    await store.load_scripts()
    events = RiskEvents(store, resources.kafka_publisher, resources.nats_publisher)
    subscriber = fill_subscriber(
        resources.settings, store, events, resources.kafka_publisher, group=fills_group
    )
    await subscriber.start()
    # Last added runs first: stop consuming, then let pending publishes finish.
    resources.on_close(events.drain)
    resources.on_close(subscriber.stop)
    return {RISK_SERVICE: RiskApi(store, events)}


SPEC = ServiceSpec(
    name="risk",
    needs=("redis", "nats", "kafka"),
    apis=[(RISK_SERVICE, pb_grpc.add_RiskServiceServicer_to_server)],
    build=build,
)
