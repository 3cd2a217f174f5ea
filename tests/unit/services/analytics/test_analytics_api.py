"""The AnalyticsService servicer on the in-memory store: bars (market-wide),
a tenant's PnL series, trade statistics and model and strategy performance
as the contract shows them, tenants apart, and the refusals with the status
the contract names. Expected figures are worked out in the comments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal as D
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from trading.analytics.v1 import analytics_service_pb2 as pb
from trading.common.v1 import decimal_pb2, types_pb2

from runtime import decimals
from runtime.errors import ServiceError
from services.analytics.adapters.memory import MemoryAnalyticsStore
from services.analytics.api import AnalyticsApi
from services.analytics.domain import NS_PER_S, Row, timestamp_of
from services.analytics.settings import AnalyticsSettings
from tests.suites.analytics_ports import (
    BASE,
    OK,
    change,
    fill,
    new_symbol,
    new_tenant,
    quote,
    signal,
    snapshot,
    trade,
)
from tests.support.servicers import AbortedCall, as_caller, expect_error, servicer_context

S = NS_PER_S
SCOPES = ["analytics:read"]


def context() -> grpc.aio.ServicerContext[Any, Any]:
    """A fresh recorded context (tests/support/servicers.py), as the servicer's parameter is typed."""
    return servicer_context()


def span(start_ns: int, end_ns: int) -> types_pb2.TimeRange:
    return types_pb2.TimeRange(start=timestamp_of(start_ns), end=timestamp_of(end_ns))


def num(value: decimal_pb2.Decimal) -> D:
    return decimals.from_proto(value)


def money(value: decimal_pb2.Money) -> D:
    return decimals.from_proto(value.amount)


class Desk:
    """The servicer on an in-memory store."""

    def __init__(self, settings: AnalyticsSettings | None = None) -> None:
        self.store = MemoryAnalyticsStore(settings)
        self.api = AnalyticsApi(self.store, settings)

    async def write(self, rows: Sequence[Row]) -> None:
        await self.store.write(rows)


@pytest.fixture
def desk() -> Desk:
    return Desk()


def reason(error: ServiceError | AbortedCall) -> str:
    assert isinstance(error, ServiceError)
    for detail in error.status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


# ---------------------------------------------------------------- bars


async def test_bars_are_ohlcv_per_step_with_their_vwap(desk: Desk) -> None:
    symbol = new_symbol()
    # Minute 0: 100 x 1, then 104 x 3: VWAP (100 + 312) / 4 = 103; minute 2: 90 x 1.
    await desk.write(
        [
            trade(symbol, BASE + 1 * S, "100", "1"),
            trade(symbol, BASE + 50 * S, "104", "3"),
            trade(symbol, BASE + 125 * S, "90", "1"),
        ]
    )
    request = pb.GetBarsRequest(
        symbol=symbol, interval=pb.BAR_INTERVAL_ONE_MINUTE, time_range=span(BASE, BASE + 600 * S)
    )
    with as_caller("tenant-a", scopes=SCOPES):
        got = await desk.api.GetBars(request, context())
        newest = await desk.api.GetBars(
            pb.GetBarsRequest(
                symbol=symbol,
                interval=pb.BAR_INTERVAL_ONE_MINUTE,
                time_range=span(BASE, BASE + 600 * S),
                limit=1,
            ),
            context(),
        )
    first, second = got.bars
    assert (got.symbol, got.truncated) == (symbol, False)
    assert first.start_time.ToNanoseconds() == BASE and first.end_time.ToNanoseconds() == BASE + 60 * S
    assert [num(x) for x in (first.open, first.high, first.low, first.close, first.volume, first.vwap)] == [
        D(100),
        D(104),
        D(100),
        D(104),
        D(4),
        D(103),
    ]
    assert (first.tick_count, second.start_time.ToNanoseconds(), num(second.close)) == (
        2,
        BASE + 120 * S,
        D(90),
    )
    assert [b.start_time.ToNanoseconds() for b in newest.bars] == [BASE + 120 * S] and newest.truncated


async def test_bars_of_an_interval_not_served_are_invalid(desk: Desk) -> None:
    request = pb.GetBarsRequest(
        symbol="BTC-USD", interval=pb.BAR_INTERVAL_UNSPECIFIED, time_range=span(BASE, BASE + S)
    )
    with as_caller("tenant-a", scopes=SCOPES):
        await expect_error(desk.api.GetBars(request, context()), grpc.StatusCode.INVALID_ARGUMENT)


