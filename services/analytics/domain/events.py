"""Events to rows: what analytics stores of each event it sinks (ticks,
fills, position changes, portfolio snapshots, signals), and which events it
refuses (pure, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from google.protobuf import message as pb_message
from trading.common.v1 import types_pb2 as common_types
from trading.decision.v1 import decision_service_pb2 as decision_pb
from trading.decision.v1 import events_pb2 as decision_events
from trading.execution.v1 import events_pb2 as execution_events
from trading.marketdata.v1 import events_pb2 as marketdata_events
from trading.portfolio.v1 import events_pb2 as portfolio_events

from runtime.decimals import from_proto
from services.analytics.domain.units import EXACT, ZERO, timestamp_ns

TICK_EVENT: Final = marketdata_events.Tick.DESCRIPTOR.full_name
FILL_EVENT: Final = execution_events.OrderFillReported.DESCRIPTOR.full_name
POSITION_EVENT: Final = portfolio_events.PositionChanged.DESCRIPTOR.full_name
SNAPSHOT_EVENT: Final = portfolio_events.PortfolioSnapshot.DESCRIPTOR.full_name
SIGNAL_EVENT: Final = decision_events.SignalGenerated.DESCRIPTOR.full_name
SUNK_EVENTS: Final = (TICK_EVENT, FILL_EVENT, POSITION_EVENT, SNAPSHOT_EVENT, SIGNAL_EVENT)


class InvalidEventError(ValueError):
    """An event analytics cannot store (dead-lettered, never retried into success)."""


@dataclass(frozen=True, slots=True)
class TickRow:
    event_id: str
    symbol: str
    source: str
    sequence: int
    exchange_time_ns: int
    receive_time_ns: int
    bid_price: Decimal
    bid_size: Decimal
    ask_price: Decimal
    ask_size: Decimal
    # Zero when the tick carried no trade.
    last_price: Decimal
    last_size: Decimal


@dataclass(frozen=True, slots=True)
class FillRow:
    tenant_id: str
    event_id: str
    execution_id: str
    order_id: str
    symbol: str
    side: str  # "BUY" | "SELL"
    price: Decimal
    quantity: Decimal
    fee: Decimal
    currency: str
    executed_at_ns: int
    # The order's strategy; empty for orders placed without one.
    strategy_id: str = ""


@dataclass(frozen=True, slots=True)
class PositionChangeRow:
    tenant_id: str
    event_id: str
    execution_id: str
    order_id: str
    symbol: str
    previous_quantity: Decimal
    quantity: Decimal
    realized_pnl_change: Decimal
    fee: Decimal
    position_version: int
    updated_at_ns: int


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    tenant_id: str
    event_id: str
    as_of_ns: int
    version: int
    currency: str
    cash: Decimal
    equity: Decimal
    market_value: Decimal
    gross_exposure: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    # Open positions: symbol, market value, realised PnL - fees, and
    # unrealised PnL, for per-symbol exposure and drawdown.
    position_symbols: tuple[str, ...]
    position_market_values: tuple[Decimal, ...]
    position_realized_net: tuple[Decimal, ...]
    position_unrealized: tuple[Decimal, ...]


@dataclass(frozen=True, slots=True)
class SignalRow:
    """One SignalGenerated, with its models' scores as parallel tuples."""

    tenant_id: str
    event_id: str
    signal_id: str
    strategy_id: str
    symbol: str
    direction: str  # "BUY" | "SELL" | "HOLD"
    strength: float
    confidence: float
    fallback: bool
    # When the market was as the signal saw it: the feature vector's as_of
    # (the signal's generated_at when the vector time is missing).
    feature_as_of_ns: int
    feature_tick_sequence: int
    generated_at_ns: int
    model_ids: tuple[str, ...]
    model_versions: tuple[str, ...]
    model_outcomes: tuple[int, ...]  # trading.decision.v1.ModelOutcome numbers
    model_scores: tuple[float, ...]
    model_weights: tuple[float, ...]


Row = TickRow | FillRow | PositionChangeRow | SnapshotRow | SignalRow


def _decimal(value: Decimal | str, what: str) -> Decimal:
    try:
        number = Decimal(value)
    except ArithmeticError as exc:
        raise InvalidEventError(f"{what}: not a decimal: {value!r}") from exc
    if not number.is_finite():
        raise InvalidEventError(f"{what}: not a finite decimal: {value!r}")
    return number


