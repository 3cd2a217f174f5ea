"""The in-memory adapter of analytics' store (services/analytics/ports.py):
the rows in process memory and the ClickHouse adapter's queries as Python
(the same definitions: domain/performance.py), with the same answers;
tests/suites/analytics_ports.py holds both to one contract.

Asyncio-safe: no method awaits while it reads or changes the rows. A store
can be taken down (:meth:`MemoryAnalyticsStore.go_down`): its reads then
raise StoreUnavailableError, as the ClickHouse adapter's do when ClickHouse
does not answer.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import ROUND_DOWN, Decimal
from typing import Any, TypeVar

from domain.positions import Side
from services.analytics import domain
from services.analytics.domain import (
    NS_PER_S,
    QUANTUM,
    BarRow,
    FillRow,
    IntervalPlan,
    PnlSample,
    PositionChangeRow,
    Row,
    SignalRow,
    SnapshotRow,
    TickRow,
)
from services.analytics.domain.performance import (
    MODEL_OUTCOME_OK,
    Call,
    Cell,
    Outcome,
    StrategyFill,
    bucket_of,
    model_call,
    outcome_of,
    probability,
)
from services.analytics.ports import (
    DATETIME_MAX_S,
    FILLS,
    POSITION_CHANGES,
    SIGNALS,
    SNAPSHOTS,
    TICKS,
    SnapshotPoint,
    StoreUnavailableError,
    TradeAggregates,
)
from services.analytics.settings import AnalyticsSettings

K = TypeVar("K")

_BASE_S = {"1s": 1, "1m": 60, "1h": 3600}
_STRATEGY_CALLS = {"BUY": Call.UP, "SELL": Call.DOWN}


def tick_price(t: TickRow) -> Decimal:
    """A tick's price for outcomes and marks: the mid of a two-sided quote
    (to 12 fractional digits, cut as a Decimal(38, 12) division is), else the
    last trade price (0 when neither: such ticks are skipped)."""
    if t.bid_price > 0 and t.ask_price > 0:
        return ((t.bid_price + t.ask_price) / 2).quantize(QUANTUM, rounding=ROUND_DOWN)
    return t.last_price


def _cells(rows: Iterable[tuple[K, float, Call, Outcome]]) -> list[Cell[K]]:
    """Predictions (key, p, call, outcome) aggregated into cells, ordered as the SQL orders them."""
    sums: dict[tuple[K, int, Call, Outcome], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for key, p, call, outcome in rows:
        cell = sums[(key, bucket_of(p), call, outcome)]
        cell[0] += 1
        cell[1] += p
        cell[2] += p * p
    return [
        Cell(key, bucket, call, outcome, int(count), total, squares)
        for (key, bucket, call, outcome), (count, total, squares) in sorted(sums.items())
    ]


class MemoryAnalyticsStore:
    """:class:`services.analytics.ports.AnalyticsStore` in memory."""

    def __init__(self, settings: AnalyticsSettings | None = None) -> None:
        self._settings = settings or AnalyticsSettings()
        self._ticks: dict[str, TickRow] = {}
        self._fills: dict[tuple[str, str], FillRow] = {}
        self._changes: dict[tuple[str, str], PositionChangeRow] = {}
        self._snapshots: dict[tuple[str, str], SnapshotRow] = {}
        self._signals: dict[tuple[str, str], SignalRow] = {}
        self._down: StoreUnavailableError | None = None

    # ------------------------------------------------------------------ availability

    def go_down(self, retry_after_s: float = 1.0) -> None:
        """Every read fails as with ClickHouse down, until :meth:`come_back`."""
        self._down = StoreUnavailableError("the store is down", retry_after_s=retry_after_s)

    def come_back(self) -> None:
        self._down = None

    def _up(self) -> None:
        if self._down is not None:
            raise self._down

    def budget(self, remaining_s: float | None) -> float:
        if remaining_s is None:
            return self._settings.query_timeout_s
        return max(0.01, min(self._settings.query_timeout_s, remaining_s - 0.05))

    async def ping(self) -> bool:
        return self._down is None

    async def close(self) -> None:
        pass

    # ------------------------------------------------------------------ writes

    async def write(self, rows: Sequence[Row]) -> dict[str, int]:
        self._up()
        written = dict.fromkeys((TICKS, FILLS, POSITION_CHANGES, SNAPSHOTS, SIGNALS), 0)
        for row in rows:
            table, stored, key = self._table_of(row)
            if key not in stored:  # the first copy is kept
                stored[key] = row
                written[table] += 1
        return written

    def _table_of(self, row: Row) -> tuple[str, dict[Any, Any], object]:
        """The table a row goes to, its rows there, and the row's id in it."""
        if isinstance(row, TickRow):
            return TICKS, self._ticks, row.event_id
        if isinstance(row, FillRow):
            return FILLS, self._fills, (row.tenant_id, row.execution_id)
        if isinstance(row, PositionChangeRow):
            return POSITION_CHANGES, self._changes, (row.tenant_id, row.execution_id)
        if isinstance(row, SignalRow):
            return SIGNALS, self._signals, (row.tenant_id, row.event_id)
        return SNAPSHOTS, self._snapshots, (row.tenant_id, row.event_id)

    # ------------------------------------------------------------------ queries

    async def bars(
        self, symbol: str, plan: IntervalPlan, lo_s: int, hi_s: int, limit: int, budget_s: float
    ) -> tuple[list[BarRow], bool]:
        self._up()
        lo_s, hi_s = max(lo_s, 0), min(hi_s, DATETIME_MAX_S)
        if hi_s <= lo_s:
            return [], False
        base = _BASE_S[plan.base]
        trades: dict[int, list[TickRow]] = defaultdict(list)
        for t in self._ticks.values():
            if t.symbol != symbol or t.last_size <= 0:
                continue
            bucket = t.exchange_time_ns // NS_PER_S // base * base
            if lo_s <= bucket < hi_s:
                trades[bucket // plan.step_s * plan.step_s].append(t)
        rows = []
        for start in sorted(trades, reverse=True)[: limit + 1]:
            ticks = sorted(trades[start], key=lambda t: (t.exchange_time_ns, t.sequence))
            rows.append(
                BarRow(
                    start,
                    ticks[0].last_price,
                    max(t.last_price for t in ticks),
                    min(t.last_price for t in ticks),
                    ticks[-1].last_price,
                    sum((t.last_size for t in ticks), Decimal(0)),
                    sum((domain.EXACT.multiply(t.last_price, t.last_size) for t in ticks), Decimal(0)),
                    len(ticks),
                )
            )
        return list(reversed(rows[:limit])), len(rows) > limit

    def _tenant_snapshots(self, tenant: str) -> list[SnapshotRow]:
        return sorted(
            (s for (t, _), s in self._snapshots.items() if t == tenant), key=lambda s: (s.as_of_ns, s.version)
        )

    async def pnl_samples(
        self, tenant: str, start_ns: int, end_ns: int, step_ns: int, budget_s: float
    ) -> list[PnlSample]:
        self._up()
        snapshots = self._tenant_snapshots(tenant)
        carried = [s for s in snapshots if s.as_of_ns <= start_ns][-1:]
        last_of_step: dict[int, SnapshotRow] = {}
        for s in snapshots:
            if start_ns < s.as_of_ns < end_ns:
                last_of_step[(s.as_of_ns - start_ns + step_ns - 1) // step_ns] = s  # ordered: the last wins
        return [
            PnlSample(s.as_of_ns, s.currency, s.equity, s.realized_pnl, s.unrealized_pnl, s.fees)
            for s in [*carried, *(last_of_step[k] for k in sorted(last_of_step))]
        ]

    def _fills_in(self, tenant: str, start_ns: int, end_ns: int) -> list[FillRow]:
        return [
            f for (t, _), f in self._fills.items() if t == tenant and start_ns <= f.executed_at_ns < end_ns
        ]

    async def trade_aggregates(
        self, tenant: str, symbol: str, start_ns: int, end_ns: int, budget_s: float
    ) -> TradeAggregates:
        self._up()
        fills = [f for f in self._fills_in(tenant, start_ns, end_ns) if not symbol or f.symbol == symbol]
        executions = {f.execution_id for f in fills}
        closing = [
            c.realized_pnl_change
            for (t, execution_id), c in self._changes.items()
            if t == tenant
            and execution_id in executions
            and c.previous_quantity != 0
            and ((c.quantity - c.previous_quantity) > 0) != (c.previous_quantity > 0)
        ]
        return TradeAggregates(
            fill_count=len(fills),
            turnover=sum((domain.EXACT.multiply(f.price, f.quantity) for f in fills), Decimal(0)),
            fees=sum((f.fee for f in fills), Decimal(0)),
            currency=fills[0].currency if fills else "",
            trade_count=len(closing),
            winning=sum(1 for pnl in closing if pnl > 0),
            losing=sum(1 for pnl in closing if pnl < 0),
            gross_pnl=sum(closing, Decimal(0)),
            gross_profit=sum((pnl for pnl in closing if pnl > 0), Decimal(0)),
            gross_loss=sum((pnl for pnl in closing if pnl < 0), Decimal(0)),
        )

    async def snapshot_path(
        self, tenant: str, start_ns: int, end_ns: int, budget_s: float
    ) -> list[SnapshotPoint]:
        self._up()
        snapshots = self._tenant_snapshots(tenant)
        # max() of no row is DateTime64's zero in ClickHouse: the epoch.
        since = max((s.as_of_ns for s in snapshots if s.as_of_ns <= start_ns), default=0)
        return [
            (
                s.as_of_ns,
                s.gross_exposure,
                s.equity,
                list(s.position_symbols),
                list(s.position_market_values),
                list(s.position_realized_net),
                list(s.position_unrealized),
            )
            for s in snapshots
            if since <= s.as_of_ns < end_ns
        ]

    # ------------------------------------------------------------------ performance

    def _signals_in(self, tenant: str | None, start_ns: int, end_ns: int) -> list[SignalRow]:
        return [
            s
            for (t, _), s in self._signals.items()
            if (tenant is None or t == tenant) and start_ns <= s.feature_as_of_ns < end_ns
        ]

    def _outcomes(
        self, symbols: set[str], start_ns: int, end_ns: int, horizon_ticks: int
    ) -> dict[str, tuple[list[int], list[Outcome]]]:
        """Per symbol: its priced ticks' times within the outcome window, in
        order, and the outcome of a prediction made at each (the price
        `horizon` ticks later against its own)."""
        lookback = int(self._settings.outcome_lookback_s * NS_PER_S)
        lookahead = int(self._settings.outcome_lookahead_s * NS_PER_S)
        lo = max(start_ns - lookback, domain.QUERY_NS_MIN)
        hi = min(end_ns + lookahead, domain.QUERY_NS_MAX)
        by_symbol: dict[str, list[tuple[int, int, str, Decimal]]] = defaultdict(list)
        for t in self._ticks.values():
            if t.symbol in symbols and lo <= t.exchange_time_ns < hi:
                price = tick_price(t)
                if price > 0:
                    by_symbol[t.symbol].append((t.exchange_time_ns, t.sequence, t.event_id, price))
        out: dict[str, tuple[list[int], list[Outcome]]] = {}
        for symbol, ticks in by_symbol.items():
            ticks.sort()
            prices = [p for *_, p in ticks]
            outcomes = [
                outcome_of(price, prices[i + horizon_ticks] if i + horizon_ticks < len(prices) else None)
                for i, price in enumerate(prices)
            ]
            out[symbol] = ([at for at, *_ in ticks], outcomes)
        return out

    @staticmethod
    def _outcome_at(outcomes: dict[str, tuple[list[int], list[Outcome]]], symbol: str, at_ns: int) -> Outcome:
        """The outcome of the last priced tick at or before `at_ns` (none: unresolved)."""
        times, results = outcomes.get(symbol, ([], []))
        i = bisect.bisect_right(times, at_ns)
        return results[i - 1] if i else Outcome.UNRESOLVED

    async def model_cells(
        self,
        tenant: str | None,
        model_id: str,
        start_ns: int,
        end_ns: int,
        horizon_ticks: int,
        budget_s: float,
    ) -> list[Cell[tuple[str, str]]]:
        self._up()
        signals = self._signals_in(tenant, start_ns, end_ns)
        outcomes = self._outcomes({s.symbol for s in signals}, start_ns, end_ns, horizon_ticks)
        predictions: dict[tuple[str, int, str, str], float] = {}
        for s in signals:
            for m, version, answered, score in zip(
                s.model_ids, s.model_versions, s.model_outcomes, s.model_scores, strict=True
            ):
                if answered == MODEL_OUTCOME_OK and (not model_id or m == model_id):
                    # One prediction per model version and feature vector, whoever used it.
                    predictions.setdefault((s.symbol, s.feature_as_of_ns, m, version), probability(score))
        return _cells(
            ((m, version), p, model_call(p), self._outcome_at(outcomes, symbol, at))
            for (symbol, at, m, version), p in predictions.items()
        )

    async def strategy_cells(
        self, tenant: str, strategy_id: str, start_ns: int, end_ns: int, horizon_ticks: int, budget_s: float
    ) -> list[Cell[str]]:
        self._up()
        signals = self._signals_in(tenant, start_ns, end_ns)
        outcomes = self._outcomes({s.symbol for s in signals}, start_ns, end_ns, horizon_ticks)
        return _cells(
            (
                s.strategy_id,
                probability(s.strength),
                _STRATEGY_CALLS.get(s.direction, Call.NONE),
                self._outcome_at(outcomes, s.symbol, s.feature_as_of_ns),
            )
            for s in signals
            if MODEL_OUTCOME_OK in s.model_outcomes and (not strategy_id or s.strategy_id == strategy_id)
        )

    async def strategy_openings(
        self, tenant: str, strategy_id: str, start_ns: int, budget_s: float
    ) -> dict[str, dict[str, Decimal]]:
        self._up()
        held: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for (t, _), f in self._fills.items():
            if (
                t == tenant
                and f.executed_at_ns < start_ns
                and (not strategy_id or f.strategy_id == strategy_id)
            ):
                held[(f.strategy_id, f.symbol)] += f.quantity if f.side == "BUY" else -f.quantity
        out: dict[str, dict[str, Decimal]] = {}
        for (strategy, symbol), quantity in held.items():
            if quantity != 0:
                out.setdefault(strategy, {})[symbol] = quantity
        return out

    async def strategy_fills(
        self, tenant: str, strategy_id: str, start_ns: int, end_ns: int, limit: int, budget_s: float
    ) -> list[tuple[str, StrategyFill]]:
        self._up()
        fills = sorted(
            (
                f
                for f in self._fills_in(tenant, start_ns, end_ns)
                if not strategy_id or f.strategy_id == strategy_id
            ),
            key=lambda f: (f.executed_at_ns, f.execution_id),
        )[: limit + 1]
        return [
            (
                f.strategy_id,
                StrategyFill(
                    f.symbol,
                    Side.BUY if f.side == "BUY" else Side.SELL,
                    f.price,
                    f.quantity,
                    f.fee,
                    f.currency,
                    f.executed_at_ns,
                ),
            )
            for f in fills
        ]

    async def marks(self, symbols: Iterable[str], before_ns: int, budget_s: float) -> dict[str, Decimal]:
        self._up()
        wanted = set(symbols)
        if not wanted:
            return {}
        lookback = int(self._settings.mark_lookback_s * NS_PER_S)
        lo = max(before_ns - lookback, domain.QUERY_NS_MIN)
        last: dict[str, tuple[int, int, Decimal]] = {}
        for t in self._ticks.values():
            if t.symbol in wanted and lo <= t.exchange_time_ns < before_ns:
                price = tick_price(t)
                if price > 0 and (
                    t.symbol not in last or (t.exchange_time_ns, t.sequence) > last[t.symbol][:2]
                ):
                    last[t.symbol] = (t.exchange_time_ns, t.sequence, price)
        return {symbol: price for symbol, (_, _, price) in last.items()}
