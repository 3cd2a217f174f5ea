"""Pure feature computation of the features service: no I/O, no clock.

Every indicator keeps a constant amount of state and does a constant amount
of work per tick (no rescans of history), so a symbol costs the same after a
million ticks as after ten.

Number types follow the contract (trading.features.v1.FeatureVector): prices
and price averages (mid, spread, VWAP, EMAs) are :class:`decimal.Decimal`;
dimensionless statistics (returns, RSI, volatility, imbalance, spread in bps,
EMA crossover) are ``float``.

Choices, stated once:

- EMAs are seeded with the first mid (``ema = mid``) and then follow
  ``ema += alpha * (mid - ema)`` with ``alpha = 2 / (period + 1)``.
- RSI uses Wilder's smoothing: the first ``period`` price changes are
  averaged plainly, later ones as ``avg = (avg * (period - 1) + x) / period``.
  Until ``period`` changes are seen the RSI is from the plain averages so far
  (the vector is not warmed up then).
- Volatility is the sample standard deviation (ddof=1) of the last
  ``volatility_window`` tick log returns of the mid. It keeps a ring buffer of
  the returns and a running mean and sum of squared deviations (Welford's
  update, with the exact inverse when a return leaves the window). Welford
  avoids the cancellation of running sums of x and x^2 (catastrophic when
  the variance is tiny next to the mean); the rounding drift that add/remove
  updates still accumulate is wiped by recomputing mean and M2 from the
  buffer every ``volatility_window`` ticks: O(window) every ``window`` ticks,
  amortised O(1), and the error stays bounded however long the feed runs.
- VWAP is over a rolling window of the last ``vwap_window`` ticks (not a
  session): each tick contributes its last trade (``last * last_size``; a tick
  with ``last_size`` 0 carries no trade). The feed must put in ``last_size``
  the volume traded with this tick, or a repeated last trade is counted again.
  The sums are exact Decimals (an arithmetic context that traps rounding), so
  adding and removing never drifts; it is unset while the window holds no
  volume.
- The window return is ``ln(mid_now / mid_window_ago)`` over the same
  window as the volatility (fewer ticks while the window fills).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from typing import Final, NamedTuple

from google.protobuf import timestamp_pb2
from trading.common.v1 import market_pb2
from trading.features.v1 import events_pb2, features_service_pb2
from trading.marketdata.v1 import events_pb2 as marketdata_events_pb2

from runtime.decimals import from_proto as decimal_from_proto
from runtime.decimals import to_proto as decimal_to_proto

# The contract's Decimal allows at most 12 fractional digits.
WIRE_QUANTUM: Final = Decimal("1e-12")
# tick_count is "capped" by the contract; uint64 in practice never reaches it.
TICK_COUNT_CAP: Final = 2**63 - 1

# Averages (EMA, VWAP division, mid): ample precision, rounding half-even.
_CTX: Final = Context(prec=34, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])
# Running sums that must never round (VWAP numerator and denominator).
_EXACT: Final = Context(prec=100, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
_ZERO: Final = Decimal(0)
_TWO: Final = Decimal(2)
_BPS: Final = 10_000.0


@dataclass(frozen=True, slots=True)
class Tick:
    """One normalised market data update of a symbol.

    ``last``/``last_size`` are the trade that came with this tick (size 0: no
    trade); ``ts`` is timezone-aware; ``sequence`` strictly increases per symbol.
    """

    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    last: Decimal
    last_size: Decimal
    ts: datetime
    sequence: int


def tick_from_quote(msg: market_pb2.Quote | marketdata_events_pb2.Tick) -> Tick:
    """The tick carried by the contract's Quote or Tick event (the two share
    their fields), as published by marketdata."""
    return Tick(
        symbol=msg.symbol,
        bid=decimal_from_proto(msg.bid_price),
        ask=decimal_from_proto(msg.ask_price),
        bid_size=decimal_from_proto(msg.bid_size),
        ask_size=decimal_from_proto(msg.ask_size),
        last=decimal_from_proto(msg.last_price),
        last_size=decimal_from_proto(msg.last_size),
        ts=msg.exchange_time.ToDatetime(tzinfo=UTC),
        sequence=msg.sequence,
    )


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Window lengths and smoothing; together they are the feature set version."""

    ema_fast: int = 12
    ema_slow: int = 26
    rsi_period: int = 14
    volatility_window: int = 20
    vwap_window: int = 100

    def __post_init__(self) -> None:
        if min(self.ema_fast, self.ema_slow, self.rsi_period, self.vwap_window) < 1:
            raise ValueError("periods and windows must be at least 1")
        if self.volatility_window < 2:
            raise ValueError("volatility_window must be at least 2 (a sample deviation)")
        if self.ema_fast >= self.ema_slow:
            raise ValueError("ema_fast must be shorter than ema_slow")

    @property
    def version(self) -> str:
        """The feature_set_version: definitions (v1) plus every parameter."""
        return (
            f"v1:ema{self.ema_fast}-{self.ema_slow}:rsi{self.rsi_period}"
            f":vol{self.volatility_window}:vwap{self.vwap_window}"
        )

    @property
    def warm_up_ticks(self) -> int:
        """Ticks after which every window is full and every average seeded."""
        return max(self.ema_slow, self.rsi_period + 1, self.volatility_window + 1, self.vwap_window)


