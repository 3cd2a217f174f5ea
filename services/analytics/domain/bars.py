"""Bars: which pre-aggregated table an interval is read from, the buckets of
a requested window, and a bar's figures (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from trading.analytics.v1 import analytics_service_pb2 as pb

from services.analytics.domain.units import NS_PER_S, ZERO, divide


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
