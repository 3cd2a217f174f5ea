"""Pure logic of the analytics service: bar windows, event rows, PnL
sampling, exposure and drawdown. Expected figures worked out by hand."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from trading.analytics.v1 import analytics_service_pb2 as pb
from trading.common.v1 import decimal_pb2, types_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types
from trading.marketdata.v1 import events_pb2 as md_events

from services.analytics import domain
from services.analytics.adapters.clickhouse import bars_params
from services.analytics.domain import ExposurePoint, InvalidEventError, PnlSample
from services.analytics.ports import DATETIME_MAX_S

S = domain.NS_PER_S


def test_every_contract_interval_is_served() -> None:
    defined = {v.number for v in pb.BarInterval.DESCRIPTOR.values if v.number != 0}
    assert set(domain.INTERVALS) == defined
    assert domain.plan_of(pb.BAR_INTERVAL_FIFTEEN_MINUTES) == domain.IntervalPlan(900, "1m")
    with pytest.raises(ValueError):
        domain.plan_of(0)


@pytest.mark.parametrize(
    ("start_ns", "end_ns", "step", "want"),
    [
        (0, 120 * S, 60, (0, 120)),  # aligned
        (30 * S, 150 * S, 60, (60, 180)),  # bars starting at 60 and 120
        (1, 60 * S, 60, (60, 60)),  # no bar starts within (0, 60)
        (59 * S + 1, 61 * S, 1, (60, 61)),
    ],
)
def test_bar_window_covers_bars_starting_within_the_range(
    start_ns: int, end_ns: int, step: int, want: tuple[int, int]
) -> None:
    assert domain.bar_window(start_ns, end_ns, step) == want


def _tick(**fields: object) -> md_events.Tick:
    tick = md_events.Tick(symbol="BTC-USD", source="t", sequence=7, **fields)  # type: ignore[arg-type]
    tick.exchange_time.FromNanoseconds(5 * S + 3)
    return tick


def test_tick_rows_keep_nanoseconds_and_treat_quotes_as_no_trade() -> None:
    traded = domain.tick_row(
        "e1", _tick(last_price=decimal_pb2.Decimal(value="10.5"), last_size=decimal_pb2.Decimal(value="2"))
    )
    assert (traded.exchange_time_ns, traded.last_price, traded.last_size) == (5 * S + 3, D("10.5"), D(2))
    quote = domain.tick_row("e2", _tick(last_price=decimal_pb2.Decimal(value="10.5")))
    assert (quote.last_price, quote.last_size) == (D(0), D(0))
    with pytest.raises(InvalidEventError):
        domain.tick_row(
            "e3", _tick(last_price=decimal_pb2.Decimal(value="0"), last_size=decimal_pb2.Decimal(value="1"))
        )
    with pytest.raises(InvalidEventError):
        domain.tick_row("e4", md_events.Tick(symbol="BTC-USD"))  # no exchange time


def test_fill_rows_need_a_tenant_and_a_valid_fill() -> None:
    fill = execution_types.Fill(
        execution_id="x1",
        symbol="BTC-USD",
        side=types_pb2.SIDE_SELL,
        price=decimal_pb2.Decimal(value="100"),
        quantity=decimal_pb2.Decimal(value="0.5"),
        fee=decimal_pb2.Money(currency="USD", amount=decimal_pb2.Decimal(value="0.01")),
    )
    fill.executed_at.FromSeconds(10)
    event = execution_events.OrderFillReported(order_id="o1", fill=fill)
    row = domain.row_of(domain.FILL_EVENT, "e1", "t1", event)
    assert isinstance(row, domain.FillRow)
    assert (row.side, row.order_id, row.fee, row.executed_at_ns) == ("SELL", "o1", D("0.01"), 10 * S)
    with pytest.raises(InvalidEventError):
        domain.row_of(domain.FILL_EVENT, "e1", "", event)
    event.fill.quantity.value = "0"  # the event holds its own copy
    with pytest.raises(InvalidEventError):
        domain.row_of(domain.FILL_EVENT, "e1", "t1", event)
    with pytest.raises(InvalidEventError):
        domain.row_of("trading.other.v1.Thing", "e1", "t1", event)


def _sample(at_s: int, equity: str) -> PnlSample:
    return PnlSample(at_s * S, "USD", D(equity), D(0), D(0), D(0))


def test_pnl_series_carries_the_last_value_forward_and_skips_steps_before_the_first() -> None:
    samples = [_sample(25, "101"), _sample(27, "102"), _sample(55, "99")]
    out = domain.pnl_series(samples, 0, 100 * S, 20 * S)
    # steps end at 20 (nothing yet), 40 (27: 102), 60 (55: 99), 80, 100 (carried)
    assert [(at // S, s.equity) for at, s in out] == [(40, D(102)), (60, D(99)), (80, D(99)), (100, D(99))]
    # a partial last step ends at the range's end
    assert [at // S for at, _ in domain.pnl_series(samples, 0, 50 * S, 20 * S)] == [40, 50]


def test_path_stats_time_weights_exposure_and_finds_the_deepest_fall() -> None:
    points = [
        ExposurePoint(0, D(50), D(1000)),  # carried in: counts from start (10 s)
        ExposurePoint(20 * S, D(100), D(1010)),  # peak
        ExposurePoint(30 * S, D(0), D(1000)),
        ExposurePoint(35 * S, D(10), D(1005)),
        ExposurePoint(50 * S, D(999), D(1)),  # at the end: outside [start, end)
    ]
    stats = domain.path_stats(points, 10 * S, 50 * S)
    # (50*10 + 100*10 + 0*5 + 10*15) / 40
    assert stats.average_exposure == D("41.25")
    assert stats.max_exposure == D(100)
    assert stats.max_drawdown == D(10)
    assert stats.max_drawdown_ratio == domain.divide(D(10), D(1010))


def test_path_stats_without_data_or_fall() -> None:
    empty = domain.path_stats([], 0, 10 * S)
    zero = D(0)
    assert (empty.average_exposure, empty.max_exposure, empty.max_drawdown) == (zero, zero, zero)
    assert empty.max_drawdown_ratio is None
    rising = domain.path_stats([ExposurePoint(S, D(1), D(10)), ExposurePoint(2 * S, D(1), D(11))], 0, 3 * S)
    assert (rising.max_drawdown, rising.max_drawdown_ratio) == (zero, zero)


def test_symbol_points_flat_position_keeps_its_realised_pnl() -> None:
    rows = [
        (1, ["BTC-USD"], [D(-50)], [D(3)], [D(2)]),
        (2, ["ETH-USD"], [D(10)], [D(0)], [D(0)]),  # BTC closed meanwhile
    ]
    assert domain.symbol_points(rows, "BTC-USD") == [
        ExposurePoint(1, D(50), D(5)),
        ExposurePoint(2, D(0), D(3)),
    ]


def test_ratios() -> None:
    assert domain.win_rate(2, 3) == D("0.666666666667")
    assert domain.win_rate(0, 0) is None
    assert domain.profit_factor(D(6), D(-2)) == D(3)
    assert domain.profit_factor(D(6), D(0)) is None
    assert domain.vwap(D("353.873456789012"), D("3.5")) == D("101.106701939718")
    assert domain.vwap(D(0), D(0)) == 0


@pytest.mark.parametrize(
    ("lo", "hi", "want"),
    [
        (-315619200, -157766400, (0, 0)),  # 1960 to 1965: before DateTime's range
        (-62135596800, 60, (0, 60)),
        (4102444800, 253402300799, (4102444800, DATETIME_MAX_S)),  # 2100 to 9999
        (60, 120, (60, 120)),
    ],
)
def test_bar_query_bounds_stay_within_datetime(lo: int, hi: int, want: tuple[int, int]) -> None:
    """GetBars' lo/hi are UInt32 seconds: a range before 1970 (negative) or
    past 2106 is clamped, never sent to ClickHouse out of range."""
    params = bars_params("BTC-USD", domain.plan_of(pb.BAR_INTERVAL_ONE_MINUTE), lo, hi, 10)
    assert (params["lo"], params["hi"]) == want