class FeatureVector(NamedTuple):
    """The features of one symbol after one tick.

    A NamedTuple rather than a frozen dataclass: as immutable, and built
    several times faster, which counts once per tick.
    """

    symbol: str
    as_of: datetime
    tick_sequence: int
    feature_set_version: str
    tick_count: int
    warmed_up: bool
    mid_price: Decimal
    spread: Decimal
    vwap: Decimal | None
    ema_fast: Decimal
    ema_slow: Decimal
    log_return: float
    window_return: float
    rsi: float
    volatility: float
    order_book_imbalance: float
    spread_bps: float
    ema_crossover: float

    def to_proto(self, computed_at: datetime) -> features_service_pb2.FeatureVector:
        """The contract's FeatureVector; ``computed_at`` is the caller's clock."""
        msg = features_service_pb2.FeatureVector()
        self._fill(msg, computed_at)
        return msg

    def to_event(self, computed_at: datetime) -> events_pb2.FeatureVectorComputed:
        """The FeatureVectorComputed event payload of this vector."""
        event = events_pb2.FeatureVectorComputed(symbol=self.symbol)
        self._fill(event.vector, computed_at)
        return event

    def _fill(self, msg: features_service_pb2.FeatureVector, computed_at: datetime) -> None:
        # Filled in place: building sub-messages and copying them in costs
        # some 30% more on the per-tick path.
        msg.symbol = self.symbol
        _set_timestamp(msg.as_of, self.as_of)
        msg.tick_sequence = self.tick_sequence
        _set_timestamp(msg.computed_at, computed_at)
        msg.feature_set_version = self.feature_set_version
        msg.tick_count = self.tick_count
        msg.warmed_up = self.warmed_up
        msg.mid_price.value = _wire_text(self.mid_price)
        msg.spread.value = _wire_text(self.spread)
        if self.vwap is not None:
            msg.vwap.value = _wire_text(self.vwap)
        msg.ema_fast.value = _wire_text(self.ema_fast)
        msg.ema_slow.value = _wire_text(self.ema_slow)
        msg.log_return = self.log_return
        msg.window_return = self.window_return
        msg.rsi = self.rsi
        msg.volatility = self.volatility
        msg.order_book_imbalance = self.order_book_imbalance
        msg.spread_bps = self.spread_bps
        msg.ema_crossover = self.ema_crossover


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _set_timestamp(ts: timestamp_pb2.Timestamp, value: datetime) -> None:
    # Plain arithmetic: several times faster than Timestamp.FromDatetime.
    delta = value - _EPOCH
    ts.seconds = delta.days * 86_400 + delta.seconds
    ts.nanos = delta.microseconds * 1000


def _wire_text(value: Decimal) -> str:
    """The contract's canonical decimal string, rounded to its 12 fractional digits."""
    return decimal_to_proto(value.quantize(WIRE_QUANTUM, context=_CTX)).value


# ---------------------------------------------------------------- indicators


class Ema:
    """Exponential moving average in Decimal, seeded with the first value."""

    __slots__ = ("_alpha", "value")

    def __init__(self, period: int) -> None:
        self._alpha = _CTX.divide(_TWO, Decimal(period + 1))
        self.value: Decimal | None = None

    def update(self, x: Decimal) -> Decimal:
        if self.value is None:
            self.value = x
        else:
            self.value = _CTX.add(self.value, _CTX.multiply(self._alpha, _CTX.subtract(x, self.value)))
        return self.value


class WilderRsi:
    """Relative strength index with Wilder's smoothing, fed price changes."""

    __slots__ = ("_avg_gain", "_avg_loss", "_count", "_period")

    def __init__(self, period: int) -> None:
        self._period = period
        self._count = 0
        # Plain sums while seeding (count < period), Wilder averages after.
        self._avg_gain = 0.0
        self._avg_loss = 0.0

    @property
    def seeded(self) -> bool:
        return self._count >= self._period

    def update(self, change: float) -> float:
        gain = change if change > 0 else 0.0
        loss = -change if change < 0 else 0.0
        n = self._period
        if self._count < n:
            self._avg_gain += gain
            self._avg_loss += loss
            self._count += 1
            if self._count == n:
                self._avg_gain /= n
                self._avg_loss /= n
        else:
            self._avg_gain = (self._avg_gain * (n - 1) + gain) / n
            self._avg_loss = (self._avg_loss * (n - 1) + loss) / n
        return self.value

    @property
    def value(self) -> float:
        if self._count == 0:
            return 50.0
        # While seeding the sums share one divisor, which cancels in the ratio.
        gain, loss = self._avg_gain, self._avg_loss
        if loss == 0.0:
            return 100.0 if gain > 0.0 else 50.0
        return 100.0 - 100.0 / (1.0 + gain / loss)


