"""The consume path both transports share: decode, call the handler with
metrics, classify failures. Transports add fetching, acking and the DLQ."""

from __future__ import annotations

import time

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2

from runtime.messaging.base import DeadLetterReason, Event, Handler, Registry
from runtime.messaging.envelope import EnvelopeError, UnknownEventTypeError, decode_envelope, unpack
from runtime.messaging.telemetry import MessagingMetrics


def decode(data: bytes, registry: Registry) -> tuple[event_pb2.EventEnvelope, pb_message.Message]:
    """Envelope and typed payload of a message value (raises EnvelopeError)."""
    envelope = decode_envelope(data)
    return envelope, unpack(envelope, registry)


def reason_of(error: EnvelopeError) -> DeadLetterReason:
    """Dead-letter reason of a decode failure."""
    if isinstance(error, UnknownEventTypeError):
        return DeadLetterReason.UNKNOWN_EVENT_TYPE
    return DeadLetterReason.UNDECODABLE


async def attempt(
    handler: Handler, event: Event, *, transport: str, consumer: str, metrics: MessagingMetrics
) -> Exception | None:
    """One handler call: None on success, else the exception it raised.
    Cancellation propagates (a stopping consumer must not ack)."""
    start = time.perf_counter()
    try:
        await handler(event)
    except Exception as exc:
        metrics.failed(transport, consumer, event.envelope.event_type)
        return exc
    metrics.consumed(transport, consumer, event.envelope, time.perf_counter() - start)
    return None
