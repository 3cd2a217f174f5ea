"""Analytics' pure logic (no I/O), by concern:

- :mod:`.units`: exact amounts (the contract's 12 fractional digits) and
  nanosecond times;
- :mod:`.events`: the events analytics sinks, as the rows it stores (and
  which it refuses);
- :mod:`.bars`: bar intervals, their tables and windows;
- :mod:`.pnl`: PnL series, exposure and drawdown of a path, trade statistics;
- :mod:`.performance`: model and strategy performance (prediction quality,
  a strategy's PnL from its fills), with its definitions.

The names of the first four are re-exported here (``from
services.analytics import domain; domain.plan_of(...)``);
:mod:`.performance` is imported by name.
"""

from __future__ import annotations

from services.analytics.domain.bars import (
    INTERVALS,
    BarRow,
    IntervalPlan,
    bar_window,
    plan_of,
    vwap,
)
from services.analytics.domain.events import (
    FILL_EVENT,
    POSITION_EVENT,
    SIGNAL_EVENT,
    SNAPSHOT_EVENT,
    SUNK_EVENTS,
    TICK_EVENT,
    FillRow,
    InvalidEventError,
    PositionChangeRow,
    Row,
    SignalRow,
    SnapshotRow,
    TickRow,
    fill_row,
    position_row,
    row_of,
    signal_row,
    snapshot_row,
    tick_row,
)
from services.analytics.domain.pnl import (
    ExposurePoint,
    PathStats,
    PnlSample,
    path_stats,
    pnl_series,
    profit_factor,
    symbol_points,
    win_rate,
)
from services.analytics.domain.units import (
    EXACT,
    NS_PER_S,
    QUANTUM,
    QUERY_NS_MAX,
    QUERY_NS_MIN,
    ZERO,
    divide,
    net,
    quantize,
    query_ns,
    timestamp_ns,
    timestamp_of,
)

__all__ = [
    "EXACT",
    "FILL_EVENT",
    "INTERVALS",
    "NS_PER_S",
    "POSITION_EVENT",
    "QUANTUM",
    "QUERY_NS_MAX",
    "QUERY_NS_MIN",
    "SIGNAL_EVENT",
    "SNAPSHOT_EVENT",
    "SUNK_EVENTS",
    "TICK_EVENT",
    "ZERO",
    "BarRow",
    "ExposurePoint",
    "FillRow",
    "IntervalPlan",
    "InvalidEventError",
    "PathStats",
    "PnlSample",
    "PositionChangeRow",
    "Row",
    "SignalRow",
    "SnapshotRow",
    "TickRow",
    "bar_window",
    "divide",
    "fill_row",
    "net",
    "path_stats",
    "plan_of",
    "pnl_series",
    "position_row",
    "profit_factor",
    "quantize",
    "query_ns",
    "row_of",
    "signal_row",
    "snapshot_row",
    "symbol_points",
    "tick_row",
    "timestamp_ns",
    "timestamp_of",
    "vwap",
    "win_rate",
]
