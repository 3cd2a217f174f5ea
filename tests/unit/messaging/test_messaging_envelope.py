"""Envelope building and opening, UUIDv7 ids."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from google.protobuf import any_pb2
from trading.common.v1 import decimal_pb2, event_pb2
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.contracts import event_registry
from runtime.messaging import (
    PayloadMismatchError,
    UndecodableEnvelopeError,
    UnknownEventTypeError,
    decode_envelope,
    new_envelope,
    unpack,
    uuid7,
)
from runtime.messaging.consuming import decode, reason_of


def tick() -> md_events.Tick:
    return md_events.Tick(symbol="BTC-USD", last_price=decimal_pb2.Decimal(value="65000.5"), sequence=7)


def test_uuid7_layout_and_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_uuid7_is_monotonic_and_unique() -> None:
    ids = [uuid7() for _ in range(10_000)]  # many per millisecond
    assert ids == sorted(ids, key=lambda u: u.int)
    assert len(set(ids)) == len(ids)
    assert str(ids[0]) == str(uuid.UUID(str(ids[0])))


def test_new_envelope_fills_everything_from_the_payload() -> None:
    payload = tick()
    occurred = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    env = new_envelope(
        payload,
        tenant_id="t1",
        correlation_id="c1",
        causation_id="e0",
        producer="marketdata",
        occurred_at=occurred,
    )
    assert uuid.UUID(env.event_id).version == 7
    assert env.event_type == "trading.marketdata.v1.Tick"
    assert env.schema_version == 1
    assert (env.tenant_id, env.correlation_id, env.causation_id, env.producer) == (
        "t1",
        "c1",
        "e0",
        "marketdata",
    )
    assert env.occurred_at.ToDatetime(tzinfo=UTC) == occurred
    assert env.payload.TypeName() == "trading.marketdata.v1.Tick"
    assert unpack(env, event_registry()) == payload


def test_new_envelope_defaults_occurred_at_to_now() -> None:
    before = time.time_ns()
    env = new_envelope(tick(), tenant_id="", correlation_id="c", producer="p")
    assert before <= env.occurred_at.ToNanoseconds() <= time.time_ns()


def test_new_envelope_rejects_a_non_event_message() -> None:
    with pytest.raises(UnknownEventTypeError):
        new_envelope(decimal_pb2.Decimal(value="1"), tenant_id="", correlation_id="c", producer="p")


def test_envelope_survives_the_wire() -> None:
    env = new_envelope(tick(), tenant_id="t", correlation_id="c", producer="p")
    decoded, payload = decode(env.SerializeToString(), event_registry())
    assert decoded == env
    assert payload == tick()


@pytest.mark.parametrize("data", [b"\xff\x00garbage", b"", b"\x0a\x02ab"])
def test_garbage_is_undecodable(data: bytes) -> None:
    with pytest.raises(UndecodableEnvelopeError) as info:
        decode_envelope(data)
    assert reason_of(info.value).value == "undecodable"


def test_unknown_event_type() -> None:
    env = new_envelope(tick(), tenant_id="t", correlation_id="c", producer="p")
    env.event_type = "trading.nothing.v1.Nope"
    with pytest.raises(UnknownEventTypeError) as info:
        unpack(env, event_registry())
    assert reason_of(info.value).value == "unknown_event_type"


def test_payload_of_another_type_is_a_mismatch() -> None:
    env = new_envelope(tick(), tenant_id="t", correlation_id="c", producer="p")
    env.event_type = "trading.marketdata.v1.TickRejected"
    with pytest.raises(PayloadMismatchError):
        unpack(env, event_registry())


def test_corrupt_payload_bytes_are_a_mismatch() -> None:
    env = event_pb2.EventEnvelope(event_id="x", event_type="trading.marketdata.v1.Tick")
    env.payload.CopyFrom(
        any_pb2.Any(type_url="type.googleapis.com/trading.marketdata.v1.Tick", value=b"\xff\xff")
    )
    with pytest.raises(PayloadMismatchError):
        unpack(env, event_registry())


def test_missing_payload_is_a_mismatch() -> None:
    env = event_pb2.EventEnvelope(event_id="x", event_type="trading.marketdata.v1.Tick")
    with pytest.raises(PayloadMismatchError):
        unpack(env, event_registry())