class RollingStd:
    """Sample standard deviation over a fixed window (see the module docstring)."""

    __slots__ = ("_buffer", "_m2", "_mean", "_since_resync", "_window")

    def __init__(self, window: int) -> None:
        self._window = window
        self._buffer: deque[float] = deque(maxlen=window)
        self._mean = 0.0
        self._m2 = 0.0
        self._since_resync = 0

    def update(self, x: float) -> float:
        buf = self._buffer
        if len(buf) < self._window:
            buf.append(x)
            n = len(buf)
            delta = x - self._mean
            self._mean += delta / n
            self._m2 += delta * (x - self._mean)
        else:
            old = buf[0]
            buf.append(x)  # evicts old
            old_mean = self._mean
            self._mean = old_mean + (x - old) / self._window
            self._m2 += (x - old) * (x - self._mean + old - old_mean)
            self._since_resync += 1
            if self._since_resync >= self._window:
                self._resync()
        return self.value

    def _resync(self) -> None:
        """Two-pass recompute from the window: bounds the drift of the updates."""
        buf = self._buffer
        mean = math.fsum(buf) / len(buf)
        self._mean = mean
        self._m2 = math.fsum((v - mean) ** 2 for v in buf)
        self._since_resync = 0

    @property
    def full(self) -> bool:
        return len(self._buffer) == self._window

    @property
    def value(self) -> float:
        n = len(self._buffer)
        if n < 2:
            return 0.0
        return math.sqrt(max(self._m2, 0.0) / (n - 1))


class RollingVwap:
    """Volume-weighted average price over the last ``window`` ticks, exact sums."""

    __slots__ = ("_buffer", "_notional", "_volume")

    def __init__(self, window: int) -> None:
        self._buffer: deque[tuple[Decimal, Decimal]] = deque(maxlen=window)
        self._notional = _ZERO
        self._volume = _ZERO

    def update(self, price: Decimal, size: Decimal) -> Decimal | None:
        buf = self._buffer
        if len(buf) == buf.maxlen:
            old_notional, old_volume = buf[0]
            self._notional = _EXACT.subtract(self._notional, old_notional)
            self._volume = _EXACT.subtract(self._volume, old_volume)
        notional = _EXACT.multiply(price, size) if size else _ZERO
        buf.append((notional, size))
        self._notional = _EXACT.add(self._notional, notional)
        self._volume = _EXACT.add(self._volume, size)
        return self.value

    @property
    def value(self) -> Decimal | None:
        if self._volume == 0:
            return None
        return _CTX.divide(self._notional, self._volume)


# ---------------------------------------------------------------- per symbol


@dataclass(slots=True)
class IgnoredTicks:
    """Ticks not applied, by reason."""

    out_of_order: int = 0
    invalid: int = 0


def _valid(tick: Tick) -> bool:
    """A book that is not crossed, positive prices, no negative sizes, no NaN or infinity."""
    bid, ask, bid_size, ask_size = tick.bid, tick.ask, tick.bid_size, tick.ask_size
    last, last_size = tick.last, tick.last_size
    # is_finite first: ordering comparisons with NaN raise.
    if not (
        bid.is_finite()
        and ask.is_finite()
        and bid_size.is_finite()
        and ask_size.is_finite()
        and last.is_finite()
        and last_size.is_finite()
    ):
        return False
    if not (bid > 0 and ask >= bid and bid_size >= 0 and ask_size >= 0 and last_size >= 0):
        return False
    # A trade needs a positive price; without one the last price is not used.
    return last > 0 if last_size > 0 else last >= 0


