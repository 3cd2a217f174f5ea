"""The consume path both transports share: decode, call the handler with
metrics, retry in process, classify failures. Transports add fetching,
acking and the DLQ."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2

from runtime.messaging.base import DeadLetterReason, Event, Handler, Registry, RetryPolicy
from runtime.messaging.envelope import EnvelopeError, UnknownEventTypeError, decode_envelope, unpack
from runtime.messaging.telemetry import MessagingMetrics

log = logging.getLogger(__name__)


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


async def retried(
    handler: Handler,
    event: Event,
    *,
    retry: RetryPolicy,
    transport: str,
    consumer: str,
    metrics: MessagingMetrics,
    stopping: Callable[[], bool] = lambda: False,
) -> Exception | None:
    """Up to `retry.max_attempts` handler calls with backoff in between, for
    transports without redelivery of their own (Kafka, core NATS): None once
    one succeeds, else the last error (the caller dead-letters). Raises
    CancelledError when `stopping()` turns true between attempts, so the
    message is neither acked nor dead-lettered."""
    error: Exception | None = None
    for number in range(1, retry.max_attempts + 1):
        if number > 1:
            event = dataclasses.replace(event, attempt=number)
        error = await attempt(handler, event, transport=transport, consumer=consumer, metrics=metrics)
        if error is None:
            return None
        log.warning(
            "handler %s failed on %s (attempt %d/%d): %r",
            consumer, event.delivery.describe(), number, retry.max_attempts, error,
        )  # fmt: skip
        if stopping():
            raise asyncio.CancelledError
        if number < retry.max_attempts:
            await asyncio.sleep(retry.backoff(number))
    return error
