"""Wiring of the audit service: what it needs and what it serves.

build() secures the event store (the audit role may only SELECT and INSERT),
starts the consumer (Kafka group `audit.events` on every topic of the event
registry, appending in batches, dead letters to `<topic>.dlq`), opens the
lineage graph (runtime.graph: PostgreSQL tables of this schema, or ArangoDB
when `TRADING_GRAPH__ARANGO_URL` is set) with its own consumer (group
`audit.lineage`) and makes the servicer, which reads execution and portfolio
through the platform's gRPC clients for replays.
`make_spec` lets tests choose the settings (e.g. their own consumer group).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trading.audit.v1 import audit_service_pb2_grpc as pb_grpc

from runtime.contracts import event_registry
from runtime.graph import open_graph_store
from runtime.grpc_client import ClientFactory
from runtime.messaging import RetryPolicy
from runtime.resources import Resources
from runtime.service import ServiceSpec
from services.audit.adapters.postgres import PostgresAuditStore
from services.audit.api import AuditApi
from services.audit.consumer import AuditSubscriber, LineageSubscriber
from services.audit.live import GrpcLiveState
from services.audit.ports import LiveState
from services.audit.settings import AuditSettings

AUDIT_SERVICE = "trading.audit.v1.AuditService"


def audited_topics(settings: AuditSettings) -> list[str]:
    """Every Kafka topic of the event registry, minus the configured exclusions."""
    excluded = set(settings.exclude_topics)
    return [t for t in event_registry().kafka_topics() if t not in excluded]


async def build(
    resources: Resources, *, settings: AuditSettings | None = None, live: LiveState | None = None
) -> Mapping[str, Any]:
    settings = settings or AuditSettings()
    registry = event_registry()
    store = PostgresAuditStore(resources.postgres)
    await store.secure()
    if live is None:
        clients = ClientFactory(resources.settings, principal=resources.service)
        resources.on_close(clients.close)
        live = GrpcLiveState(clients, timeout_s=settings.live_call_timeout_s)
    subscriber = AuditSubscriber(
        resources.settings.kafka.for_batch_sink(),
        registry,
        store,
        group=settings.consumer_group,
        topics=audited_topics(settings),
        dead_letters=resources.kafka_publisher,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.5),
        batch_max_events=settings.batch_max_events,
        batch_max_interval_s=settings.batch_max_interval_s,
        transient_retry_s=settings.transient_retry_s,
        client_id="audit",
    )
    await subscriber.start()
    resources.on_close(subscriber.stop)
    graph = await open_graph_store(resources.settings, "audit", postgres=resources.postgres, schema="audit")
    resources.on_close(graph.close)
    lineage = LineageSubscriber(
        resources.settings.kafka.for_batch_sink(),
        registry,
        graph,
        group=settings.lineage_group,
        dead_letters=resources.kafka_publisher,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.5),
        batch_max_events=settings.lineage_batch_max_events,
        batch_max_interval_s=settings.batch_max_interval_s,
        transient_retry_s=settings.transient_retry_s,
    )
    await lineage.start()
    # Closed last-registered-first: the consumer stops before the graph closes.
    resources.on_close(lineage.stop)
    return {AUDIT_SERVICE: AuditApi(store, live, registry, resources.kafka_publisher, settings, graph)}


def make_spec(settings: AuditSettings | None = None) -> ServiceSpec:
    """The audit ServiceSpec with the given settings (default: from the environment)."""

    async def build_with(resources: Resources) -> Mapping[str, Any]:
        return await build(resources, settings=settings)

    return ServiceSpec(
        name="audit",
        needs=("postgres", "kafka"),
        apis=[(AUDIT_SERVICE, pb_grpc.add_AuditServiceServicer_to_server)],
        build=build_with,
    )


SPEC = make_spec()
