"""Event-sourced replay and its comparison with the live state: pure, no I/O.

:class:`OrderReplay` rebuilds orders by running execution's own state machine
(services/execution/domain/) over the inputs the stored events describe;
:class:`PositionReplay` rebuilds positions with portfolio's own accounting
(services/portfolio/domain/) over the stored fills. :func:`compare_orders`
and :func:`compare_positions` list how the rebuilt state differs from the
live one, exactly (Decimal equality).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Final

import protovalidate
from google.protobuf import message as pb_message
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types
from trading.portfolio.v1 import events_pb2 as portfolio_events
from trading.portfolio.v1 import types_pb2 as portfolio_types

from runtime import decimals
from services.audit.domain.chain import timestamp_to_datetime
from services.execution import domain as execution
from services.execution.wire import order_from_proto
from services.portfolio import domain as portfolio

# ------------------------------------------------------------------ replay

ORDER_PAYLOADS: Final = (
    execution_events.OrderAccepted,
    execution_events.OrderRejected,
    execution_events.OrderCancelRequested,
    execution_events.OrderCanceled,
    execution_events.OrderExpired,
    execution_events.OrderFillReported,
)
ORDER_EVENT_TYPES: Final = tuple(m.DESCRIPTOR.full_name for m in ORDER_PAYLOADS)
FILL_EVENT_TYPE: Final = execution_events.OrderFillReported.DESCRIPTOR.full_name
POSITION_CHANGED_TYPE: Final = portfolio_events.PositionChanged.DESCRIPTOR.full_name
REPLAY_EVENT_TYPES: Final = (*ORDER_EVENT_TYPES, POSITION_CHANGED_TYPE)

OrderPayload = (
    execution_events.OrderAccepted
    | execution_events.OrderRejected
    | execution_events.OrderCancelRequested
    | execution_events.OrderCanceled
    | execution_events.OrderExpired
    | execution_events.OrderFillReported
)


class DifferenceKind(enum.IntEnum):
    """trading.audit.v1.DifferenceKind (same numbers)."""

    MISSING_IN_LIVE = 1
    MISSING_IN_REPLAY = 2
    VALUE_MISMATCH = 3


@dataclass(frozen=True, slots=True, order=True)
class Difference:
    """How the rebuilt state and the live state differ for one entity (one field)."""

    aggregate_type: str
    aggregate_id: str
    field: str
    kind: DifferenceKind
    replayed_value: str = ""
    live_value: str = ""


def text(value: Decimal | None) -> str:
    """A number for display: plain notation, no trailing zeros; "" for none."""
    if value is None:
        return ""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _at(value: object) -> datetime:
    return timestamp_to_datetime(value)


def order_input(payload: OrderPayload) -> execution.OrderInput:
    """The state-machine input an order event records; the snapshot it
    carries supplies the details (reasons, venue ids)."""
    snapshot = payload.order
    at = _at(snapshot.updated_at)
    if isinstance(payload, execution_events.OrderAccepted):
        return execution.Accept(at=at, venue=snapshot.venue, venue_order_id=snapshot.venue_order_id)
    if isinstance(payload, execution_events.OrderRejected):
        return execution.Reject(at=at, reason=snapshot.reject_reason, message=snapshot.status_message)
    if isinstance(payload, execution_events.OrderFillReported):
        fill = payload.fill
        return execution.ReportFill(
            at=_at(fill.executed_at),
            execution_id=fill.execution_id,
            price=decimals.from_proto(fill.price),
            quantity=decimals.from_proto(fill.quantity),
            liquidity=execution.Liquidity(fill.liquidity),
            fee=decimals.from_proto(fill.fee.amount),
            fee_currency=fill.fee.currency,
            venue_execution_id=fill.venue_execution_id,
        )
    if isinstance(payload, execution_events.OrderCancelRequested):
        return execution.RequestCancel(
            at=at, reason=execution.CancelReason(snapshot.cancel_reason), message=snapshot.status_message
        )
    if isinstance(payload, execution_events.OrderCanceled):
        return execution.Cancel(
            at=at, reason=execution.CancelReason(snapshot.cancel_reason), message=snapshot.status_message
        )
    return execution.Expire(at=at, message=snapshot.status_message)


def initial_order(snapshot: execution_types.Order, tenant_id: str) -> execution.Order:
    """The NEW order (version 1) the first snapshot started from: its fixed
    fields, none of what later steps changed."""
    seen = order_from_proto(snapshot, tenant_id=tenant_id)
    return replace(
        seen,
        status=execution.OrderStatus.NEW,
        version=1,
        updated_at=seen.created_at,
        filled_quantity=Decimal(0),
        filled_notional=Decimal(0),
        execution_ids=frozenset(),
        reject_reason="",
        cancel_reason=execution.CancelReason.UNSPECIFIED,
        status_message="",
        venue="",
        venue_order_id="",
    )


@dataclass(slots=True)
class ReplayedOrder:
    """An order rebuilt from its events; `error` says where the events stopped
    making sense to the state machine (the order stays as it was before)."""

    order: execution.Order | None
    error: str = ""


@dataclass
class OrderReplay:
    """Collects order events, then rebuilds every order with execution's state machine.

    Each event carries the order's version after its step, so the events of
    one order are applied in version order whatever order the two topics
    (orders, fills) delivered them in; a version seen twice is applied once.
    """

    tenant_id: str
    _events: dict[str, dict[int, OrderPayload]] = field(default_factory=dict)

    def add(self, payload: OrderPayload) -> None:
        steps = self._events.setdefault(payload.order_id or payload.order.order_id, {})
        steps.setdefault(payload.order.version, payload)

    def rebuild(self) -> dict[str, ReplayedOrder]:
        rebuilt: dict[str, ReplayedOrder] = {}
        for order_id, steps in self._events.items():
            ordered = [steps[v] for v in sorted(steps)]
            try:
                order = initial_order(ordered[0].order, self.tenant_id)
            except (execution.OrderError, ValueError, ArithmeticError) as exc:
                rebuilt[order_id] = ReplayedOrder(None, f"version {ordered[0].order.version}: {exc}")
                continue
            result = ReplayedOrder(order)
            for payload in ordered:
                assert result.order is not None
                try:
                    result.order, _ = execution.apply(result.order, order_input(payload))
                except (execution.OrderError, ValueError, ArithmeticError) as exc:
                    result.error = f"version {payload.order.version}: {exc}"
                    break
            rebuilt[order_id] = result
        return rebuilt


def _fill_of(payload: execution_events.OrderFillReported) -> portfolio.Fill | None:
    """The fill as portfolio books it, or None when portfolio refuses it too
    (the same checks as its consumer: contract validation, fee currency)."""
    try:
        protovalidate.validate(payload)
    except protovalidate.ValidationError:
        return None
    f = payload.fill
    if not f.execution_id or (f.fee.currency and f.fee.currency != portfolio.BASE_CURRENCY):
        return None
    try:
        return portfolio.Fill(
            symbol=f.symbol,
            side=portfolio.Side(f.side),
            quantity=decimals.from_proto(f.quantity),
            price=decimals.from_proto(f.price),
            fee=decimals.from_proto(f.fee.amount),
        )
    except (ValueError, ArithmeticError):
        return None


@dataclass
class PositionReplay:
    """Collects fills (and the order portfolio booked them in), then rebuilds
    every position with portfolio's accounting.

    Fills of one symbol from different orders travel on different partitions,
    so their order of arrival differs between consumers, and the re-weighted
    average price depends on it (rounding to 12 digits). PositionChanged
    events record the position version each fill produced: fills are applied
    in that order, and fills without one (not booked yet, or the best-effort
    event was lost) afterwards in the order the audit store received them.
    """

    _fills: dict[str, tuple[int, portfolio.Fill]] = field(default_factory=dict)
    _booked: dict[str, int] = field(default_factory=dict)
    events: int = 0

    def add_fill(self, sequence: int, payload: execution_events.OrderFillReported) -> None:
        fill = _fill_of(payload)
        if fill is not None:
            self._fills.setdefault(payload.fill.execution_id, (sequence, fill))

    def add_booking(self, payload: portfolio_events.PositionChanged) -> None:
        if payload.execution_id:
            self._booked.setdefault(payload.execution_id, payload.position.version)

    def rebuild(self) -> dict[str, portfolio.Position]:
        by_symbol: dict[str, list[tuple[tuple[int, int], portfolio.Fill]]] = {}
        for execution_id, (sequence, fill) in self._fills.items():
            version = self._booked.get(execution_id)
            key = (0, version) if version is not None else (1, sequence)
            by_symbol.setdefault(fill.symbol, []).append((key, fill))
        positions: dict[str, portfolio.Position] = {}
        for symbol, fills in by_symbol.items():
            position = portfolio.Position(symbol=symbol)
            for _, fill in sorted(fills, key=lambda item: item[0]):
                position = portfolio.apply_fill(position, fill).position
            positions[symbol] = position
        return positions


# ------------------------------------------------------------------ comparison


def _compare(
    out: list[Difference],
    aggregate_type: str,
    aggregate_id: str,
    fields: Sequence[tuple[str, object, object]],
) -> None:
    for name, replayed, live in fields:
        if replayed != live:
            out.append(
                Difference(
                    aggregate_type,
                    aggregate_id,
                    name,
                    DifferenceKind.VALUE_MISMATCH,
                    _show(replayed),
                    _show(live),
                )
            )


def _show(value: object) -> str:
    if isinstance(value, Decimal) or value is None:
        return text(value)
    return str(value)


def _decimal_or_none(message: pb_message.Message, name: str) -> Decimal | None:
    return decimals.from_proto(getattr(message, name)) if message.HasField(name) else None


def _status_name(value: int) -> str:
    try:
        return execution.OrderStatus(value).name
    except ValueError:
        return f"UNKNOWN({value})"


def compare_orders(
    replayed: Mapping[str, ReplayedOrder], live: Iterable[execution_types.Order]
) -> list[Difference]:
    """Status, filled quantity, average fill price and version of every order, exactly."""
    out: list[Difference] = []
    live_by_id = {o.order_id: o for o in live}
    for order_id in sorted(set(replayed) | set(live_by_id)):
        mine, theirs = replayed.get(order_id), live_by_id.get(order_id)
        live_status = _status_name(theirs.status) if theirs is not None else ""
        if mine is not None and mine.error:
            # The events themselves do not replay: say where, beside any field difference.
            out.append(
                Difference(
                    "order", order_id, "events", DifferenceKind.VALUE_MISMATCH, mine.error, live_status
                )
            )
        if mine is None or mine.order is None:
            if mine is None:
                out.append(
                    Difference("order", order_id, "", DifferenceKind.MISSING_IN_REPLAY, "", live_status)
                )
            continue
        o = mine.order
        if theirs is None:
            out.append(Difference("order", order_id, "", DifferenceKind.MISSING_IN_LIVE, o.status.name))
            continue
        _compare(
            out,
            "order",
            order_id,
            [
                ("status", o.status.name, live_status),
                ("filled_quantity", o.filled_quantity, decimals.from_proto(theirs.filled_quantity)),
                ("average_fill_price", o.average_fill_price, _decimal_or_none(theirs, "average_fill_price")),
                ("version", o.version, theirs.version),
            ],
        )
    return out


def compare_positions(
    replayed: Mapping[str, portfolio.Position], live: Iterable[portfolio_types.Position]
) -> list[Difference]:
    """Quantity, average price, realised PnL and fees of every position, exactly
    at the contract's 12 fractional digits (what portfolio shows)."""
    out: list[Difference] = []
    live_by_symbol = {p.symbol: p for p in live}
    for symbol in sorted(set(replayed) | set(live_by_symbol)):
        mine, theirs = replayed.get(symbol), live_by_symbol.get(symbol)
        if theirs is None:
            assert mine is not None
            out.append(
                Difference(
                    "position",
                    symbol,
                    "",
                    DifferenceKind.MISSING_IN_LIVE,
                    text(portfolio.wire(mine.quantity)),
                )
            )
            continue
        if mine is None:
            out.append(
                Difference(
                    "position",
                    symbol,
                    "",
                    DifferenceKind.MISSING_IN_REPLAY,
                    "",
                    text(decimals.from_proto(theirs.quantity)),
                )
            )
            continue
        average = portfolio.wire(mine.average_price) if mine.average_price is not None else None
        _compare(
            out,
            "position",
            symbol,
            [
                ("quantity", portfolio.wire(mine.quantity), decimals.from_proto(theirs.quantity)),
                ("average_price", average, _decimal_or_none(theirs, "average_price")),
                (
                    "realized_pnl",
                    portfolio.wire(mine.realized_pnl),
                    decimals.from_proto(theirs.realized_pnl.amount),
                ),
                ("fees_paid", portfolio.wire(mine.fees_paid), decimals.from_proto(theirs.fees_paid.amount)),
            ],
        )
    return out
