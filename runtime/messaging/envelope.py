"""Building and opening the event envelope (`trading.common.v1.EventEnvelope`).

Event ids are UUIDv7 (RFC 9562): time-ordered, so ids sort by creation time and
index well in PostgreSQL. Python 3.11's `uuid` module has no `uuid7()` (3.14
adds one), and the small PyPI implementations differ in how they order ids
within one millisecond; the ~15 lines below follow RFC 9562 method 1 (a 12-bit
counter in `rand_a`, seeded randomly every millisecond) and need no new
dependency.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime

from google.protobuf import message as pb_message
from google.protobuf.timestamp_pb2 import Timestamp
from trading.common.v1 import event_pb2, options_pb2

from runtime.messaging.base import Registry
from runtime.messaging.headers import inject_trace

EventEnvelope = event_pb2.EventEnvelope

# ---------------------------------------------------------------------------- UUIDv7

_uuid7_lock = threading.Lock()
_uuid7_last_ms = 0
_uuid7_counter = 0


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48-bit Unix milliseconds, version 7, a 12-bit counter that
    keeps ids monotonic within one millisecond, variant 10, 62 random bits."""
    global _uuid7_last_ms, _uuid7_counter
    with _uuid7_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _uuid7_last_ms:
            _uuid7_last_ms = ms
            # Seed with the top bit clear so at least 2048 ids fit in one ms.
            _uuid7_counter = int.from_bytes(os.urandom(2), "big") & 0x07FF
        else:
            # Same (or a backwards-stepped) millisecond: count up; on overflow
            # borrow the next millisecond so ordering still holds.
            _uuid7_counter += 1
            if _uuid7_counter > 0x0FFF:
                _uuid7_last_ms += 1
                _uuid7_counter = 0
        ms, counter = _uuid7_last_ms, _uuid7_counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


# ---------------------------------------------------------------------------- errors


class EnvelopeError(Exception):
    """A message that cannot be turned into an envelope plus typed payload."""


class UndecodableEnvelopeError(EnvelopeError):
    """The bytes are not a valid EventEnvelope."""


class UnknownEventTypeError(EnvelopeError):
    """The envelope names an event type that no contract declares."""


class PayloadMismatchError(EnvelopeError):
    """The packed payload is not the declared event type, or does not parse."""


# ---------------------------------------------------------------------------- envelope


# Routes read from payload descriptors, by full name: reading options on every
# publish would be wasted work.
_routes: dict[str, options_pb2.EventRoute] = {}


def event_route_of(payload: pb_message.Message) -> options_pb2.EventRoute:
    """The EventRoute option of a payload message (raises if it is not an event)."""
    descriptor = payload.DESCRIPTOR
    route = _routes.get(descriptor.full_name)
    if route is None:
        options = descriptor.GetOptions()
        if not options.HasExtension(options_pb2.event):
            raise UnknownEventTypeError(f"{descriptor.full_name} has no (trading.common.v1.event) option")
        route = _routes[descriptor.full_name] = options.Extensions[options_pb2.event]
    return route


def new_envelope(
    payload: pb_message.Message,
    *,
    tenant_id: str,
    correlation_id: str,
    causation_id: str = "",
    producer: str,
    occurred_at: datetime | Timestamp | None = None,
) -> event_pb2.EventEnvelope:
    """Wrap an event payload: new UUIDv7 event id, type and schema version from
    the payload's `(trading.common.v1.event)` option, occurred_at defaults to now."""
    route = event_route_of(payload)
    envelope = event_pb2.EventEnvelope(
        event_id=str(uuid7()),
        event_type=payload.DESCRIPTOR.full_name,
        tenant_id=tenant_id,
        correlation_id=correlation_id,
        causation_id=causation_id,
        schema_version=route.schema_version,
        producer=producer,
    )
    if occurred_at is None:
        envelope.occurred_at.FromNanoseconds(time.time_ns())
    elif isinstance(occurred_at, datetime):
        envelope.occurred_at.FromDatetime(occurred_at)
    else:
        envelope.occurred_at.CopyFrom(occurred_at)
    envelope.payload.Pack(payload)
    # The span the event is made in: its publish and consumers continue that
    # trace, even when an outbox relay publishes it later (no-op without a span).
    inject_trace(envelope.trace_context)
    return envelope


def decode_envelope(data: bytes) -> event_pb2.EventEnvelope:
    """Parse envelope bytes; an envelope without event id or type is rejected
    too (random bytes often parse as an empty message)."""
    try:
        envelope = event_pb2.EventEnvelope.FromString(data)
    except pb_message.DecodeError as exc:
        raise UndecodableEnvelopeError(f"not an EventEnvelope: {exc}") from exc
    if not envelope.event_id or not envelope.event_type:
        raise UndecodableEnvelopeError("EventEnvelope without event_id or event_type")
    return envelope


def unpack(envelope: event_pb2.EventEnvelope, registry: Registry) -> pb_message.Message:
    """The typed payload of an envelope, checked against the registry."""
    try:
        cls = registry.message_class(envelope.event_type)
    except LookupError as exc:
        raise UnknownEventTypeError(f"unknown event type {envelope.event_type!r}") from exc
    payload = cls()
    type_name = envelope.payload.TypeName() if envelope.payload.type_url else ""
    if type_name != envelope.event_type:
        raise PayloadMismatchError(
            f"payload is {type_name or 'empty'!r}, envelope says {envelope.event_type!r}"
        )
    try:
        # Unpack checks the type url again and parses the bytes.
        if not envelope.payload.Unpack(payload):
            raise PayloadMismatchError(f"payload does not unpack as {envelope.event_type}")
    except pb_message.DecodeError as exc:
        raise PayloadMismatchError(f"payload bytes of {envelope.event_type} do not parse: {exc}") from exc
    return payload
