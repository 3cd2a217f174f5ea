"""What Kafka records look like to telemetry: where a received record came
from (its `Delivery`), its CONSUMER span, a partition's lag and the bounded
destination label of a topic. The metric families and span shapes both
transports share are `runtime.messaging.telemetry`;
`runtime.messaging.nats.telemetry` is the NATS counterpart of this module."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

from aiokafka import ConsumerRecord, TopicPartition
from opentelemetry.trace import Span

from runtime.messaging import headers as h
from runtime.messaging.base import Delivery, Transport
from runtime.messaging.telemetry import MessagingMetrics, process_span

TRANSPORT = Transport.KAFKA.value


def delivery_of(record: ConsumerRecord[bytes, bytes]) -> Delivery:
    """A record's origin: topic, partition and offset."""
    return Delivery(Transport.KAFKA, record.topic, record.partition, record.offset)


def consume_span(
    record: ConsumerRecord[bytes, bytes], consumer: str, headers: Mapping[str, str]
) -> AbstractContextManager[Span]:
    """The CONSUMER span of handling `record` (`headers`: its decoded
    headers), child of its producer's context."""
    return process_span(TRANSPORT, record.topic, consumer, dict(headers), headers.get(h.EVENT_ID, ""))


def record_lag(metrics: MessagingMetrics, consumer: str, tp: TopicPartition, lag: int) -> None:
    """A partition's lag: high watermark minus the consumer's position."""
    metrics.lag(TRANSPORT, consumer, f"{tp.topic}/{tp.partition}", lag)


def destination_label(topic: str, prefix: str) -> str:
    """A topic as a metric label: without the namespace prefix (bounded)."""
    return topic[len(prefix) :]