def _dec(message: pb_message.Message, what: str) -> Decimal:
    try:
        return _decimal(from_proto(message), what)  # type: ignore[arg-type]
    except ArithmeticError as exc:
        raise InvalidEventError(f"{what}: not a decimal") from exc


def row_of(event_type: str, event_id: str, tenant_id: str, payload: pb_message.Message) -> Row:
    """The row an event is stored as; raises InvalidEventError for events
    the tables cannot take (missing ids, times or tenant)."""
    if not event_id:
        raise InvalidEventError("event without event_id")
    if event_type == TICK_EVENT and isinstance(payload, marketdata_events.Tick):
        return tick_row(event_id, payload)
    if event_type == FILL_EVENT and isinstance(payload, execution_events.OrderFillReported):
        return fill_row(event_id, _tenant(tenant_id), payload)
    if event_type == POSITION_EVENT and isinstance(payload, portfolio_events.PositionChanged):
        return position_row(event_id, _tenant(tenant_id), payload)
    if event_type == SNAPSHOT_EVENT and isinstance(payload, portfolio_events.PortfolioSnapshot):
        return snapshot_row(event_id, _tenant(tenant_id), payload)
    if event_type == SIGNAL_EVENT and isinstance(payload, decision_events.SignalGenerated):
        return signal_row(event_id, _tenant(tenant_id), payload)
    raise InvalidEventError(f"analytics does not store {event_type} ({type(payload).__name__})")


def _tenant(tenant_id: str) -> str:
    if not tenant_id:
        raise InvalidEventError("tenant event without tenant_id")
    return tenant_id


def tick_row(event_id: str, tick: marketdata_events.Tick) -> TickRow:
    if not tick.symbol:
        raise InvalidEventError("tick without symbol")
    if not tick.HasField("exchange_time"):
        raise InvalidEventError("tick without exchange_time")
    last_size = _dec(tick.last_size, "last_size")
    last_price = _dec(tick.last_price, "last_price")
    if last_size < 0 or (last_size > 0 and last_price <= 0):
        raise InvalidEventError(f"tick trade {last_size} @ {last_price} is not a trade")
    exchange_ns = timestamp_ns(tick.exchange_time)
    return TickRow(
        event_id=event_id,
        symbol=tick.symbol,
        source=tick.source,
        sequence=tick.sequence,
        exchange_time_ns=exchange_ns,
        receive_time_ns=timestamp_ns(tick.receive_time) if tick.HasField("receive_time") else exchange_ns,
        bid_price=_dec(tick.bid_price, "bid_price"),
        bid_size=_dec(tick.bid_size, "bid_size"),
        ask_price=_dec(tick.ask_price, "ask_price"),
        ask_size=_dec(tick.ask_size, "ask_size"),
        # A price without a size is a quote-only update: no trade, no bar input.
        last_price=last_price if last_size > 0 else ZERO,
        last_size=last_size,
    )


def fill_row(event_id: str, tenant_id: str, event: execution_events.OrderFillReported) -> FillRow:
    fill = event.fill
    if not fill.execution_id or not fill.symbol:
        raise InvalidEventError("fill without execution_id or symbol")
    if not fill.HasField("executed_at"):
        raise InvalidEventError("fill without executed_at")
    if fill.side not in (common_types.SIDE_BUY, common_types.SIDE_SELL):
        raise InvalidEventError(f"fill with side {fill.side}")
    quantity = _dec(fill.quantity, "quantity")
    price = _dec(fill.price, "price")
    if quantity <= 0 or price <= 0:
        raise InvalidEventError(f"fill {quantity} @ {price} is not positive")
    return FillRow(
        tenant_id=tenant_id,
        event_id=event_id,
        execution_id=fill.execution_id,
        order_id=fill.order_id or event.order_id,
        symbol=fill.symbol,
        side="BUY" if fill.side == common_types.SIDE_BUY else "SELL",
        price=price,
        quantity=quantity,
        fee=_dec(fill.fee.amount, "fee"),
        currency=fill.fee.currency,
        executed_at_ns=timestamp_ns(fill.executed_at),
        strategy_id=event.order.strategy_id,
    )


