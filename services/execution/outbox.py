"""What an order change puts into execution's outbox (runtime/outbox.py).

Every order change writes, in its own transaction, one outbox row per event
envelope: the durable event (OrderAccepted, OrderFillReported, ...) for Kafka
and OrderStatusChanged for NATS, both keyed by the order id so the shared
relay publishes one order's events in the order they happened. Rows of one
order are written under that order's row lock, so their ids follow the
order's versions.
"""

from __future__ import annotations

from collections.abc import Sequence

from trading.execution.v1 import types_pb2

from runtime.context import current_context
from runtime.messaging import new_envelope
from runtime.outbox import KAFKA, NATS, OutboxRow, outbox_row
from services.execution.domain import EventKind, OrderEvent
from services.execution.wire import event_to_proto, status_changed_to_proto

PRODUCER = "execution"

_FIRST_EVENTS = frozenset({EventKind.ACCEPTED, EventKind.REJECTED})


def outbox_rows(events: Sequence[OrderEvent], *, producer: str = PRODUCER) -> list[OutboxRow]:
    """The envelopes of the events one change emitted: each event once for
    Kafka and once (as OrderStatusChanged) for NATS."""
    rows: list[OutboxRow] = []
    correlation_id = current_context().correlation_id
    for event in events:
        order = event.order
        durable = new_envelope(
            event_to_proto(event),
            tenant_id=order.tenant_id,
            correlation_id=correlation_id,
            producer=producer,
            occurred_at=order.updated_at,
        )
        changed = status_changed_to_proto(event)
        if event.kind in _FIRST_EVENTS:
            # The contract: UNSPECIFIED for a new order.
            changed.previous_status = types_pb2.ORDER_STATUS_UNSPECIFIED
        live = new_envelope(
            changed,
            tenant_id=order.tenant_id,
            correlation_id=correlation_id,
            causation_id=durable.event_id,
            producer=producer,
            occurred_at=order.updated_at,
        )
        rows.append(outbox_row(durable, KAFKA, partition_key=order.order_id))
        rows.append(outbox_row(live, NATS, partition_key=order.order_id))
    return rows
