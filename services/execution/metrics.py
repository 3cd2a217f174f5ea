"""Execution's business counters (the trading dashboard,
deploy/grafana/dashboards/trading.json reads them), counted by the order
stores once a change has committed."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from services.execution.domain import OrderEvent, OrderStatus

ORDER_STATUS_CHANGES = Counter(
    "trading_execution_order_status_changes",
    "Orders that entered a status (committed: placement's own steps and every later one), by status.",
    ("status",),
)
FILLS = Counter("trading_execution_fills", "Fills (executions) committed with their order.")
_ENTERED = {status: ORDER_STATUS_CHANGES.labels(status.name) for status in OrderStatus}


def count_committed(events: Sequence[OrderEvent]) -> None:
    """Metrics of the steps of one committed change."""
    for event in events:
        if event.order.status != event.previous_status:
            _ENTERED[event.order.status].inc()
        if event.fill is not None:
            FILLS.inc()