def position_row(event_id: str, tenant_id: str, event: portfolio_events.PositionChanged) -> PositionChangeRow:
    if not event.execution_id or not event.symbol:
        raise InvalidEventError("position change without execution_id or symbol")
    position = event.position
    return PositionChangeRow(
        tenant_id=tenant_id,
        event_id=event_id,
        execution_id=event.execution_id,
        order_id=event.order_id,
        symbol=event.symbol,
        previous_quantity=_dec(event.previous_quantity, "previous_quantity"),
        quantity=_dec(position.quantity, "position.quantity"),
        realized_pnl_change=_dec(event.realized_pnl_change.amount, "realized_pnl_change"),
        fee=_dec(event.fee.amount, "fee"),
        position_version=position.version,
        updated_at_ns=timestamp_ns(position.updated_at) if position.HasField("updated_at") else 0,
    )


def snapshot_row(event_id: str, tenant_id: str, event: portfolio_events.PortfolioSnapshot) -> SnapshotRow:
    p = event.portfolio
    if not p.HasField("as_of"):
        raise InvalidEventError("portfolio snapshot without as_of")
    symbols: list[str] = []
    values: list[Decimal] = []
    realized_net: list[Decimal] = []
    unrealized: list[Decimal] = []
    for position in p.positions:
        symbols.append(position.symbol)
        values.append(_dec(position.market_value.amount, "position.market_value"))
        realized_net.append(
            EXACT.subtract(
                _dec(position.realized_pnl.amount, "position.realized_pnl"),
                _dec(position.fees_paid.amount, "position.fees_paid"),
            )
        )
        unrealized.append(_dec(position.unrealized_pnl.amount, "position.unrealized_pnl"))
    return SnapshotRow(
        tenant_id=tenant_id,
        event_id=event_id,
        as_of_ns=timestamp_ns(p.as_of),
        version=p.version,
        currency=p.cash.currency or p.equity.currency,
        cash=_dec(p.cash.amount, "cash"),
        equity=_dec(p.equity.amount, "equity"),
        market_value=_dec(p.market_value.amount, "market_value"),
        gross_exposure=_dec(p.gross_exposure.amount, "gross_exposure"),
        realized_pnl=_dec(p.total_realized_pnl.amount, "total_realized_pnl"),
        unrealized_pnl=_dec(p.total_unrealized_pnl.amount, "total_unrealized_pnl"),
        fees=_dec(p.total_fees.amount, "total_fees"),
        position_symbols=tuple(symbols),
        position_market_values=tuple(values),
        position_realized_net=tuple(realized_net),
        position_unrealized=tuple(unrealized),
    )


_DIRECTIONS: Final = {
    decision_pb.SIGNAL_DIRECTION_BUY: "BUY",
    decision_pb.SIGNAL_DIRECTION_SELL: "SELL",
    decision_pb.SIGNAL_DIRECTION_HOLD: "HOLD",
}


def _unit_score(value: float, what: str) -> float:
    """A score in [-1, 1]: anything else cannot be read as 2 * P(up) - 1."""
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise InvalidEventError(f"{what} {value!r} is not within [-1, 1]")
    return value


def signal_row(event_id: str, tenant_id: str, event: decision_events.SignalGenerated) -> SignalRow:
    signal = event.signal
    if not signal.signal_id or not signal.symbol:
        raise InvalidEventError("signal without signal_id or symbol")
    direction = _DIRECTIONS.get(signal.direction)
    if direction is None:
        raise InvalidEventError(f"signal with direction {signal.direction}")
    if signal.HasField("feature_as_of"):
        as_of_ns = timestamp_ns(signal.feature_as_of)
    elif signal.HasField("generated_at"):
        as_of_ns = timestamp_ns(signal.generated_at)
    else:
        raise InvalidEventError("signal without feature_as_of or generated_at")
    scores = signal.model_scores
    return SignalRow(
        tenant_id=tenant_id,
        event_id=event_id,
        signal_id=signal.signal_id,
        strategy_id=signal.strategy_id,
        symbol=signal.symbol,
        direction=direction,
        strength=_unit_score(signal.strength, "strength"),
        confidence=signal.confidence if math.isfinite(signal.confidence) else 0.0,
        fallback=signal.fallback,
        feature_as_of_ns=as_of_ns,
        feature_tick_sequence=signal.feature_tick_sequence,
        generated_at_ns=timestamp_ns(signal.generated_at) if signal.HasField("generated_at") else as_of_ns,
        model_ids=tuple(m.model_id for m in scores),
        model_versions=tuple(m.model_version for m in scores),
        model_outcomes=tuple(int(m.outcome) for m in scores),
        model_scores=tuple(_unit_score(m.score, f"score of {m.model_id}") for m in scores),
        model_weights=tuple(m.weight if math.isfinite(m.weight) else 0.0 for m in scores),
    )
