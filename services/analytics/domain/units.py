"""Amounts and times as analytics keeps them (pure, no I/O).

Amounts stay exact (decimal.Decimal, ClickHouse Decimal columns); the only
roundings are the quotients the contract asks for (VWAP, win rate, profit
factor, drawdown ratio, time-weighted exposure), half-even to the contract's
12 fractional digits. Times are integer nanoseconds since the epoch.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

ZERO: Final = Decimal(0)
# The contract's precision: 12 fractional digits.
QUANTUM: Final = Decimal("1e-12")
# Wide enough that sums and products of contract decimals never round.
EXACT: Final = Context(prec=100, rounding=ROUND_HALF_EVEN)
NS_PER_S: Final = 1_000_000_000


def quantize(value: Decimal) -> Decimal:
    """`value` as the contract carries it: half-even to 12 fractional digits."""
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=EXACT)


def divide(numerator: Decimal, denominator: Decimal) -> Decimal:
    return quantize(EXACT.divide(numerator, denominator))


def net(gross: Decimal, fees: Decimal) -> Decimal:
    """gross - fees, exactly."""
    return EXACT.subtract(gross, fees)


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
