"""The features of every symbol, tick by tick: :class:`FeatureEngine` keeps
one :class:`SymbolFeatures` per symbol (the rules: the package docstring)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from services.features.domain.indicators import AVERAGES, Ema, RollingStd, RollingVwap, WilderRsi
from services.features.domain.ticks import Tick, is_valid_tick
from services.features.domain.vectors import FeatureConfig, FeatureVector

# tick_count is "capped" by the contract; uint64 in practice never reaches it.
TICK_COUNT_CAP: Final = 2**63 - 1
_TWO: Final = Decimal(2)
_BPS: Final = 10_000.0


@dataclass(slots=True)
class IgnoredTicks:
    """Ticks not applied, by reason."""

    out_of_order: int = 0
    invalid: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """A tick half applied (:meth:`SymbolFeatures.begin`): its mid, and the
    mid's log return and change since the previous tick (change None on a
    symbol's first tick: nothing for the float indicators)."""

    tick: Tick
    mid: Decimal
    log_return: float
    change: float | None


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
        step = self.begin(tick)
        if step is None:
            return None
        if step.change is not None:
            self._volatility.update(step.log_return)
            self._rsi.update(step.change)
        return self.finish(step, self._rsi.value, self._volatility.value)

    def begin(self, tick: Tick) -> Step | None:
        """The exact (Decimal) part of applying a tick; the float indicators
        (RSI, volatility) are then fed ``step.change`` and ``step.log_return``
        when the change is not None, here by :meth:`update` or, across symbols,
        by :class:`~services.features.domain.batch.BatchFeatureEngine`, and
        :meth:`finish` makes the vector. None: ignored (counted)."""
        if tick.symbol != self.symbol:
            raise ValueError(f"tick for {tick.symbol} given to the features of {self.symbol}")
        if self._last_sequence is not None and tick.sequence <= self._last_sequence:
            self.ignored.out_of_order += 1
            return None
        if not is_valid_tick(tick):
            self.ignored.invalid += 1
            return None
        self._last_sequence = tick.sequence
        self.tick_count = min(self.tick_count + 1, TICK_COUNT_CAP)

        mid = AVERAGES.divide(AVERAGES.add(tick.bid, tick.ask), _TWO)
        mids = self._mids
        log_return = 0.0
        change: float | None = None
        if mids:
            prev = mids[-1]
            difference = AVERAGES.subtract(mid, prev)
            # log1p of the (34-digit) relative change keeps tiny returns precise.
            log_return = math.log1p(float(AVERAGES.divide(difference, prev)))
            change = float(difference)
        mids.append(mid)
        return Step(tick, mid, log_return, change)

    def finish(self, step: Step, rsi: float, volatility: float) -> FeatureVector:
        """The vector of a tick :meth:`begin` applied, with the float indicators' values after it."""
        tick, mid = step.tick, step.mid
        spread = AVERAGES.subtract(tick.ask, tick.bid)
        oldest = self._mids[0]
        window_return = math.log1p(float(AVERAGES.divide(AVERAGES.subtract(mid, oldest), oldest)))

        ema_fast = self._ema_fast.update(mid)
        ema_slow = self._ema_slow.update(mid)
        depth = AVERAGES.add(tick.bid_size, tick.ask_size)
        imbalance = (
            float(AVERAGES.divide(AVERAGES.subtract(tick.bid_size, tick.ask_size), depth)) if depth else 0.0
        )

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
            log_return=step.log_return,
            window_return=window_return,
            rsi=rsi,
            volatility=volatility,
            order_book_imbalance=imbalance,
            spread_bps=float(AVERAGES.divide(spread, mid)) * _BPS,
            ema_crossover=float(AVERAGES.divide(ema_fast, ema_slow)) - 1.0,
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

    def update_many(self, ticks: Sequence[Tick]) -> list[FeatureVector | None]:
        """:meth:`update` of each tick, in order (the batch engine's interface)."""
        update = self.update
        return [update(t) for t in ticks]

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
