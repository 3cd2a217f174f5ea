"""How the audit consumer orders a consumed batch into chains: split by
tenant, each partition's own order kept, partitions merged by event time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka import ConsumerRecord
from trading.execution.v1 import events_pb2 as execution_events

from runtime.messaging import new_envelope
from runtime.messaging.base import Delivery, Event, Transport
from services.audit.consumer import Pending, by_chain
from services.audit.ports import new_record

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def pending(tenant: str, partition: int, offset: int, seconds: int) -> Pending:
    payload = execution_events.OrderAccepted(order_id=f"o-{partition}-{offset}")
    envelope = new_envelope(payload, tenant_id=tenant, correlation_id="c", producer="test")
    envelope.occurred_at.FromDatetime(T0 + timedelta(seconds=seconds))
    topic = "trading.execution.orders"
    source: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic, partition, offset, 0, 0, None, envelope.SerializeToString(), None, 0, 0, []
    )
    event = Event(envelope, payload, {}, Delivery(Transport.KAFKA, topic, partition, offset))
    return Pending(event, new_record(envelope, payload, "order_id"), source)


def offsets(items: list[Pending]) -> list[tuple[int, int]]:
    return [(p.source.partition, p.source.offset) for p in items]


def test_a_batch_is_split_by_tenant_and_partitions_merge_by_event_time() -> None:
    batch = [
        # Partition 0 as fetched (its events' clocks disagree: offset order wins).
        pending("a", 0, 10, seconds=1),
        pending("a", 0, 11, seconds=5),
        pending("a", 0, 12, seconds=4),
        pending("b", 0, 13, seconds=0),
        # Partition 1, fetched after partition 0.
        pending("a", 1, 20, seconds=2),
        pending("b", 1, 21, seconds=9),
        pending("a", 1, 22, seconds=6),
    ]
    chains = by_chain(batch)
    assert set(chains) == {"a", "b"}
    assert offsets(chains["a"]) == [(0, 10), (1, 20), (0, 11), (0, 12), (1, 22)]
    assert offsets(chains["b"]) == [(0, 13), (1, 21)]
    assert by_chain([]) == {}