class SymbolFeatures:
    """Incremental feature state of one symbol: O(1) memory and work per tick."""

    __slots__ = (
        "_config",
        "_ema_fast",
        "_ema_slow",
        "_last_sequence",
        "_mids",
        "_rsi",
        "_version",
        "_volatility",
        "_vwap",
        "_warm_up_ticks",
        "ignored",
        "latest",
        "symbol",
        "tick_count",
    )

    def __init__(self, symbol: str, config: FeatureConfig | None = None) -> None:
        self.symbol = symbol
        self._config = config or FeatureConfig()
        cfg = self._config
        self._ema_fast = Ema(cfg.ema_fast)
        self._ema_slow = Ema(cfg.ema_slow)
        self._rsi = WilderRsi(cfg.rsi_period)
        self._volatility = RollingStd(cfg.volatility_window)
        self._vwap = RollingVwap(cfg.vwap_window)
        # The last window+1 mids: the previous one for the tick return and the
        # oldest one for the window return.
        self._mids: deque[Decimal] = deque(maxlen=cfg.volatility_window + 1)
        self._last_sequence: int | None = None
        self.tick_count = 0
        self.ignored = IgnoredTicks()
        self.latest: FeatureVector | None = None
        # Constant per config; computed once, not per tick.
        self._version = cfg.version
        self._warm_up_ticks = cfg.warm_up_ticks

    @property
    def config(self) -> FeatureConfig:
        return self._config

    def update(self, tick: Tick) -> FeatureVector | None:
        """Apply a tick; None (and counted in ``ignored``) when it is out of order or invalid."""
        if tick.symbol != self.symbol:
            raise ValueError(f"tick for {tick.symbol} given to the features of {self.symbol}")
        if self._last_sequence is not None and tick.sequence <= self._last_sequence:
            self.ignored.out_of_order += 1
            return None
        if not _valid(tick):
            self.ignored.invalid += 1
            return None
        self._last_sequence = tick.sequence
        self.tick_count = min(self.tick_count + 1, TICK_COUNT_CAP)

        mid = _CTX.divide(_CTX.add(tick.bid, tick.ask), _TWO)
        spread = _CTX.subtract(tick.ask, tick.bid)
        mids = self._mids
        log_return = 0.0
        if mids:
            prev = mids[-1]
            change = _CTX.subtract(mid, prev)
            # log1p of the (34-digit) relative change keeps tiny returns precise.
            log_return = math.log1p(float(_CTX.divide(change, prev)))
            self._volatility.update(log_return)
            self._rsi.update(float(change))
        mids.append(mid)
        oldest = mids[0]
        window_return = math.log1p(float(_CTX.divide(_CTX.subtract(mid, oldest), oldest)))

        ema_fast = self._ema_fast.update(mid)
        ema_slow = self._ema_slow.update(mid)
        depth = _CTX.add(tick.bid_size, tick.ask_size)
        imbalance = float(_CTX.divide(_CTX.subtract(tick.bid_size, tick.ask_size), depth)) if depth else 0.0

        vector = FeatureVector(
            symbol=self.symbol,
            as_of=tick.ts,
            tick_sequence=tick.sequence,
            feature_set_version=self._version,
            tick_count=self.tick_count,
            warmed_up=self.tick_count >= self._warm_up_ticks,
            mid_price=mid,
            spread=spread,
            vwap=self._vwap.update(tick.last, tick.last_size),
            ema_fast=ema_fast,
            ema_slow=ema_slow,
            log_return=log_return,
            window_return=window_return,
            rsi=self._rsi.value,
            volatility=self._volatility.value,
            order_book_imbalance=imbalance,
            spread_bps=float(_CTX.divide(spread, mid)) * _BPS,
            ema_crossover=float(_CTX.divide(ema_fast, ema_slow)) - 1.0,
        )
        self.latest = vector
        return vector


class FeatureEngine:
    """One :class:`SymbolFeatures` per symbol, created on the symbol's first tick.

    ``symbols`` limits the engine to known instruments (others are counted in
    ``unknown_symbols`` and ignored); None accepts every symbol.
    """

    __slots__ = ("_config", "_state", "_symbols", "unknown_symbols")

    def __init__(self, config: FeatureConfig | None = None, symbols: frozenset[str] | None = None) -> None:
        self._config = config or FeatureConfig()
        self._symbols = symbols
        self._state: dict[str, SymbolFeatures] = {}
        self.unknown_symbols = 0

    @property
    def config(self) -> FeatureConfig:
        return self._config

    def update(self, tick: Tick) -> FeatureVector | None:
        """Route a tick to its symbol's state; None if ignored."""
        state = self._state.get(tick.symbol)
        if state is None:
            if self._symbols is not None and tick.symbol not in self._symbols:
                self.unknown_symbols += 1
                return None
            state = self._state[tick.symbol] = SymbolFeatures(tick.symbol, self._config)
        return state.update(tick)

    def latest(self, symbol: str) -> FeatureVector | None:
        """The last vector of a symbol; None before its first tick."""
        state = self._state.get(symbol)
        return state.latest if state is not None else None

    def state(self, symbol: str) -> SymbolFeatures | None:
        """The state of a symbol (for its ignored-tick counters); None if never seen."""
        return self._state.get(symbol)

    def symbols(self) -> frozenset[str]:
        """Symbols with state."""
        return frozenset(self._state)
