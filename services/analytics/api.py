"""gRPC API of the analytics service (trading.analytics.v1.AnalyticsService).

Read-only, over the analytics store the Kafka sink fills (services/analytics/ports.py;
ClickHouse in production: adapters/clickhouse.py); model and strategy
performance as defined in domain/performance.py.
Requests are validated by the server's protovalidate interceptor (unknown
interval, missing or inverted range, too many PnL steps: INVALID_ARGUMENT with
field violations) before they get here. Tenant data is scoped to the caller's
tenant from the call's metadata; bars are market-wide.

ClickHouse down or slow: every RPC fails within its budget (the configured
query timeout, or the call's deadline if nearer) with UNAVAILABLE, ErrorInfo
reason ANALYTICS_STORE_UNAVAILABLE and a RetryInfo; nothing else in the
platform waits on this service.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import grpc
from trading.analytics.v1 import analytics_service_pb2 as pb
from trading.common.v1 import decimal_pb2

from runtime.context import current_context, require_tenant
from runtime.decimals import to_proto
from runtime.errors import FieldViolation, ServiceError, domain_error, invalid_argument
from services.analytics import domain
from services.analytics.domain import performance
from services.analytics.ports import AnalyticsStore, StoreUnavailableError
from services.analytics.settings import AnalyticsSettings

DOMAIN = "trading.analytics"
UNAVAILABLE_REASON = "ANALYTICS_STORE_UNAVAILABLE"
DEFAULT_BAR_LIMIT = 1000
# Portfolio amounts are in the base currency (portfolio's contract).
DEFAULT_CURRENCY = "USD"


def _money(amount: Decimal, currency: str) -> decimal_pb2.Money:
    return decimal_pb2.Money(currency=currency or DEFAULT_CURRENCY, amount=to_proto(domain.quantize(amount)))


def _decimal(value: Decimal) -> decimal_pb2.Decimal:
    return to_proto(domain.quantize(value))


def _unavailable(exc: StoreUnavailableError) -> ServiceError:
    return ServiceError(
        domain_error(
            grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_REASON, DOMAIN, str(exc), retry_after_s=exc.retry_after_s
        )
    )


def _quality(q: performance.Quality) -> pb.PredictionQuality:
    out = pb.PredictionQuality(
        prediction_count=q.prediction_count,
        scored_count=q.scored_count,
        tie_count=q.tie_count,
        unresolved_count=q.unresolved_count,
        directional_count=q.directional_count,
        hit_count=q.hit_count,
        calibration=[
            pb.CalibrationBucket(
                lower=_decimal(b.lower),
                upper=_decimal(b.upper),
                count=b.count,
                mean_predicted=_decimal(b.mean_predicted),
                realized_frequency=_decimal(b.realized_frequency),
            )
            for b in q.calibration
        ],
    )
    for name, value in (("hit_rate", q.hit_rate), ("brier_score", q.brier_score), ("base_rate", q.base_rate)):
        if value is not None:
            getattr(out, name).CopyFrom(_decimal(value))
    return out


def _strategy_pnl(pnl: performance.StrategyPnl) -> pb.StrategyPnl:
    currency = pnl.currency or DEFAULT_CURRENCY
    return pb.StrategyPnl(
        fill_count=pnl.fill_count,
        turnover=_money(pnl.turnover, currency),
        realized_pnl=_money(pnl.realized_pnl, currency),
        fees=_money(pnl.fees, currency),
        net_realized_pnl=_money(pnl.net_realized_pnl, currency),
        unrealized_pnl=_money(pnl.unrealized_pnl, currency),
        max_drawdown=_money(pnl.max_drawdown, currency),
    )


class AnalyticsApi:
    """The AnalyticsService servicer."""

    def __init__(self, store: AnalyticsStore, settings: AnalyticsSettings | None = None) -> None:
        self._store = store
        self._settings = settings or AnalyticsSettings()

    def _budget(self) -> float:
        return self._store.budget(current_context().time_remaining())

    async def GetBars(
        self, request: pb.GetBarsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetBarsResponse:
        try:
            plan = domain.plan_of(request.interval)
        except ValueError as exc:  # defined in the enum but not served: never silently wrong
            raise ServiceError(invalid_argument([FieldViolation("interval", str(exc))])) from None
        start_ns = domain.query_ns(request.time_range.start)
        end_ns = domain.query_ns(request.time_range.end)
        lo, hi = domain.bar_window(start_ns, end_ns, plan.step_s)
        limit = request.limit or DEFAULT_BAR_LIMIT
        try:
            rows, truncated = await self._store.bars(request.symbol, plan, lo, hi, limit, self._budget())
        except StoreUnavailableError as exc:
            raise _unavailable(exc) from None
        bars = [
            pb.Bar(
                start_time=domain.timestamp_of(r.start_s * domain.NS_PER_S),
                end_time=domain.timestamp_of((r.start_s + plan.step_s) * domain.NS_PER_S),
                open=_decimal(r.open),
                high=_decimal(r.high),
                low=_decimal(r.low),
                close=_decimal(r.close),
                volume=_decimal(r.volume),
                vwap=_decimal(domain.vwap(r.notional, r.volume)),
                tick_count=r.tick_count,
            )
            for r in rows
        ]
        return pb.GetBarsResponse(
            symbol=request.symbol, interval=request.interval, bars=bars, truncated=truncated
        )

    async def GetPnlSeries(
        self, request: pb.GetPnlSeriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetPnlSeriesResponse:
        tenant = require_tenant()
        start_ns = domain.query_ns(request.time_range.start)
        end_ns = domain.query_ns(request.time_range.end)
        step_ns = request.step.ToNanoseconds()
        if step_ns <= 0 or (end_ns - start_ns) // step_ns > 10_000:
            raise ServiceError(
                invalid_argument([FieldViolation("step", "the range holds more than 10000 steps")])
            )
        try:
            samples = await self._store.pnl_samples(tenant, start_ns, end_ns, step_ns, self._budget())
        except StoreUnavailableError as exc:
            raise _unavailable(exc) from None
        points = [
            pb.PnlPoint(
                time=domain.timestamp_of(at),
                equity=_money(s.equity, s.currency),
                realized_pnl=_money(s.realized_pnl, s.currency),
                unrealized_pnl=_money(s.unrealized_pnl, s.currency),
                fees=_money(s.fees, s.currency),
            )
            for at, s in domain.pnl_series(samples, start_ns, end_ns, step_ns)
        ]
        return pb.GetPnlSeriesResponse(points=points)

    async def GetTradeStats(
        self, request: pb.GetTradeStatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTradeStatsResponse:
        tenant = require_tenant()
        start_ns = domain.query_ns(request.time_range.start)
        end_ns = domain.query_ns(request.time_range.end)
        symbol = request.symbol
        deadline = time.monotonic() + self._budget()
        try:
            sums = await self._store.trade_aggregates(tenant, symbol, start_ns, end_ns, self._budget())
            path = await self._store.snapshot_path(
                tenant, start_ns, end_ns, max(0.01, deadline - time.monotonic())
            )
        except StoreUnavailableError as exc:
            raise _unavailable(exc) from None
        if symbol:
            points = domain.symbol_points(((p[0], p[3], p[4], p[5], p[6]) for p in path), symbol)
        else:
            points = [domain.ExposurePoint(p[0], p[1], p[2]) for p in path]
        stats = domain.path_stats(points, start_ns, end_ns)
        currency = sums.currency or DEFAULT_CURRENCY
        out = pb.TradeStats(
            fill_count=sums.fill_count,
            trade_count=sums.trade_count,
            winning_trades=sums.winning,
            losing_trades=sums.losing,
            turnover=_money(sums.turnover, currency),
            gross_pnl=_money(sums.gross_pnl, currency),
            fees=_money(sums.fees, currency),
            net_pnl=_money(domain.net(sums.gross_pnl, sums.fees), currency),
            average_exposure=_money(stats.average_exposure, currency),
            max_exposure=_money(stats.max_exposure, currency),
            max_drawdown=_money(stats.max_drawdown, currency),
        )
        rate = domain.win_rate(sums.winning, sums.trade_count)
        if rate is not None:
            out.win_rate.CopyFrom(_decimal(rate))
        factor = domain.profit_factor(sums.gross_profit, sums.gross_loss)
        if factor is not None:
            out.profit_factor.CopyFrom(_decimal(factor))
        if stats.max_drawdown_ratio is not None:
            out.max_drawdown_ratio.CopyFrom(_decimal(stats.max_drawdown_ratio))
        as_of = min(end_ns, time.time_ns())
        return pb.GetTradeStatsResponse(stats=out, as_of=domain.timestamp_of(as_of))

    async def GetModelPerformance(
        self, request: pb.GetModelPerformanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetModelPerformanceResponse:
        tenant = require_tenant()
        start_ns = domain.query_ns(request.time_range.start)
        end_ns = domain.query_ns(request.time_range.end)
        horizon = request.horizon_ticks or performance.DEFAULT_HORIZON_TICKS
        try:
            cells = await self._store.model_cells(
                tenant, request.model_id, start_ns, end_ns, horizon, self._budget()
            )
        except StoreUnavailableError as exc:
            raise _unavailable(exc) from None
        by_model = performance.qualities(cells)
        return pb.GetModelPerformanceResponse(
            models=[
                pb.ModelPerformance(model_id=model_id, model_version=version, quality=_quality(q))
                for (model_id, version), q in sorted(by_model.items())
            ],
            horizon_ticks=horizon,
            as_of=domain.timestamp_of(min(end_ns, time.time_ns())),
        )

    async def GetStrategyPerformance(
        self, request: pb.GetStrategyPerformanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetStrategyPerformanceResponse:
        tenant = require_tenant()
        start_ns = domain.query_ns(request.time_range.start)
        end_ns = domain.query_ns(request.time_range.end)
        horizon = request.horizon_ticks or performance.DEFAULT_HORIZON_TICKS
        strategy = request.strategy_id
        limit = self._settings.performance_max_fills
        deadline = time.monotonic() + self._budget()

        def left() -> float:
            return max(0.01, deadline - time.monotonic())

        try:
            cells = await self._store.strategy_cells(tenant, strategy, start_ns, end_ns, horizon, left())
            fills = await self._store.strategy_fills(tenant, strategy, start_ns, end_ns, limit, left())
            if len(fills) > limit:
                raise ServiceError(
                    invalid_argument(
                        [FieldViolation("time_range", f"the range holds more than {limit} fills; narrow it")]
                    )
                )
            openings = await self._store.strategy_openings(tenant, strategy, start_ns, left())
            held = {symbol for book in openings.values() for symbol in book}
            start_marks = await self._store.marks(held, start_ns, left())
            end_marks = await self._store.marks(held | {f.symbol for _, f in fills}, end_ns, left())
        except StoreUnavailableError as exc:
            raise _unavailable(exc) from None
        by_strategy = performance.qualities(cells)
        fills_of: dict[str, list[performance.StrategyFill]] = {}
        for strategy_id, fill in fills:
            fills_of.setdefault(strategy_id, []).append(fill)
        out = []
        for strategy_id in sorted(set(by_strategy) | set(fills_of) | set(openings)):
            pnl = performance.strategy_pnl(
                openings.get(strategy_id, {}), fills_of.get(strategy_id, []), start_marks, end_marks
            )
            out.append(
                pb.StrategyPerformance(
                    strategy_id=strategy_id,
                    quality=_quality(by_strategy.get(strategy_id, performance.Quality())),
                    pnl=_strategy_pnl(pnl),
                )
            )
        return pb.GetStrategyPerformanceResponse(
            strategies=out,
            horizon_ticks=horizon,
            as_of=domain.timestamp_of(min(end_ns, time.time_ns())),
        )
