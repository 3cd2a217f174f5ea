"""Metrics and traces of messaging.

Prometheus: counters of published, consumed, failed and dead-lettered events
and of failed publishes, histograms of publish latency (until the broker
acked, per destination), handler latency and end-to-end latency (now minus
the envelope's occurred_at), and the consumer lag gauge. Label values are
bounded (transport, destination, consumer name, event type, reason; a
destination is the Kafka topic without its test prefix or the NATS subject
*template*: never concrete subjects, keys or tenants) and labelled children
are cached, so the hot path does a dict lookup and an add.

OpenTelemetry: a PRODUCER span around each publish whose context travels in
the `traceparent`/`tracestate` headers, and a CONSUMER span around each
handling, started as a child of the extracted context so one trace spans
producer and consumers. An envelope made inside a span carries that span's
context (``trace_context``): its publish continues that trace even when an
outbox relay publishes it later, outside any request (a batch's span is the
child of its first event's origin and links the others; each message carries
its own event's origin). Without an SDK configured all spans are no-ops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from trading.common.v1 import event_pb2

from runtime.messaging.headers import extract_trace, inject_trace

# 50 us .. 10 s: covers in-process hand-offs up to slow retried handlers.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_tracer = trace.get_tracer("runtime.messaging")


class MessagingMetrics:
    """The messaging metrics, registered once per Prometheus registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else REGISTRY
        self._published = Counter(
            "trading_messaging_published", "Events published.", ["transport", "event_type"], registry=reg
        )
        self._publish_seconds = Histogram(
            "trading_messaging_publish_seconds",
            "Time from publish call to broker acknowledgement (core NATS: until buffered),"
            " per destination (Kafka topic, NATS subject template).",
            ["transport", "destination"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._publish_failures = Counter(
            "trading_messaging_publish_failures",
            "Publish calls that raised (the broker did not take the event).",
            ["transport", "destination"],
            registry=reg,
        )
        self._consumed = Counter(
            "trading_messaging_consumed",
            "Events handled successfully.",
            ["transport", "consumer", "event_type"],
            registry=reg,
        )
        self._failed = Counter(
            "trading_messaging_handler_failures",
            "Handler attempts that raised.",
            ["transport", "consumer", "event_type"],
            registry=reg,
        )
        self._dead_lettered = Counter(
            "trading_messaging_dead_lettered",
            "Messages sent to a dead-letter destination.",
            ["transport", "consumer", "reason"],
            registry=reg,
        )
        self._handler_seconds = Histogram(
            "trading_messaging_handler_seconds",
            "Time spent in the handler (successful attempts).",
            ["transport", "consumer"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._end_to_end_seconds = Histogram(
            "trading_messaging_end_to_end_seconds",
            "From the event's occurred_at to the end of its successful handling.",
            ["transport", "consumer"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._lag = Gauge(
            "trading_messaging_consumer_lag",
            "Messages not yet consumed, as of the consumer's last fetch: Kafka high"
            " watermark minus position per partition; JetStream pending count per consumer.",
            ["transport", "consumer", "source"],
            registry=reg,
        )
        # Labelled children by label values: `.labels()` takes a lock and
        # builds a tuple each call; a dict hit is cheaper.
        self._counters: dict[tuple[str, ...], Counter] = {}
        self._histograms: dict[tuple[str, ...], Histogram] = {}

    def _count(self, metric: Counter, *labels: str) -> None:
        key = (metric._name, *labels)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = metric.labels(*labels)
        child.inc()

    def _observe(self, metric: Histogram, value: float, *labels: str) -> None:
        key = (metric._name, *labels)
        child = self._histograms.get(key)
        if child is None:
            child = self._histograms[key] = metric.labels(*labels)
        child.observe(value)

    def published(self, transport: str, event_type: str, seconds: float, destination: str = "") -> None:
        """One event taken by the broker after `seconds`; `destination` is the
        topic or subject template (a bounded label)."""
        self._count(self._published, transport, event_type)
        self._observe(self._publish_seconds, seconds, transport, destination)

    def publish_failed(self, transport: str, destination: str, events: int = 1) -> None:
        """A publish of `events` events to `destination` raised."""
        key = (self._publish_failures._name, transport, destination)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = self._publish_failures.labels(transport, destination)
        child.inc(events)

    def consumed(
        self, transport: str, consumer: str, envelope: event_pb2.EventEnvelope, handler_seconds: float
    ) -> None:
        self._count(self._consumed, transport, consumer, envelope.event_type)
        self._observe(self._handler_seconds, handler_seconds, transport, consumer)
        occurred_ns = envelope.occurred_at.seconds * 1_000_000_000 + envelope.occurred_at.nanos
        if occurred_ns:
            e2e = (time.time_ns() - occurred_ns) / 1e9
            self._observe(self._end_to_end_seconds, max(e2e, 0.0), transport, consumer)

    def consumed_many(self, transport: str, consumer: str, event_type: str, count: int) -> None:
        """`count` events handled inside one message (a consumer of batches
        counting what the batch held; the message itself counts by `consumed`)."""
        key = (self._consumed._name, transport, consumer, event_type)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = self._consumed.labels(transport, consumer, event_type)
        child.inc(count)

    def failed(self, transport: str, consumer: str, event_type: str) -> None:
        self._count(self._failed, transport, consumer, event_type)

    def lag(self, transport: str, consumer: str, source: str, messages: int) -> None:
        """Consumer lag after a fetch; ``source`` is "topic/partition" or the stream."""
        self._lag.labels(transport, consumer, source).set(messages)

    def dead_lettered(self, transport: str, consumer: str, reason: str) -> None:
        self._count(self._dead_lettered, transport, consumer, reason)


@cache
def default_metrics() -> MessagingMetrics:
    """Metrics on the default Prometheus registry (what /metrics serves)."""
    return MessagingMetrics()


def origin_of(envelope: event_pb2.EventEnvelope) -> otel_context.Context | None:
    """The trace context the event was made in (None when it carries none)."""
    return extract_trace(envelope.trace_context) if envelope.trace_context else None


def message_trace(envelope: event_pb2.EventEnvelope, batch: dict[str, str]) -> dict[str, str]:
    """The trace headers of one message of a batch: its own origin, else the batch span's."""
    return dict(envelope.trace_context) if envelope.trace_context else batch


@contextmanager
def publish_span(
    transport: str,
    destination: str,
    envelope: event_pb2.EventEnvelope,
    headers: dict[str, str],
    batch: Sequence[event_pb2.EventEnvelope] = (),
) -> Iterator[Span]:
    """A PRODUCER span, child of `envelope`'s origin (else of the current
    span), linked to the origins of the rest of a `batch`; its context is
    injected into `headers`."""
    # One link per distinct origin: the events of a batch are often made in one
    # span (a consumer's batch), and extracting each one's context again costs
    # a parse per event for a link the first one already gives.
    links: list[Link] = []
    seen = {envelope.trace_context.get("traceparent", "")}
    for other in batch[1:]:
        origin = other.trace_context.get("traceparent", "")
        if origin in seen:
            continue
        seen.add(origin)
        if (parent := origin_of(other)) is not None:
            links.append(Link(trace.get_current_span(parent).get_span_context()))
    with _tracer.start_as_current_span(
        f"publish {destination}",
        context=origin_of(envelope),
        kind=SpanKind.PRODUCER,
        links=links,
        attributes={
            "messaging.system": transport,
            "messaging.operation.type": "send",
            "messaging.destination.name": destination,
            "messaging.message.id": envelope.event_id,
            "trading.event_type": envelope.event_type,
        },
    ) as span:
        inject_trace(headers)
        yield span


@contextmanager
def process_span(
    transport: str, destination: str, consumer: str, headers: dict[str, str] | None, event_id: str = ""
) -> Iterator[Span]:
    """A CONSUMER span, child of the producer's context from `headers`.
    Exceptions are not recorded here: callers retry and dead-letter, and mark
    the span themselves (`mark_failed`)."""
    parent = extract_trace(headers) if headers else None
    with _tracer.start_as_current_span(
        f"process {consumer}",
        context=parent,
        kind=SpanKind.CONSUMER,
        record_exception=False,
        set_status_on_exception=False,
        attributes={
            "messaging.system": transport,
            "messaging.operation.type": "process",
            "messaging.destination.name": destination,
            "messaging.consumer.group.name": consumer,
            "messaging.message.id": event_id,
        },
    ) as span:
        yield span


def mark_failed(span: Span, reason: str, error: BaseException | None) -> None:
    """Mark a consumer span as failed (dead-lettered or to be retried)."""
    if span.is_recording():
        if error is not None:
            span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, reason))
