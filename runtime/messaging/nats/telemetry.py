"""What NATS messages look like to telemetry: where a received message came
from (its `Delivery`), its CONSUMER span and a JetStream consumer's lag. The
metric families and span shapes both transports share are
`runtime.messaging.telemetry`; `runtime.messaging.kafka.telemetry` is the
Kafka counterpart of this module."""

from __future__ import annotations

from contextlib import AbstractContextManager

from nats.aio.msg import Msg
from opentelemetry.trace import Span

from runtime.messaging import headers as h
from runtime.messaging.base import Delivery, Transport
from runtime.messaging.telemetry import MessagingMetrics, process_span

TRANSPORT = Transport.NATS.value


def core_delivery(msg: Msg) -> Delivery:
    """A core NATS message's origin: its subject (no stream, no sequence)."""
    return Delivery(Transport.NATS, msg.subject)


def stream_delivery(msg: Msg) -> Delivery:
    """A JetStream message's origin: stream, subject and stream sequence."""
    meta = msg.metadata
    return Delivery(Transport.NATS, msg.subject, -1, meta.sequence.stream, meta.stream)


def consume_span(msg: Msg, consumer: str) -> AbstractContextManager[Span]:
    """The CONSUMER span of handling `msg`, child of its producer's context."""
    headers = msg.headers or {}
    return process_span(TRANSPORT, msg.subject, consumer, headers, headers.get(h.EVENT_ID, ""))


def record_lag(metrics: MessagingMetrics, consumer: str, msg: Msg) -> None:
    """The consumer's lag as of the last message of a fetch: what its stream still holds for it."""
    meta = msg.metadata
    metrics.lag(TRANSPORT, consumer, meta.stream, meta.num_pending)