async def test_a_store_that_is_down_makes_every_rpc_unavailable_with_a_retry_hint(desk: Desk) -> None:
    desk.store.go_down(retry_after_s=3.0)
    range_ = span(BASE, BASE + 60 * S)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: desk.api.GetBars(
            pb.GetBarsRequest(symbol="BTC-USD", interval=pb.BAR_INTERVAL_ONE_MINUTE, time_range=range_),
            context(),
        ),
        lambda: desk.api.GetPnlSeries(
            pb.GetPnlSeriesRequest(time_range=range_, step=duration_pb2.Duration(seconds=10)), context()
        ),
        lambda: desk.api.GetTradeStats(pb.GetTradeStatsRequest(time_range=range_), context()),
        lambda: desk.api.GetModelPerformance(pb.GetModelPerformanceRequest(time_range=range_), context()),
        lambda: desk.api.GetStrategyPerformance(
            pb.GetStrategyPerformanceRequest(time_range=range_), context()
        ),
    ]
    with as_caller(new_tenant(), scopes=SCOPES):
        for call in calls:
            refused = await expect_error(call(), grpc.StatusCode.UNAVAILABLE)
            assert reason(refused) == "ANALYTICS_STORE_UNAVAILABLE"


# ---------------------------------------------------------------- PnL and trades


async def test_the_pnl_series_carries_the_last_snapshot_of_each_step_per_tenant(desk: Desk) -> None:
    tenant, other = new_tenant(), new_tenant()
    await desk.write(
        [
            snapshot(tenant, BASE - 5 * S, "900"),
            snapshot(tenant, BASE + 12 * S, "1012"),
            snapshot(tenant, BASE + 18 * S, "1018"),
            snapshot(other, BASE + 1 * S, "5"),
        ]
    )
    request = pb.GetPnlSeriesRequest(
        time_range=span(BASE, BASE + 30 * S), step=duration_pb2.Duration(seconds=10)
    )
    with as_caller(tenant, scopes=SCOPES):
        got = await desk.api.GetPnlSeries(request, context())
    with as_caller(new_tenant(), scopes=SCOPES):
        nobody = await desk.api.GetPnlSeries(request, context())
    # Ends of steps 10, 20, 30 s: 900 carried in, then 1018 (the last by 20 s), carried to 30 s.
    assert [(p.time.ToNanoseconds(), money(p.equity)) for p in got.points] == [
        (BASE + 10 * S, D(900)),
        (BASE + 20 * S, D(1018)),
        (BASE + 30 * S, D(1018)),
    ]
    assert got.points[0].equity.currency == "USD"
    assert list(nobody.points) == []


async def test_a_pnl_series_of_too_many_steps_is_invalid(desk: Desk) -> None:
    with as_caller(new_tenant(), scopes=SCOPES):
        for step in (duration_pb2.Duration(), duration_pb2.Duration(seconds=1)):
            request = pb.GetPnlSeriesRequest(time_range=span(BASE, BASE + 20_000 * S), step=step)
            await expect_error(desk.api.GetPnlSeries(request, context()), grpc.StatusCode.INVALID_ARGUMENT)


async def test_trade_stats_count_closing_trades_and_the_exposure_path(desk: Desk) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    bought = fill(tenant, symbol, "BUY", "2", "100", BASE + 1 * S, fee="1")
    sold = fill(tenant, symbol, "SELL", "2", "110", BASE + 5 * S, fee="1")
    await desk.write(
        [
            bought,
            sold,
            change(tenant, bought, "0", "2", "0"),
            change(tenant, sold, "2", "0", "20"),  # closes the position: +20
            # Exposure 200 from 0 to 5 s, then 0 until 10 s: time-weighted 100; equity 1000 -> 1018.
            snapshot(tenant, BASE, "1000", exposure="200"),
            snapshot(tenant, BASE + 5 * S, "1018", exposure="0"),
        ]
    )
    request = pb.GetTradeStatsRequest(time_range=span(BASE, BASE + 10 * S))
    with as_caller(tenant, scopes=SCOPES):
        stats = (await desk.api.GetTradeStats(request, context())).stats
    with as_caller(new_tenant(), scopes=SCOPES):
        other = (await desk.api.GetTradeStats(request, context())).stats
    assert (stats.fill_count, stats.trade_count, stats.winning_trades, stats.losing_trades) == (2, 1, 1, 0)
    assert [money(m) for m in (stats.turnover, stats.gross_pnl, stats.fees, stats.net_pnl)] == [
        D(420),
        D(20),
        D(2),
        D(18),
    ]
    assert (money(stats.average_exposure), money(stats.max_exposure), money(stats.max_drawdown)) == (
        D(100),
        D(200),
        D(0),
    )
    assert num(stats.win_rate) == 1 and not stats.HasField("profit_factor")  # no losing trade
    assert (other.fill_count, other.trade_count, other.HasField("win_rate")) == (0, 0, False)


