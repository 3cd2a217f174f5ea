"""NATS transport (nats-py, JetStream where durability matters): publisher,
subscribers (core `NatsSubscriber`, durable `JetStreamSubscriber`), live
subscriptions, dead letters, telemetry, testing, streams, connections. Same
shape as `runtime.messaging.kafka`."""

from runtime.messaging.nats.deadletter import NatsDeadLetters
from runtime.messaging.nats.publisher import NatsPublisher
from runtime.messaging.nats.streams import (
    DLQ_STREAM,
    DLQ_SUBJECT_PREFIX,
    StreamSpec,
    dlq_stream_spec,
    ensure_streams,
    platform_streams,
    subject_filter,
    uses_jetstream,
)
from runtime.messaging.nats.subscriber import JetStreamSubscriber, NatsSubscriber

__all__ = [
    "DLQ_STREAM",
    "DLQ_SUBJECT_PREFIX",
    "JetStreamSubscriber",
    "NatsDeadLetters",
    "NatsPublisher",
    "NatsSubscriber",
    "StreamSpec",
    "dlq_stream_spec",
    "ensure_streams",
    "platform_streams",
    "subject_filter",
    "uses_jetstream",
]
