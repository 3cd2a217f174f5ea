"""Time in force (IOC/FOK/GTC/DAY): what happens to an order on a quote, and
when a DAY order expires. Pure functions that return the inputs to apply."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from domain.numbers import EXACT
from services.execution.domain.lifecycle import (
    TRANSITION_SOURCES,
    Cancel,
    Expire,
    OrderInput,
    ReportFill,
    Trigger,
)
from services.execution.domain.matching import Quote, match_quote
from services.execution.domain.orders import CancelReason, Order, TimeInForce


def day_session_end(created_at: datetime, close: time = time(0, 0)) -> datetime:
    """End of the trading day an order created at ``created_at`` belongs to.

    The first ``close`` (UTC) strictly after creation; 00:00 UTC is the
    contract's end of day for venues that trade around the clock.
    """
    at = created_at.astimezone(UTC)
    end = datetime.combine(at.date(), close, tzinfo=UTC)
    return end if end > at else end + timedelta(days=1)


def expiry_due(order: Order, now: datetime, session_end: datetime | None) -> tuple[OrderInput, ...]:
    """An Expire for a DAY order still open at or after its session end; nothing otherwise."""
    if (
        order.time_in_force is TimeInForce.DAY
        and session_end is not None
        and now >= session_end
        and order.status in TRANSITION_SOURCES[Trigger.EXPIRE]
    ):
        return (Expire(at=now, message="end of trading day"),)
    return ()


def on_quote(
    order: Order,
    quote: Quote | None,
    *,
    at: datetime,
    incoming: bool,
    session_end: datetime | None = None,
    execution_id: str | None = None,
) -> tuple[OrderInput, ...]:
    """What happens to the order on a quote, by its time in force: the inputs to apply.

    - IOC: the fill available now, then a cancel of any unfilled rest.
    - FOK: the fill if it covers the whole open quantity, else a cancel and no fill.
    - GTC: the fill available now; the rest keeps working.
    - DAY: like GTC until ``session_end``; at or after it, an expiry instead.

    ``quote`` None (no market for the symbol) fills nothing: IOC/FOK are
    canceled, GTC/DAY rest. IOC and FOK end on their first look.
    """
    expired = expiry_due(order, at, session_end)
    if expired:
        return expired
    if not order.is_working:
        return ()
    fills: tuple[ReportFill, ...] = ()
    if quote is not None:
        fills = match_quote(order, quote, at=at, incoming=incoming, execution_id=execution_id)
    filled = sum((f.quantity for f in fills), Decimal(0))
    rest = EXACT.subtract(order.open_quantity, filled)
    unfilled = Cancel(at=at, reason=CancelReason.UNFILLED_REMAINDER, message="unfilled remainder")
    match order.time_in_force:
        case TimeInForce.IOC:
            return (*fills, unfilled) if rest > 0 else fills
        case TimeInForce.FOK:
            if rest > 0:
                return (Cancel(at=at, reason=CancelReason.UNFILLED_REMAINDER, message="fill or kill"),)
            return fills
        case TimeInForce.GTC | TimeInForce.DAY:
            return fills
