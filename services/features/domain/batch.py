"""The features of a batch of ticks, the float indicators vectorised across
symbols: :class:`BatchFeatureEngine`.

A batch is applied in rounds: round k takes the k-th tick of every symbol in
the batch, so each symbol's ticks stay in order while the symbols of a round
are independent. Per tick the exact (Decimal) part is
:meth:`SymbolFeatures.begin`/``finish``, as in the scalar engine; RSI and
volatility, whose state is one column per symbol
(:class:`~services.features.domain.indicators.RsiColumns`,
:class:`~services.features.domain.indicators.RollingStdColumns`), are
updated for a whole round with numpy. The result is
``[FeatureEngine.update(t) for t in ticks]``, value for value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.features.domain.engine import Step, SymbolFeatures
from services.features.domain.indicators import RollingStdColumns, RsiColumns
from services.features.domain.ticks import Tick
from services.features.domain.vectors import FeatureConfig, FeatureVector


class BatchFeatureEngine:
    """Like :class:`~services.features.domain.engine.FeatureEngine` (same
    ``symbols`` filter, ``latest``, ``state``), fed batches: :meth:`update_many`."""

    __slots__ = ("_columns", "_config", "_rsi", "_state", "_symbols", "_volatility", "unknown_symbols")

    def __init__(self, config: FeatureConfig | None = None, symbols: frozenset[str] | None = None) -> None:
        self._config = config or FeatureConfig()
        self._symbols = symbols
        self._state: dict[str, SymbolFeatures] = {}
        self._columns: dict[str, int] = {}
        self._rsi = RsiColumns(self._config.rsi_period)
        self._volatility = RollingStdColumns(self._config.volatility_window)
        self.unknown_symbols = 0

    @property
    def config(self) -> FeatureConfig:
        return self._config

    def update(self, tick: Tick) -> FeatureVector | None:
        """One tick (a batch of one)."""
        return self.update_many([tick])[0]

    def update_many(self, ticks: Sequence[Tick]) -> list[FeatureVector | None]:
        """The vector of each tick, in order; None where it was ignored
        (unknown symbol, out of order, invalid: counted as by FeatureEngine)."""
        out: list[FeatureVector | None] = [None] * len(ticks)
        # Each symbol's positions in the batch, in order; a round is the k-th of each.
        queues: dict[str, list[int]] = {}
        for i, tick in enumerate(ticks):
            queue = queues.get(tick.symbol)
            if queue is None:
                if self._symbol(tick.symbol) is None:
                    continue
                queue = queues[tick.symbol] = []
            queue.append(i)
        rounds = max((len(q) for q in queues.values()), default=0)
        for k in range(rounds):
            steps: list[tuple[int, SymbolFeatures, Step]] = []
            moved: list[int] = []  # positions in steps whose float indicators move
            for symbol, queue in queues.items():
                if k < len(queue):
                    state = self._state[symbol]
                    step = state.begin(ticks[queue[k]])
                    if step is not None:
                        if step.change is not None:
                            moved.append(len(steps))
                        steps.append((queue[k], state, step))
            if not steps:
                continue
            columns = np.fromiter(
                (self._columns[s.symbol] for _, s, _ in steps), dtype=np.intp, count=len(steps)
            )
            if moved:
                cols = columns[moved]
                self._volatility.update(cols, np.array([steps[j][2].log_return for j in moved]))
                self._rsi.update(cols, np.array([steps[j][2].change for j in moved]))
            rsi = self._rsi.values(columns).tolist()
            volatility = self._volatility.values(columns).tolist()
            for j, (i, state, step) in enumerate(steps):
                out[i] = state.finish(step, rsi[j], volatility[j])
        return out

    def _symbol(self, symbol: str) -> SymbolFeatures | None:
        state = self._state.get(symbol)
        if state is None:
            if self._symbols is not None and symbol not in self._symbols:
                self.unknown_symbols += 1
                return None
            state = self._state[symbol] = SymbolFeatures(symbol, self._config)
            self._columns[symbol] = self._rsi.add_column()
            self._volatility.add_column()
        return state

    def latest(self, symbol: str) -> FeatureVector | None:
        """The last vector of a symbol; None before its first tick."""
        state = self._state.get(symbol)
        return state.latest if state is not None else None

    def state(self, symbol: str) -> SymbolFeatures | None:
        """The state of a symbol (its ignored-tick counters; its float
        indicators live in this engine's columns); None if never seen."""
        return self._state.get(symbol)

    def symbols(self) -> frozenset[str]:
        """Symbols with state."""
        return frozenset(self._state)
