"""Pure logic of the analytics service: events to rows, bar windows, PnL
sampling and trade statistics (model and strategy performance: performance.py).
No I/O here; storage.py runs the SQL, api.py speaks gRPC.

Amounts stay exact (decimal.Decimal, ClickHouse Decimal columns); the only
roundings are the quotients the contract asks for (VWAP, win rate, profit
factor, drawdown ratio, time-weighted exposure), half-even to the contract's
12 fractional digits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final

from google.protobuf import message as pb_message
from google.protobuf.timestamp_pb2 import Timestamp
from trading.analytics.v1 import analytics_service_pb2 as pb
from trading.common.v1 import types_pb2 as common_types
from trading.decision.v1 import decision_service_pb2 as decision_pb
from trading.decision.v1 import events_pb2 as decision_events
from trading.execution.v1 import events_pb2 as execution_events
from trading.marketdata.v1 import events_pb2 as marketdata_events
from trading.portfolio.v1 import events_pb2 as portfolio_events

from runtime.decimals import from_proto

ZERO: Final = Decimal(0)
# The contract's precision: 12 fractional digits.
QUANTUM: Final = Decimal("1e-12")
# Wide enough that sums and products of contract decimals never round.
_EXACT: Final = Context(prec=100, rounding=ROUND_HALF_EVEN)
NS_PER_S: Final = 1_000_000_000

TICK_EVENT: Final = marketdata_events.Tick.DESCRIPTOR.full_name
FILL_EVENT: Final = execution_events.OrderFillReported.DESCRIPTOR.full_name
POSITION_EVENT: Final = portfolio_events.PositionChanged.DESCRIPTOR.full_name
SNAPSHOT_EVENT: Final = portfolio_events.PortfolioSnapshot.DESCRIPTOR.full_name
SIGNAL_EVENT: Final = decision_events.SignalGenerated.DESCRIPTOR.full_name
SUNK_EVENTS: Final = (TICK_EVENT, FILL_EVENT, POSITION_EVENT, SNAPSHOT_EVENT, SIGNAL_EVENT)


class InvalidEventError(ValueError):
    """An event analytics cannot store (dead-lettered, never retried into success)."""


def quantize(value: Decimal) -> Decimal:
    """`value` as the contract carries it: half-even to 12 fractional digits."""
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=_EXACT)


def divide(numerator: Decimal, denominator: Decimal) -> Decimal:
    return quantize(_EXACT.divide(numerator, denominator))


def net(gross: Decimal, fees: Decimal) -> Decimal:
    """gross - fees, exactly."""
    return _EXACT.subtract(gross, fees)


def timestamp_ns(ts: Timestamp) -> int:
    return ts.seconds * NS_PER_S + ts.nanos


# What ClickHouse's DateTime64(9) columns hold (and an Int64 of nanoseconds
# can say): 1900-01-01 to 2262-04-11.
QUERY_NS_MIN = -2_208_988_800 * NS_PER_S
QUERY_NS_MAX = 2**63 - 1


def query_ns(ts: Timestamp) -> int:
    """A request's time bound as nanoseconds a query can take: a Timestamp
    outside DateTime64(9)'s range (year 1 to 9999 are valid Timestamps) is
    cut to it; nothing is stored outside it, so the answer is the same."""
    return min(max(timestamp_ns(ts), QUERY_NS_MIN), QUERY_NS_MAX)


def timestamp_of(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


# ------------------------------------------------------------------------------ intervals


@dataclass(frozen=True, slots=True)
class IntervalPlan:
    """How bars of one interval are read: from which pre-aggregated table
    (1 s, 1 min or 1 h buckets), re-bucketed to `step_s` seconds."""

    step_s: int
    base: str  # "1s" | "1m" | "1h"


INTERVALS: Final[dict[int, IntervalPlan]] = {
    pb.BAR_INTERVAL_ONE_SECOND: IntervalPlan(1, "1s"),
    pb.BAR_INTERVAL_ONE_MINUTE: IntervalPlan(60, "1m"),
    pb.BAR_INTERVAL_FIVE_MINUTES: IntervalPlan(300, "1m"),
    pb.BAR_INTERVAL_FIFTEEN_MINUTES: IntervalPlan(900, "1m"),
    pb.BAR_INTERVAL_ONE_HOUR: IntervalPlan(3600, "1h"),
    pb.BAR_INTERVAL_ONE_DAY: IntervalPlan(86_400, "1h"),
}


def plan_of(interval: int) -> IntervalPlan:
    try:
        return INTERVALS[interval]
    except KeyError:
        raise ValueError(f"unknown bar interval {interval}") from None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def bar_window(start_ns: int, end_ns: int, step_s: int) -> tuple[int, int]:
    """Epoch seconds [lo, hi) of the buckets that make up the bars starting
    within [start, end): bars are aligned to `step_s` in UTC, so the first bar
    starts at start rounded up to the step, and the last one before end."""
    step_ns = step_s * NS_PER_S
    lo = _ceil_div(start_ns, step_ns) * step_s
    hi = _ceil_div(end_ns, step_ns) * step_s
    return lo, max(lo, hi)


# ------------------------------------------------------------------------------ rows


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
            _EXACT.subtract(
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


# ------------------------------------------------------------------------------ bars


@dataclass(frozen=True, slots=True)
class BarRow:
    """One bar as aggregated by ClickHouse (sums exact)."""

    start_s: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    notional: Decimal  # sum of price x size, exact
    tick_count: int


def vwap(notional: Decimal, volume: Decimal) -> Decimal:
    return divide(notional, volume) if volume else ZERO


# ------------------------------------------------------------------------------ PnL series


@dataclass(frozen=True, slots=True)
class PnlSample:
    """The tenant's figures as of one snapshot."""

    at_ns: int
    currency: str
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal


def pnl_series(
    samples: Sequence[PnlSample], start_ns: int, end_ns: int, step_ns: int
) -> list[tuple[int, PnlSample]]:
    """The value at the end of each step [start + k*step, ...) within [start, end):
    the last sample at or before that moment (carried forward), steps before the
    first sample left out. `samples` are ordered by time and may begin before start."""
    out: list[tuple[int, PnlSample]] = []
    index = 0
    current: PnlSample | None = None
    point = start_ns + step_ns
    # The last step ends at `end` at most (a partial last step ends at `end`).
    while point - step_ns < end_ns:
        at = min(point, end_ns)
        while index < len(samples) and samples[index].at_ns <= at:
            current = samples[index]
            index += 1
        if current is not None:
            out.append((at, current))
        point += step_ns
    return out


# ------------------------------------------------------------------------------ trade stats


@dataclass(frozen=True, slots=True)
class ExposurePoint:
    """Gross exposure and equity (or a symbol's PnL) from `at_ns` on."""

    at_ns: int
    exposure: Decimal
    equity: Decimal


@dataclass(frozen=True, slots=True)
class PathStats:
    average_exposure: Decimal
    max_exposure: Decimal
    max_drawdown: Decimal
    max_drawdown_ratio: Decimal | None


def path_stats(points: Sequence[ExposurePoint], start_ns: int, end_ns: int) -> PathStats:
    """Time-weighted average and maximum of gross exposure, and the largest
    fall of equity from a previous peak, over [start, end).

    `points` are ordered by time; the last one at or before `start` (the state
    carried in) counts from `start` on. The period before the first known
    point counts for nothing (the exposure there is unknown, not zero)."""
    carried = [p for p in points if p.at_ns <= start_ns][-1:]
    inside = [p for p in points if start_ns < p.at_ns < end_ns]
    path = [ExposurePoint(start_ns, p.exposure, p.equity) for p in carried] + inside
    weighted = ZERO
    covered = 0
    max_exposure = ZERO
    peak: Decimal | None = None
    max_dd = ZERO
    dd_ratio: Decimal | None = None
    for i, point in enumerate(path):
        until = path[i + 1].at_ns if i + 1 < len(path) else end_ns
        weighted = _EXACT.add(weighted, _EXACT.multiply(point.exposure, Decimal(until - point.at_ns)))
        covered += until - point.at_ns
        max_exposure = max(max_exposure, point.exposure)
        if peak is None or point.equity > peak:
            peak = point.equity
        fall = _EXACT.subtract(peak, point.equity)
        if fall > max_dd:
            max_dd = fall
            dd_ratio = divide(fall, peak) if peak > 0 else None
    average = divide(weighted, Decimal(covered)) if covered else ZERO
    if max_dd == 0:
        dd_ratio = ZERO if peak is not None and peak > 0 else None
    return PathStats(average, max_exposure, max_dd, dd_ratio)


def symbol_points(
    rows: Iterable[tuple[int, Sequence[str], Sequence[Decimal], Sequence[Decimal], Sequence[Decimal]]],
    symbol: str,
) -> list[ExposurePoint]:
    """One symbol's exposure (|market value|) and PnL path from portfolio
    snapshots (at, symbols, market values, realised - fees, unrealised). A
    snapshot without the symbol means its position was flat: no exposure, no
    unrealised PnL, and the realised part as it last was (the snapshot lists
    open positions only, so a close between two snapshots is not seen)."""
    out: list[ExposurePoint] = []
    locked = ZERO
    for at_ns, symbols, values, realized_net, unrealized in rows:
        try:
            i = list(symbols).index(symbol)
        except ValueError:
            out.append(ExposurePoint(at_ns, ZERO, locked))
            continue
        locked = realized_net[i]
        out.append(ExposurePoint(at_ns, abs(values[i]), _EXACT.add(realized_net[i], unrealized[i])))
    return out


def win_rate(winning: int, trades: int) -> Decimal | None:
    return divide(Decimal(winning), Decimal(trades)) if trades else None


def profit_factor(gross_profit: Decimal, gross_loss: Decimal) -> Decimal | None:
    """Gross profit over the absolute gross loss; None without a losing trade."""
    return divide(gross_profit, abs(gross_loss)) if gross_loss else None
