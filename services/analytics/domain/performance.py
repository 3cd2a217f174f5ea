"""Pure evaluation logic of model and strategy performance: prediction
quality (hit rate, calibration, Brier score) from aggregated cells, and a
strategy's PnL from its fills. No I/O; adapters/clickhouse.py runs the SQL that makes the
cells (the same definitions, stated once here), api.py and evaluator.py use
the results.

Definitions:

- A **prediction** is a probability ``p`` that the symbol's price rises:
  ``(score + 1) / 2`` of a model's score (decision's scores are
  ``2 * P(up) - 1``), or of a strategy's ensemble strength (the weighted mean
  of its models' scores, hence the weighted mean of their probabilities).
- Its **outcome** over a horizon of N ticks: the reference price is the price
  of the last tick of the symbol at or before the signal's feature time (the
  tick the feature vector was computed from); the future price is the price
  of the N-th tick of the symbol after that one. A tick's price is its mid,
  ``(bid + ask) / 2``, or its last trade price when it has no two-sided
  quote. UP when the future price is higher, DOWN when lower, TIE when equal
  (left out of every score, as training drops ties), UNRESOLVED when the N-th
  tick is not stored (yet) or no tick preceded the signal.
- A **call**: a model calls UP when ``p >= 0.5`` and DOWN otherwise (the
  hold-out ``accuracy`` of training uses the same cut, so the two compare);
  a strategy calls UP on BUY, DOWN on SELL, nothing on HOLD.
- **Hit rate** = hits / directional predictions (scored ones with a call).
- **Brier score** = mean of ``(p - y)^2`` over scored predictions (y = 1 for
  UP, 0 for DOWN). **Base rate** = share of UP among them.
- **Calibration**: ten buckets of ``p`` of width 0.1 (``[0, 0.1)`` ...
  ``[0.9, 1]``); per bucket the mean ``p`` and the realised share of UP.

SQL aggregates predictions into :class:`Cell` (key, bucket, call, outcome:
count, sum of p, sum of p squared); every figure above follows exactly from
those sums, so tens of thousands of predictions never leave ClickHouse.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Generic, TypeVar

from domain.numbers import EXACT
from domain.positions import Side, after_fill
from services.analytics.domain.units import ZERO, divide, quantize

K = TypeVar("K")

# The decision models' training label horizon (TrainingSettings.horizon_ticks
# default; a unit test keeps the two equal).
DEFAULT_HORIZON_TICKS: Final = 20
BUCKETS: Final = 10
# trading.decision.v1.ModelOutcome OK: only answered models made a prediction.
MODEL_OUTCOME_OK: Final = 1


class Outcome(enum.IntEnum):
    """What the price did over the horizon (the numbers SQL computes)."""

    UNRESOLVED = 0
    DOWN = 1
    TIE = 2
    UP = 3


class Call(enum.IntEnum):
    """What a prediction said (the numbers SQL computes)."""

    NONE = 0
    UP = 1
    DOWN = 2


def probability(score: float) -> float:
    """P(up) of a signed score in [-1, 1]."""
    return (score + 1.0) / 2.0


def bucket_of(p: float) -> int:
    """Calibration bucket of a probability: 0 for [0, 0.1) ... 9 for [0.9, 1]."""
    return min(max(math.floor(p * BUCKETS), 0), BUCKETS - 1)


def model_call(p: float) -> Call:
    return Call.UP if p >= 0.5 else Call.DOWN


def outcome_of(reference: Decimal | None, future: Decimal | None) -> Outcome:
    """The outcome of a prediction from the reference and the future price
    (None when that tick is not known)."""
    if reference is None or future is None:
        return Outcome.UNRESOLVED
    if future > reference:
        return Outcome.UP
    if future < reference:
        return Outcome.DOWN
    return Outcome.TIE


@dataclass(frozen=True, slots=True)
class Cell(Generic[K]):
    """The predictions of one key (a model version, a strategy) that share a
    bucket, a call and an outcome: how many, and the sums of p and p^2."""

    key: K
    bucket: int
    call: Call
    outcome: Outcome
    count: int
    sum_p: float
    sum_p2: float


@dataclass(frozen=True, slots=True)
class Prediction(Generic[K]):
    """One prediction with its outcome (what a cell aggregates)."""

    key: K
    p: float
    call: Call
    outcome: Outcome


def cells_of(predictions: Iterable[Prediction[K]]) -> list[Cell[K]]:
    """The cells of single predictions: what the SQL aggregation makes."""
    acc: dict[tuple[K, int, Call, Outcome], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for pr in predictions:
        sums = acc[(pr.key, bucket_of(pr.p), pr.call, pr.outcome)]
        sums[0] += 1
        sums[1] += pr.p
        sums[2] += pr.p * pr.p
    return [Cell(k, b, c, o, int(s[0]), s[1], s[2]) for (k, b, c, o), s in acc.items()]


@dataclass(frozen=True, slots=True)
class CalibrationBucket:
    index: int
    count: int
    mean_predicted: Decimal
    realized_frequency: Decimal

    @property
    def lower(self) -> Decimal:
        return Decimal(self.index) / BUCKETS

    @property
    def upper(self) -> Decimal:
        return Decimal(self.index + 1) / BUCKETS


@dataclass(frozen=True, slots=True)
class Quality:
    """How a set of predictions fared (see the module docstring)."""

    prediction_count: int = 0
    scored_count: int = 0
    tie_count: int = 0
    unresolved_count: int = 0
    directional_count: int = 0
    hit_count: int = 0
    hit_rate: Decimal | None = None
    brier_score: Decimal | None = None
    base_rate: Decimal | None = None
    calibration: tuple[CalibrationBucket, ...] = field(default_factory=tuple)


def _from_float(value: float) -> Decimal:
    """A float statistic as a contract decimal (12 fractional digits)."""
    return quantize(Decimal(value))


def _hit(call: Call, outcome: Outcome) -> bool:
    return (call is Call.UP and outcome is Outcome.UP) or (call is Call.DOWN and outcome is Outcome.DOWN)


def quality(cells: Iterable[Cell[K]]) -> Quality:
    """The figures of the cells of one key."""
    total = scored = ties = unresolved = directional = hits = ups = 0
    squared_error = 0.0
    per_bucket: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # n, sum p, ups
    for c in cells:
        total += c.count
        if c.outcome is Outcome.TIE:
            ties += c.count
            continue
        if c.outcome is Outcome.UNRESOLVED:
            unresolved += c.count
            continue
        scored += c.count
        up = c.outcome is Outcome.UP
        # sum (p - y)^2 = sum p^2 - 2 y sum p + y n, y being 1 or 0 in a cell.
        squared_error += c.sum_p2 - 2.0 * c.sum_p + c.count if up else c.sum_p2
        if up:
            ups += c.count
        if c.call is not Call.NONE:
            directional += c.count
            hits += c.count if _hit(c.call, c.outcome) else 0
        sums = per_bucket[c.bucket]
        sums[0] += c.count
        sums[1] += c.sum_p
        sums[2] += c.count if up else 0
    calibration = tuple(
        CalibrationBucket(
            b,
            int(per_bucket[b][0]),
            _from_float(per_bucket[b][1] / per_bucket[b][0]),
            divide(Decimal(int(per_bucket[b][2])), Decimal(int(per_bucket[b][0]))),
        )
        for b in sorted(per_bucket)
    )
    return Quality(
        prediction_count=total,
        scored_count=scored,
        tie_count=ties,
        unresolved_count=unresolved,
        directional_count=directional,
        hit_count=hits,
        hit_rate=divide(Decimal(hits), Decimal(directional)) if directional else None,
        # Float sums can end a hair below zero for perfect predictions.
        brier_score=_from_float(max(squared_error, 0.0) / scored) if scored else None,
        base_rate=divide(Decimal(ups), Decimal(scored)) if scored else None,
        calibration=calibration,
    )


def qualities(cells: Iterable[Cell[K]]) -> dict[K, Quality]:
    """quality() of each key's cells."""
    by_key: dict[K, list[Cell[K]]] = defaultdict(list)
    for c in cells:
        by_key[c.key].append(c)
    return {key: quality(group) for key, group in by_key.items()}


