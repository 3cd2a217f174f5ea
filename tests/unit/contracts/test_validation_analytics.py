"""protovalidate rules of the analytics contracts."""

from __future__ import annotations

import pytest
from trading.analytics.v1 import analytics_service_pb2 as pb

from tests.support.validation import violations

START = 1_700_000_000
DAY = 86_400


def bars(**overrides: object) -> pb.GetBarsRequest:
    """A valid GetBars request: one day of minute bars."""
    request = pb.GetBarsRequest(symbol="BTC-USD", interval=pb.BAR_INTERVAL_ONE_MINUTE, limit=1440)
    request.time_range.start.FromSeconds(START)
    request.time_range.end.FromSeconds(START + DAY)
    for name, value in overrides.items():
        setattr(request, name, value)
    return request


def test_valid_bars_request_passes() -> None:
    assert violations(bars()) == set()
    assert violations(bars(limit=0)) == set()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"symbol": "btc-usd"}, ("symbol", "string.pattern")),
        ({"interval": pb.BAR_INTERVAL_UNSPECIFIED}, ("interval", "enum.not_in")),
        ({"interval": 99}, ("interval", "enum.defined_only")),
        ({"limit": 10_001}, ("limit", "int32.gte_lte")),
        ({"limit": -5}, ("limit", "int32.gte_lte")),
    ],
)
def test_bad_bars_fields(overrides: dict[str, object], expected: tuple[str, str]) -> None:
    assert violations(bars(**overrides)) == {expected}


def test_bars_time_range_is_required_bounded_and_ordered() -> None:
    missing = bars()
    missing.ClearField("time_range")
    assert violations(missing) == {("time_range", "required")}

    open_ended = bars()
    open_ended.time_range.ClearField("end")
    assert violations(open_ended) == {("time_range", "time_range.bounded")}

    reversed_range = bars()
    reversed_range.time_range.end.FromSeconds(START - 60)
    assert violations(reversed_range) == {("time_range", "time_range.ordered")}


def pnl_series(step_seconds: int, days: int = 1) -> pb.GetPnlSeriesRequest:
    request = pb.GetPnlSeriesRequest()
    request.time_range.start.FromSeconds(START)
    request.time_range.end.FromSeconds(START + days * DAY)
    request.step.FromSeconds(step_seconds)
    return request


def test_pnl_series_step_and_size() -> None:
    assert violations(pnl_series(60)) == set()
    assert violations(pnl_series(DAY, days=365)) == set()

    sub_second = pnl_series(60)
    sub_second.step.FromMilliseconds(500)
    assert ("step", "duration.gte_lte") in violations(sub_second)
    assert violations(pnl_series(2 * DAY, days=30)) == {("step", "duration.gte_lte")}

    no_step = pnl_series(60)
    no_step.ClearField("step")
    assert violations(no_step) == {("step", "required")}

    # 10 days at 1 s steps is 864,000 points.
    assert violations(pnl_series(1, days=10)) == {("", "pnl_series.max_points")}


def test_trade_stats_request() -> None:
    request = pb.GetTradeStatsRequest(symbol="AAPL")
    request.time_range.start.FromSeconds(START)
    request.time_range.end.FromSeconds(START + DAY)
    assert violations(request) == set()
    request.symbol = ""
    assert violations(request) == set()
    request.symbol = "aapl"
    assert violations(request) == {("symbol", "string.pattern")}
    assert violations(pb.GetTradeStatsRequest()) == {("time_range", "required")}


PerformanceRequest = pb.GetModelPerformanceRequest | pb.GetStrategyPerformanceRequest


@pytest.mark.parametrize("kind", [pb.GetModelPerformanceRequest, pb.GetStrategyPerformanceRequest])
def test_performance_requests(kind: type[PerformanceRequest]) -> None:
    def request(days: int = 7) -> PerformanceRequest:
        out = kind()
        out.time_range.start.FromSeconds(START)
        out.time_range.end.FromSeconds(START + days * DAY)
        return out

    assert violations(request()) == set()  # horizon 0 (the default) and every model or strategy
    assert violations(request(days=8)) == {("", "performance.max_range")}
    assert violations(kind()) == {("time_range", "required")}
    open_ended = request()
    open_ended.time_range.ClearField("end")
    assert violations(open_ended) == {("time_range", "time_range.bounded")}
    horizon = request()
    horizon.horizon_ticks = 1000
    assert violations(horizon) == set()
    horizon.horizon_ticks = 1001
    assert violations(horizon) == {("horizon_ticks", "int32.gte_lte")}
    horizon.horizon_ticks = -1
    assert violations(horizon) == {("horizon_ticks", "int32.gte_lte")}


def test_performance_filters() -> None:
    models = pb.GetModelPerformanceRequest(model_id="gbt-trend")
    models.time_range.start.FromSeconds(START)
    models.time_range.end.FromSeconds(START + DAY)
    assert violations(models) == set()
    models.model_id = "GBT trend"
    assert violations(models) == {("model_id", "string.pattern")}
    strategies = pb.GetStrategyPerformanceRequest(strategy_id="btc-momentum")
    strategies.time_range.CopyFrom(models.time_range)
    assert violations(strategies) == set()
    strategies.strategy_id = "btc.momentum"
    assert violations(strategies) == {("strategy_id", "string.pattern")}
