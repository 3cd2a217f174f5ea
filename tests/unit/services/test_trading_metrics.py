"""The business counters the trading dashboard reads
(deploy/grafana/dashboards/trading.json): execution counts each committed
step of an order by the status it entered, and its fills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from prometheus_client import REGISTRY

from services.execution.domain import (
    Accept,
    OrderInput,
    OrderStatus,
    OrderType,
    ReportFill,
    Side,
    TimeInForce,
    apply_all,
    new_order,
)
from services.execution.metrics import count_committed

T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)


def _entered(status: str) -> float:
    return (
        REGISTRY.get_sample_value("trading_execution_order_status_changes_total", {"status": status}) or 0.0
    )


def _fills() -> float:
    return REGISTRY.get_sample_value("trading_execution_fills_total") or 0.0


def test_committed_steps_count_statuses_entered_and_fills() -> None:
    order = new_order(
        order_id="0190f4a2-7c1e-7d3a-9b2f-1a2b3c4d5e6f",
        tenant_id="tenant-a",
        client_order_id="c-1",
        symbol="BTC-USD",
        side=Side.BUY,
        type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        quantity=Decimal(10),
        limit_price=Decimal(100),
        created_at=T0,
        strategy_id="s-1",
        venue="paper",
    )
    steps: list[OrderInput] = [
        Accept(at=T0),
        ReportFill(at=T0 + timedelta(seconds=1), execution_id="x-1", price=Decimal(100), quantity=Decimal(4)),
        ReportFill(at=T0 + timedelta(seconds=2), execution_id="x-2", price=Decimal(100), quantity=Decimal(1)),
        ReportFill(at=T0 + timedelta(seconds=3), execution_id="x-3", price=Decimal(100), quantity=Decimal(5)),
    ]
    final, events = apply_all(order, steps)
    assert final.status is OrderStatus.FILLED
    before = {s: _entered(s) for s in ("ACCEPTED", "PARTIALLY_FILLED", "FILLED")}
    fills_before = _fills()
    count_committed(events)
    # The second partial fill changes no status: counted as a fill only.
    assert {s: _entered(s) - before[s] for s in before} == {"ACCEPTED": 1, "PARTIALLY_FILLED": 1, "FILLED": 1}
    assert _fills() - fills_before == 3
