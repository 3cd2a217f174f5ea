"""Transport headers of an event: one set of names for Kafka and NATS.

The envelope's facts are copied into headers so brokers, dead-letter tools and
tracing can read them without decoding the payload; the W3C trace context
(`traceparent`, `tracestate`) goes in through OpenTelemetry's configured
propagator. Tenant and correlation headers use the same keys as gRPC metadata
(`runtime.contracts.METADATA`), so a correlation id reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate
from trading.common.v1 import event_pb2

from runtime.contracts import METADATA

CONTENT_TYPE_PROTOBUF = "application/x-protobuf"

EVENT_ID = "x-event-id"
EVENT_TYPE = "x-event-type"
TENANT_ID = METADATA.tenant_id
CORRELATION_ID = METADATA.correlation_id
CAUSATION_ID = "x-causation-id"
SCHEMA_VERSION = "x-schema-version"
CONTENT_TYPE = "content-type"
TRACEPARENT = "traceparent"

# JetStream's de-duplication header: carries the event id on durable publishes.
NATS_MSG_ID = "Nats-Msg-Id"

# Headers a dead-letter record adds to the original ones.
DLQ_REASON = "x-dlq-reason"
DLQ_ERROR = "x-dlq-error"
DLQ_ATTEMPTS = "x-dlq-attempts"
DLQ_SOURCE = "x-dlq-source"
DLQ_CONSUMER = "x-dlq-consumer"
DLQ_FAILED_AT = "x-dlq-failed-at"
DLQ_PREFIX = "x-dlq-"


def envelope_headers(envelope: event_pb2.EventEnvelope) -> dict[str, str]:
    """The envelope's facts as headers (no trace context yet)."""
    headers = {
        EVENT_ID: envelope.event_id,
        EVENT_TYPE: envelope.event_type,
        SCHEMA_VERSION: str(envelope.schema_version),
        CONTENT_TYPE: CONTENT_TYPE_PROTOBUF,
    }
    # Empty values are left out: NATS and Kafka tools show them as noise.
    if envelope.tenant_id:
        headers[TENANT_ID] = envelope.tenant_id
    if envelope.correlation_id:
        headers[CORRELATION_ID] = envelope.correlation_id
    if envelope.causation_id:
        headers[CAUSATION_ID] = envelope.causation_id
    return headers


def inject_trace(headers: MutableMapping[str, str], context: otel_context.Context | None = None) -> None:
    """Write the current (or given) trace context into `headers`."""
    propagate.inject(headers, context=context)


def extract_trace(headers: Mapping[str, str]) -> otel_context.Context:
    """The trace context carried by `headers` (an empty one if none)."""
    return propagate.extract(headers)


def to_kafka(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """Kafka header list (values are bytes)."""
    return [(k, v.encode()) for k, v in headers.items()]


def from_kafka(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as a str mapping; the last value wins for repeated keys.
    Invalid UTF-8 is replaced rather than failing: a header never makes a
    message undeliverable."""
    if not headers:
        return {}
    return {k: (v.decode("utf-8", "replace") if v is not None else "") for k, v in headers}


def without_dlq(headers: Mapping[str, str]) -> dict[str, str]:
    """The original headers of a dead-lettered message."""
    return {k: v for k, v in headers.items() if not k.startswith(DLQ_PREFIX)}