# ---------------------------------------------------------------- performance


async def test_model_performance_scores_the_tenants_predictions(desk: Desk) -> None:
    tenant, other, symbol = new_tenant(), new_tenant(), new_symbol()
    # Mids 100, 101, 102 at 1, 2, 3 s: over 1 tick, ticks 1 and 2 -> UP.
    ticks = [
        quote(symbol, BASE + (i + 1) * S, str(mid - 0.5), str(mid + 0.5))
        for i, mid in enumerate([100, 101, 102])
    ]
    await desk.write(
        [
            *ticks,
            signal(tenant, symbol, BASE + 1 * S, models=(("m", OK, 0.5),)),  # p .75, calls UP: a hit
            signal(tenant, symbol, BASE + 2 * S, models=(("m", OK, -0.5),)),  # p .25, calls DOWN: a miss
            signal(other, symbol, BASE + 2 * S, models=(("theirs", OK, 0.5),)),
        ]
    )
    request = pb.GetModelPerformanceRequest(time_range=span(BASE, BASE + 10 * S), horizon_ticks=1)
    with as_caller(tenant, scopes=SCOPES):
        got = await desk.api.GetModelPerformance(request, context())
    [model] = got.models
    q = model.quality
    assert (model.model_id, model.model_version, got.horizon_ticks) == ("m", "v1", 1)
    assert (q.prediction_count, q.scored_count, q.directional_count, q.hit_count) == (2, 2, 2, 1)
    # Brier: ((.75 - 1)^2 + (.25 - 1)^2) / 2 = (.0625 + .5625) / 2 = .3125; both rose: base rate 1.
    assert (num(q.hit_rate), num(q.brier_score), num(q.base_rate)) == (D("0.5"), D("0.3125"), D(1))


async def test_strategy_performance_books_the_strategys_fills_at_the_end_mark(desk: Desk) -> None:
    tenant, symbol = new_tenant(), new_symbol()
    # Held 1 before the start (bought at 90, marked 100 at the start); buys 1 more at 104 inside;
    # marked 110 at the end: unrealised (110 - 100) + (110 - 104) = 16.
    await desk.write(
        [
            fill(tenant, symbol, "BUY", "1", "90", BASE - 5 * S, strategy="trend"),
            quote(symbol, BASE - 1 * S, "99.5", "100.5"),
            fill(tenant, symbol, "BUY", "1", "104", BASE + 2 * S, strategy="trend", fee="0.5"),
            quote(symbol, BASE + 8 * S, "109.5", "110.5"),
            fill(new_tenant(), symbol, "SELL", "7", "1", BASE + 3 * S, strategy="trend"),
        ]
    )
    request = pb.GetStrategyPerformanceRequest(time_range=span(BASE, BASE + 10 * S))
    with as_caller(tenant, scopes=SCOPES):
        got = await desk.api.GetStrategyPerformance(request, context())
    [strategy] = got.strategies
    pnl = strategy.pnl
    assert (strategy.strategy_id, pnl.fill_count) == ("trend", 1)
    assert [money(m) for m in (pnl.turnover, pnl.realized_pnl, pnl.fees, pnl.unrealized_pnl)] == [
        D(104),
        D(0),
        D("0.5"),
        D(16),
    ]
    assert strategy.quality.prediction_count == 0  # no signal of it in the range


async def test_strategy_performance_over_too_many_fills_is_invalid() -> None:
    desk = Desk(AnalyticsSettings(performance_max_fills=1))
    tenant, symbol = new_tenant(), new_symbol()
    await desk.write(
        [fill(tenant, symbol, "BUY", "1", "10", BASE + i * S, strategy="busy") for i in range(2)]
    )
    request = pb.GetStrategyPerformanceRequest(time_range=span(BASE, BASE + 10 * S))
    with as_caller(tenant, scopes=SCOPES):
        await expect_error(
            desk.api.GetStrategyPerformance(request, context()), grpc.StatusCode.INVALID_ARGUMENT
        )
