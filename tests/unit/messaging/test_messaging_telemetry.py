"""Messaging metrics on a private Prometheus registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.messaging import new_envelope
from runtime.messaging.telemetry import MessagingMetrics


def test_metrics_count_and_observe() -> None:
    registry = CollectorRegistry()
    metrics = MessagingMetrics(registry)
    env = new_envelope(md_events.Tick(symbol="A"), tenant_id="", correlation_id="c", producer="p")
    tick = "trading.marketdata.v1.Tick"
    metrics.published("kafka", tick, 0.001, "marketdata.ticks")
    metrics.published("kafka", tick, 0.002, "marketdata.ticks")
    metrics.publish_failed("nats", "md.ticks.{symbol}", 3)
    metrics.consumed("kafka", "audit", env, 0.0005)
    metrics.failed("kafka", "audit", tick)
    metrics.dead_lettered("nats", "audit", "undecodable")

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("trading_messaging_published_total", transport="kafka", event_type=tick) == 2
    assert (
        value("trading_messaging_publish_seconds_count", transport="kafka", destination="marketdata.ticks")
        == 2
    )
    assert (
        value("trading_messaging_publish_failures_total", transport="nats", destination="md.ticks.{symbol}")
        == 3
    )
    assert (
        value("trading_messaging_consumed_total", transport="kafka", consumer="audit", event_type=tick) == 1
    )
    assert (
        value(
            "trading_messaging_handler_failures_total", transport="kafka", consumer="audit", event_type=tick
        )
        == 1
    )
    assert (
        value(
            "trading_messaging_dead_lettered_total", transport="nats", consumer="audit", reason="undecodable"
        )
        == 1
    )
    assert value("trading_messaging_handler_seconds_count", transport="kafka", consumer="audit") == 1
    e2e = value("trading_messaging_end_to_end_seconds_sum", transport="kafka", consumer="audit")
    assert e2e is not None and 0 <= e2e < 5


def test_an_envelope_carries_the_trace_it_was_made_in() -> None:
    """What lets a relay's later publish, and every consumer, continue the
    trace of the request that made the event."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from runtime.messaging.telemetry import message_trace, origin_of

    outside = new_envelope(md_events.Tick(symbol="A"), tenant_id="", correlation_id="c", producer="p")
    assert dict(outside.trace_context) == {} and origin_of(outside) is None
    assert message_trace(outside, {"traceparent": "batch"}) == {"traceparent": "batch"}

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("PlaceOrder") as span:
        inside = new_envelope(md_events.Tick(symbol="A"), tenant_id="", correlation_id="c", producer="p")
    made_in = span.get_span_context()
    assert inside.trace_context["traceparent"].split("-")[1:3] == [
        f"{made_in.trace_id:032x}",
        f"{made_in.span_id:016x}",
    ]
    origin = origin_of(inside)
    assert origin is not None
    assert trace.get_current_span(origin).get_span_context().trace_id == made_in.trace_id
    assert message_trace(inside, {"traceparent": "batch"}) == dict(inside.trace_context)


def test_a_batch_publish_links_each_distinct_origin_once() -> None:
    """A batch whose events were made in one span (a consumer's batch) is
    one parent and no links; events of other spans add one link each."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from runtime.messaging import telemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    def made_in(name: str, n: int) -> list[Any]:
        with tracer.start_as_current_span(name):
            return [
                new_envelope(md_events.Tick(symbol="A"), tenant_id="", correlation_id="c", producer="p")
                for _ in range(n)
            ]

    one, other = made_in("batch", 5), made_in("other", 2)
    original, telemetry._tracer = telemetry._tracer, tracer
    try:
        with telemetry.publish_span("nats", "batch of 5", one[0], {}, one):
            pass
        with telemetry.publish_span("nats", "batch of 7", one[0], {}, [*one, *other]):
            pass
    finally:
        telemetry._tracer = original
    same, mixed = exporter.get_finished_spans()[-2:]
    assert same.parent is not None and same.parent.span_id == origin_span(one[0]) and not same.links
    assert [link.context.span_id for link in mixed.links] == [origin_span(other[0])]


def origin_span(envelope: Any) -> int:
    """The id of the span an envelope was made in."""
    from opentelemetry import trace

    from runtime.messaging.telemetry import origin_of

    return trace.get_current_span(origin_of(envelope)).get_span_context().span_id
