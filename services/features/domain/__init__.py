"""Pure feature computation of the features service: no I/O, no clock.
Modules: :mod:`.ticks`, :mod:`.indicators`, :mod:`.vectors`, :mod:`.engine`;
their public names are re-exported here.

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

Across symbols: :mod:`.batch`'s :class:`BatchFeatureEngine` applies a batch
of ticks with RSI and volatility updated for many symbols at once (numpy
columns, :class:`RsiColumns`, :class:`RollingStdColumns`), with the same
results as :class:`FeatureEngine` tick by tick.
"""

from services.features.domain.batch import BatchFeatureEngine
from services.features.domain.engine import TICK_COUNT_CAP, FeatureEngine, IgnoredTicks, SymbolFeatures
from services.features.domain.indicators import (
    AVERAGES,
    Ema,
    RollingStd,
    RollingStdColumns,
    RollingVwap,
    RsiColumns,
    WilderRsi,
)
from services.features.domain.ticks import Tick, is_valid_tick, tick_from_quote
from services.features.domain.vectors import FeatureConfig, FeatureVector

__all__ = [
    "AVERAGES",
    "TICK_COUNT_CAP",
    "BatchFeatureEngine",
    "Ema",
    "FeatureConfig",
    "FeatureEngine",
    "FeatureVector",
    "IgnoredTicks",
    "RollingStd",
    "RollingStdColumns",
    "RollingVwap",
    "RsiColumns",
    "SymbolFeatures",
    "Tick",
    "WilderRsi",
    "is_valid_tick",
    "tick_from_quote",
]
