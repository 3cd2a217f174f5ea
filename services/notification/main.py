"""Wiring of the notification service: what it needs and what it serves.

build() opens the webhook store (adapters.postgres), declares the NOTIFICATION job
stream, and starts three consumers (see services.notification.delivery):

- JetStream durable `notification-orders` on ``execution.orders.*.*``
  (OrderStatusChanged, fills included): order and fill events;
- Kafka group `notification.events` on ``trading.risk.events`` and
  ``trading.portfolio.positions``: risk and portfolio events. Their NATS copy
  is core NATS (fan-out only; Kafka is their durable record, see
  runtime.messaging.nats.streams), so the durable consumer reads Kafka;
- `delivery_workers` pull subscribers sharing the JetStream durable
  `notification-webhooks` on the job stream: the HTTP deliveries.

Each consumer dead-letters poison messages the runtime way (NATS `DLQ`
stream, Kafka `<topic>.dlq`). `make_spec` lets tests choose consumer names
and settings; `SPEC` is the standard one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from trading.notification.v1 import notification_service_pb2_grpc as pb_grpc

from runtime.contracts import event_registry
from runtime.messaging import RetryPolicy
from runtime.messaging.kafka import KafkaSubscriber
from runtime.messaging.nats import JetStreamSubscriber
from runtime.messaging.nats.streams import ensure_streams
from runtime.outbox import OutboxRelay, PostgresOutbox
from runtime.resources import Resources
from runtime.security.secrets import get_secret
from runtime.service import ServiceSpec
from services.notification import domain, signing
from services.notification.adapters.nats import JetStreamDeadLetterEntries, JetStreamDeliveryJobs
from services.notification.adapters.postgres import PostgresWebhookStore
from services.notification.api import NotificationApi
from services.notification.delivery import (
    JOBS_STREAM,
    JOBS_SUBJECT_PREFIX,
    WORKER_CONSUMER,
    DeliveryWorker,
    FanOut,
    WebhookSender,
    jobs_stream_spec,
)
from services.notification.settings import NotificationSettings

NOTIFICATION_SERVICE = "trading.notification.v1.NotificationService"


@dataclasses.dataclass(frozen=True)
class ConsumerNames:
    """Names of the durable consumers (tests use unique ones on shared servers)."""

    orders_durable: str = "notification-orders"
    events_group: str = "notification.events"
    webhooks_durable: str = WORKER_CONSUMER


async def build(
    resources: Resources,
    *,
    settings: NotificationSettings | None = None,
    names: ConsumerNames | None = None,
) -> Mapping[str, Any]:
    settings = settings or NotificationSettings()
    names = names or ConsumerNames()
    registry = event_registry()
    nc = resources.nats
    js = nc.jetstream()
    await ensure_streams(js, [jobs_stream_spec()], replicas=resources.settings.nats.stream_replicas)

    store = PostgresWebhookStore(resources.postgres)
    configured = settings.secret_encryption_key
    if not configured and resources.settings.environment != "local":
        # The secret notification/webhook-key (environment or mounted file, e.g.
        # from `tradingctl security init`; missing outside development: an error).
        configured = get_secret(resources.settings, "notification", "webhook-key", nbytes=32)
    box = signing.SecretBox(signing.encryption_key(configured, resources.settings.environment))
    sender = WebhookSender(settings)
    resources.on_close(sender.close)
    jobs = JetStreamDeliveryJobs(js)
    fan_out = FanOut(store, jobs)
    # WebhookDeliveryFailed goes through notification's outbox (closed after the workers stopped).
    relay = OutboxRelay(PostgresOutbox(resources.postgres, "notification"), kafka=resources.kafka_publisher)
    await relay.start()
    resources.on_close(relay.stop)
    worker = DeliveryWorker(
        store, box, sender, js, resources.kafka_publisher, consumer=names.webhooks_durable, relay=relay
    )

    # A delivery holds its job through every attempt: the ack wait covers them all.
    per_attempt = settings.attempt_timeout_s + settings.backoff_max_s + settings.backoff_jitter_s
    job_ack_wait = settings.delivery_attempts * per_attempt + 30.0
    # Job handlers fail only on infrastructure errors (delivery failures are
    # dead-lettered by the worker itself): a few server-side redeliveries, then the DLQ.
    infra_retry = RetryPolicy(max_attempts=5, initial_backoff_s=0.5, max_backoff_s=10.0)
    workers = [
        JetStreamSubscriber(
            nc,
            registry,
            worker.handle,
            subjects=[JOBS_SUBJECT_PREFIX + ">"],
            durable=names.webhooks_durable,
            stream=JOBS_STREAM,
            retry=infra_retry,
            ack_wait_s=job_ack_wait,
            batch=1,
            max_ack_pending=max(1000, settings.delivery_workers),
        )
        for _ in range(settings.delivery_workers)
    ]
    orders = JetStreamSubscriber(
        nc,
        registry,
        fan_out.handle,
        event_types=list(domain.ORDER_EVENT_TYPES),
        durable=names.orders_durable,
        retry=infra_retry,
    )
    events = KafkaSubscriber(
        resources.settings.kafka,
        registry,
        fan_out.handle,
        group=names.events_group,
        event_types=list(domain.RISK_EVENT_TYPES + domain.PORTFOLIO_EVENT_TYPES),
        dead_letters=resources.kafka_publisher,
        retry=RetryPolicy(max_attempts=5, initial_backoff_s=0.2, max_backoff_s=5.0),
        client_id="notification",
    )
    api = NotificationApi(
        store,
        box,
        sender,
        jobs,
        nc,
        dead_letter_entries=JetStreamDeadLetterEntries(js),
        stream_buffer=settings.stream_buffer,
    )
    if settings.run_consumers:
        # Workers started first, stopped last (on_close runs last-registered-first).
        for subscriber in workers:
            await subscriber.start()
            resources.on_close(subscriber.stop)
        await orders.start()
        resources.on_close(orders.stop)
        await events.start()
        resources.on_close(events.stop)
        api.events_subscriber = events
    return {NOTIFICATION_SERVICE: api}


def make_spec(
    *, settings: NotificationSettings | None = None, names: ConsumerNames | None = None
) -> ServiceSpec:
    """The notification ServiceSpec with given settings and consumer names."""

    async def build_with(resources: Resources) -> Mapping[str, Any]:
        return await build(resources, settings=settings, names=names)

    return ServiceSpec(
        name="notification",
        needs=("postgres", "nats", "kafka"),
        apis=[(NOTIFICATION_SERVICE, pb_grpc.add_NotificationServiceServicer_to_server)],
        build=build_with,
    )


SPEC = make_spec()
