"""Kafka transport (aiokafka): publisher, subscriber (and the batching one),
dead letters, telemetry, testing, topics (admin), client security. Same
shape as `runtime.messaging.nats`."""

from runtime.messaging.kafka.admin import DLQ_SUFFIX, dlq_topic, ensure_topics, platform_topics
from runtime.messaging.kafka.deadletter import KafkaDeadLetters
from runtime.messaging.kafka.publisher import KafkaPublisher
from runtime.messaging.kafka.subscriber import KafkaSubscriber

__all__ = [
    "DLQ_SUFFIX",
    "KafkaDeadLetters",
    "KafkaPublisher",
    "KafkaSubscriber",
    "dlq_topic",
    "ensure_topics",
    "platform_topics",
]