# ------------------------------------------------------------------------------ strategy PnL


@dataclass(frozen=True, slots=True)
class StrategyFill:
    """One fill of a strategy's order, as stored."""

    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    currency: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class StrategyPnl:
    fill_count: int
    turnover: Decimal
    realized_pnl: Decimal
    fees: Decimal
    net_realized_pnl: Decimal
    unrealized_pnl: Decimal
    max_drawdown: Decimal
    currency: str


def max_drawdown(path: Iterable[Decimal]) -> Decimal:
    """Largest fall of a cumulative series from a previous peak; the series
    starts at 0 (before its first value), so a first loss is a drawdown."""
    peak = ZERO
    worst = ZERO
    for value in path:
        peak = max(peak, value)
        worst = max(worst, EXACT.subtract(peak, value))
    return worst


def strategy_pnl(
    opening: Mapping[str, Decimal],
    fills: Sequence[StrategyFill],
    start_marks: Mapping[str, Decimal],
    end_marks: Mapping[str, Decimal],
) -> StrategyPnl:
    """The PnL of one strategy's fills within a range, booked on positions of
    its own per symbol with average entry prices (domain.positions, as
    portfolio books them).

    `opening` is the quantity per symbol the strategy held at the start (its
    earlier fills, summed); it enters at the start mark (the price before the
    start), or, without one, at the price of its first fill of the symbol in
    the range, or at the end mark (then it makes no PnL). `fills` are in
    execution order. Open positions at the end are marked to `end_marks`,
    or, without one, to the last price seen for the symbol (then they count
    no unrealised PnL beyond it)."""
    first_price: dict[str, Decimal] = {}
    for f in fills:
        first_price.setdefault(f.symbol, f.price)
    book: dict[str, tuple[Decimal, Decimal | None]] = {}
    last_price: dict[str, Decimal] = {}
    for symbol, quantity in opening.items():
        basis = start_marks.get(symbol, first_price.get(symbol, end_marks.get(symbol)))
        if quantity == 0 or basis is None:
            continue
        book[symbol] = (quantity, basis)
        last_price[symbol] = basis
    turnover = realized = fees = ZERO
    path: list[Decimal] = []
    currency = ""
    for f in fills:
        quantity, average = book.get(f.symbol, (ZERO, None))
        change = after_fill(quantity, average, f.side, f.quantity, f.price)
        book[f.symbol] = (change.quantity, change.average_price)
        last_price[f.symbol] = f.price
        turnover = EXACT.add(turnover, EXACT.multiply(f.price, f.quantity))
        realized = EXACT.add(realized, change.realized)
        fees = EXACT.add(fees, f.fee)
        path.append(EXACT.subtract(realized, fees))
        currency = currency or f.currency
    unrealized = ZERO
    for symbol, (quantity, average) in book.items():
        mark = end_marks.get(symbol, last_price.get(symbol))
        if quantity == 0 or average is None or mark is None:
            continue
        # quantity x (mark - average): a gain for a long when the price rose,
        # for a short (negative quantity) when it fell.
        unrealized = EXACT.add(unrealized, EXACT.multiply(quantity, EXACT.subtract(mark, average)))
    return StrategyPnl(
        fill_count=len(fills),
        turnover=turnover,
        realized_pnl=realized,
        fees=fees,
        net_realized_pnl=EXACT.subtract(realized, fees),
        unrealized_pnl=unrealized,
        max_drawdown=max_drawdown(path),
        currency=currency,
    )
