"""Header names and conversions, trace context, dead-letter records, routing helpers."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from trading.execution.v1 import events_pb2 as exec_events
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.contracts import METADATA, event_registry
from runtime.messaging import DeadLetterReason, Delivery, RetryPolicy, Transport, new_envelope
from runtime.messaging import headers as h
from runtime.messaging.deadletter import dead_letter_headers, dead_letter_record, describe_error
from runtime.messaging.kafka import dlq_topic, platform_topics
from runtime.messaging.kafka.deadletter import parse_source as kafka_source
from runtime.messaging.nats import NatsPublisher, platform_streams, subject_filter, uses_jetstream
from runtime.messaging.nats.deadletter import parse_source as nats_source


def test_envelope_headers_use_the_metadata_keys() -> None:
    env = new_envelope(
        md_events.Tick(symbol="ETH-USD"),
        tenant_id="acme",
        correlation_id="corr-1",
        causation_id="e0",
        producer="m",
    )
    headers = h.envelope_headers(env)
    assert headers == {
        "x-event-id": env.event_id,
        "x-event-type": "trading.marketdata.v1.Tick",
        "x-schema-version": "1",
        "content-type": "application/x-protobuf",
        METADATA.tenant_id: "acme",
        METADATA.correlation_id: "corr-1",
        "x-causation-id": "e0",
    }
    assert h.TENANT_ID == "x-tenant-id" and h.CORRELATION_ID == "x-correlation-id"


def test_empty_envelope_facts_are_left_out() -> None:
    env = new_envelope(md_events.Tick(symbol="ETH-USD"), tenant_id="", correlation_id="", producer="m")
    assert set(h.envelope_headers(env)) == {"x-event-id", "x-event-type", "x-schema-version", "content-type"}


def test_kafka_header_conversion_round_trips() -> None:
    headers = {"x-event-id": "abc", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    raw = h.to_kafka(headers)
    assert raw == [(k, v.encode()) for k, v in headers.items()]
    assert h.from_kafka(raw) == headers
    assert h.from_kafka(None) == {}
    assert h.from_kafka([("bad", b"\xff"), ("none", None)]) == {"bad": "\ufffd", "none": ""}


def test_trace_context_is_injected_and_extracted() -> None:
    span_context = SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    ctx = trace.set_span_in_context(NonRecordingSpan(span_context))
    headers: dict[str, str] = {}
    h.inject_trace(headers, ctx)
    assert headers[h.TRACEPARENT] == f"00-{0x1234:032x}-{0x99:016x}-01"
    extracted = trace.get_current_span(h.extract_trace(headers)).get_span_context()
    assert (extracted.trace_id, extracted.span_id, extracted.is_remote) == (0x1234, 0x99, True)


def test_dead_letter_headers_and_record_round_trip() -> None:
    original = {"x-event-id": "e1", "x-dlq-reason": "stale"}
    out = dead_letter_headers(
        original,
        reason=DeadLetterReason.HANDLER_FAILED,
        error=ValueError("bad\r\nthing"),
        attempts=3,
        source="topic/1/42",
        consumer="audit",
    )
    assert out[h.DLQ_REASON] == "handler_failed"
    assert out[h.DLQ_ERROR] == "ValueError: bad thing"
    assert out[h.DLQ_ATTEMPTS] == "3"
    assert out[h.DLQ_SOURCE] == "topic/1/42"
    assert out[h.DLQ_CONSUMER] == "audit"
    assert out[h.DLQ_FAILED_AT].endswith("+00:00")
    record = dead_letter_record("topic.dlq/0/5", b"v", out, b"k")
    assert record.headers == {"x-event-id": "e1"}
    assert (record.reason, record.attempts, record.consumer, record.key) == (
        "handler_failed",
        3,
        "audit",
        b"k",
    )
    assert len(describe_error("x" * 5000)) == 1000


def test_sources_parse_back() -> None:
    kafka = Delivery(Transport.KAFKA, "trading.execution.orders", 2, 17)
    assert kafka_source(kafka.describe()) == ("trading.execution.orders", 2, 17)
    js = Delivery(Transport.NATS, "execution.orders.acme.BTC-USD", position=9, stream="EXECUTION")
    assert nats_source(js.describe()) == ("EXECUTION", "execution.orders.acme.BTC-USD", 9)
    core = Delivery(Transport.NATS, "marketdata.ticks.X")
    assert nats_source(core.describe()) == ("", "marketdata.ticks.X", 0)


def test_retry_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.1, max_backoff_s=0.5, jitter_s=0.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_routing_helpers_derive_from_the_registry() -> None:
    registry = event_registry()
    assert subject_filter("execution.orders.{tenant}.{symbol}", "p.") == "p.execution.orders.*.*"
    assert uses_jetstream(registry.route("trading.execution.v1.OrderStatusChanged"))
    assert not uses_jetstream(registry.route("trading.marketdata.v1.Tick"))
    # The ticks in batches ride core NATS: each tick is on Kafka as a Tick.
    assert not uses_jetstream(registry.route("trading.marketdata.v1.TickBatch"))
    topics = platform_topics(registry)
    assert "trading.execution.orders" in topics and dlq_topic("trading.execution.orders") in topics
    streams = {s.name: s.subjects for s in platform_streams(registry)}
    assert streams["EXECUTION"] == ("execution.orders.*.*",)
    assert streams["DLQ"] == ("dlq.>",)


def test_nats_subjects_come_from_the_template() -> None:
    publisher = NatsPublisher(NatsClient(), event_registry(), subject_prefix="env.")
    status = exec_events.OrderStatusChanged(symbol="BTC-USD")
    env = new_envelope(status, tenant_id="acme", correlation_id="c", producer="execution")
    assert publisher.destination_of(env) == "env.execution.orders.acme.BTC-USD"
    assert publisher.is_durable("trading.execution.v1.OrderStatusChanged")
    no_tenant = new_envelope(status, tenant_id="", correlation_id="c", producer="execution")
    with pytest.raises(ValueError, match="invalid subject"):  # an empty tenant token
        publisher.destination_of(no_tenant)
