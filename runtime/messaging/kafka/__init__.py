"""Kafka transport (aiokafka): publisher, subscriber, topics, dead letters."""

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
