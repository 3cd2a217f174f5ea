"""Pure parts of execution's persistence: the migration's RLS policies and
the envelopes an order change puts into the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from trading.common.v1 import event_pb2
from trading.execution.v1 import events_pb2, types_pb2

from runtime.storage.postgres import tenant_rls_sql
from services.execution.domain import (
    Accept,
    Order,
    OrderEvent,
    OrderType,
    ReportFill,
    Side,
    TimeInForce,
    apply_all,
    new_order,
)
from services.execution.outbox import outbox_rows

MIGRATION = Path(__file__).parents[3] / "services/execution/migrations/0001_orders.sql"


def test_every_execution_table_has_the_platform_rls_policy() -> None:
    sql = MIGRATION.read_text()
    for table in ("orders", "executions", "outbox"):
        assert tenant_rls_sql(table).strip() in sql


def _accepted_and_filled(number: int) -> tuple[Order, tuple[OrderEvent, ...]]:
    """A market buy of 2 at 10 for tenant acme, accepted then filled at once."""
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    order = new_order(
        order_id=f"0190a4c2-0000-7000-8000-00000000000{number}",
        tenant_id="acme",
        client_order_id=f"c{number}",
        symbol="BTC-USD",
        side=Side.BUY,
        type=OrderType.MARKET,
        time_in_force=TimeInForce.IOC,
        quantity=Decimal("2"),
        limit_price=None,
        created_at=now,
    )
    fill = ReportFill(
        at=now,
        execution_id=f"0190a4c2-0000-7000-8000-0000000000f{number}",
        price=Decimal("10"),
        quantity=Decimal("2"),
    )
    _, events = apply_all(order, (Accept(at=now, venue="paper"), fill))
    return order, events


def test_each_event_goes_to_kafka_and_as_status_change_to_nats() -> None:
    order, events = _accepted_and_filled(1)
    rows = outbox_rows(events)
    assert [(r.destination, r.event_type.rsplit(".", 1)[1]) for r in rows] == [
        ("kafka", "OrderAccepted"),
        ("nats", "OrderStatusChanged"),
        ("kafka", "OrderFillReported"),
        ("nats", "OrderStatusChanged"),
    ]
    assert {r.partition_key for r in rows} == {order.order_id}
    assert len({r.event_id for r in rows}) == 4
    envelopes = [event_pb2.EventEnvelope.FromString(r.envelope) for r in rows]
    assert {e.tenant_id for e in envelopes} == {"acme"}
    first, second = events_pb2.OrderStatusChanged(), events_pb2.OrderStatusChanged()
    envelopes[1].payload.Unpack(first)
    envelopes[3].payload.Unpack(second)
    # A new order has no previous status; later changes name theirs.
    assert first.previous_status == types_pb2.ORDER_STATUS_UNSPECIFIED
    assert second.previous_status == types_pb2.ORDER_STATUS_ACCEPTED
    assert second.fill.execution_id == "0190a4c2-0000-7000-8000-0000000000f1"
    assert envelopes[1].causation_id == envelopes[0].event_id


def test_each_committed_step_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    from services.execution.main import log_lifecycle

    _, events = _accepted_and_filled(2)
    caplog.set_level("INFO", logger="execution.orders")
    log_lifecycle(events)
    lines = [r.getMessage() for r in caplog.records if r.name == "execution.orders"]
    assert lines == [
        "order 0190a4c2-0000-7000-8000-000000000002 c2: NEW -> ACCEPTED",
        "order 0190a4c2-0000-7000-8000-000000000002 c2: ACCEPTED -> FILLED (fill 2 @ 10)",
    ]
