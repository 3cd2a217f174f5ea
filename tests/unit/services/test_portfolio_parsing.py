"""The portfolio's pure edges: fill events to domain fills (what is refused and
goes to the DLQ), quotes to marks, and the RLS of its migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from trading.common.v1 import decimal_pb2, market_pb2, types_pb2
from trading.execution.v1 import events_pb2
from trading.execution.v1 import types_pb2 as execution_types

from runtime.contracts import event_registry
from runtime.messaging import Delivery, Event, Transport, new_envelope, uuid7
from runtime.storage.postgres import tenant_rls_sql
from services.portfolio import domain
from services.portfolio.consumers import parse_fill
from services.portfolio.views import mark_of_quote

MIGRATIONS = Path(__file__).parents[3] / "services" / "portfolio" / "migrations"


def event(tenant: str = "t1", **fill_fields: Any) -> Event:
    order_id = str(uuid7())
    fields: dict[str, Any] = {
        "execution_id": str(uuid7()),
        "order_id": order_id,
        "symbol": "ETH-USD",
        "side": types_pb2.SIDE_SELL,
        "price": decimal_pb2.Decimal(value="2500.5"),
        "quantity": decimal_pb2.Decimal(value="0.25"),
        "fee": decimal_pb2.Money(currency="USD", amount=decimal_pb2.Decimal(value="0.31")),
    }
    fields.update(fill_fields)
    payload = events_pb2.OrderFillReported(
        order_id=order_id, fill=execution_types.Fill(**fields), order=execution_types.Order(order_id=order_id)
    )
    envelope = new_envelope(payload, tenant_id=tenant, correlation_id="c", producer="execution")
    return Event(envelope, payload, {}, Delivery(Transport.KAFKA, "trading.execution.fills", 0, 0))


def test_a_valid_fill_event_becomes_a_domain_fill() -> None:
    e = event()
    tenant, record, fill = parse_fill(e)
    assert tenant == "t1"
    assert record.event_id == e.envelope.event_id
    assert fill == domain.Fill("ETH-USD", domain.Side.SELL, D("0.25"), D("2500.5"), D("0.31"))
    assert event_registry().route(e.envelope.event_type).kafka_topic == "trading.execution.fills"


@pytest.mark.parametrize(
    ("kwargs", "tenant"),
    [
        ({"side": types_pb2.SIDE_UNSPECIFIED}, "t1"),
        ({"quantity": decimal_pb2.Decimal(value="0")}, "t1"),
        ({"quantity": decimal_pb2.Decimal()}, "t1"),
        ({"price": decimal_pb2.Decimal(value="-1")}, "t1"),
        ({"fee": decimal_pb2.Money(currency="EUR", amount=decimal_pb2.Decimal(value="1"))}, "t1"),
        ({"execution_id": ""}, "t1"),
        ({"symbol": "eth"}, "t1"),
        ({}, ""),
    ],
)
def test_fills_the_books_cannot_take_are_refused(kwargs: dict[str, object], tenant: str) -> None:
    with pytest.raises(domain.InvalidFillError):
        parse_fill(event(tenant, **kwargs))


def test_a_fill_without_fee_costs_nothing() -> None:
    _, _, fill = parse_fill(event(fee=None))  # unset: the venue charged none
    assert fill.fee == 0


def test_quote_marks_at_mid_timed_by_the_exchange() -> None:
    q = market_pb2.Quote(
        symbol="AAPL",
        bid_price=decimal_pb2.Decimal(value="189.99"),
        ask_price=decimal_pb2.Decimal(value="190.02"),
        last_price=decimal_pb2.Decimal(value="180"),
    )
    q.exchange_time.FromDatetime(datetime(2024, 5, 1, 12, tzinfo=UTC))
    mark = mark_of_quote(q)
    assert mark == domain.Mark(D("190.005"), datetime(2024, 5, 1, 12, tzinfo=UTC))
    assert mark_of_quote(market_pb2.Quote(symbol="AAPL")) is None


def test_every_table_has_tenant_row_level_security() -> None:
    sql = "".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.sql")))
    for table in ("accounts", "positions", "processed_events"):
        assert f"CREATE TABLE {table} (" in sql
        assert tenant_rls_sql(table) in sql
