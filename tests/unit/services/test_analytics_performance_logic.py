"""Model and strategy performance of the analytics service (pure logic):
outcomes, calls, calibration buckets, hit rate, Brier score, drawdown, a
strategy's PnL, signal rows and the evaluator's gauges. Expected figures are
worked out by hand in the comments."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from trading.common.v1 import decimal_pb2, types_pb2
from trading.decision.v1 import decision_service_pb2 as dpb
from trading.decision.v1 import events_pb2 as decision_events
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types

from domain.positions import Side
from services.analytics import domain
from services.analytics.domain import InvalidEventError, performance
from services.analytics.domain.performance import (
    Call,
    Cell,
    Outcome,
    Prediction,
    Quality,
    StrategyFill,
    bucket_of,
    cells_of,
    max_drawdown,
    quality,
    strategy_pnl,
)
from services.analytics.evaluator import ModelEvaluator, top_models
from services.analytics.ports import AnalyticsStore
from services.analytics.settings import AnalyticsSettings
from services.decision.settings import TrainingSettings

S = domain.NS_PER_S
UP, DOWN, TIE, UNRESOLVED = Outcome.UP, Outcome.DOWN, Outcome.TIE, Outcome.UNRESOLVED


def test_default_horizon_is_the_training_label_horizon() -> None:
    assert TrainingSettings.model_fields["horizon_ticks"].default == performance.DEFAULT_HORIZON_TICKS


def test_outcomes_compare_the_future_price_with_the_reference() -> None:
    assert performance.outcome_of(D("100.5"), D("100.6")) is UP
    assert performance.outcome_of(D("100.5"), D("100.4")) is DOWN
    assert performance.outcome_of(D("100.5"), D("100.50")) is TIE
    assert performance.outcome_of(None, D(1)) is UNRESOLVED
    assert performance.outcome_of(D(1), None) is UNRESOLVED


@pytest.mark.parametrize(
    ("p", "bucket", "call"),
    [
        (0.0, 0, Call.DOWN),
        (0.099, 0, Call.DOWN),
        (0.1, 1, Call.DOWN),
        (0.49, 4, Call.DOWN),
        (0.5, 5, Call.UP),  # the cut training's accuracy uses: p >= 0.5 is "up"
        (0.95, 9, Call.UP),
        (1.0, 9, Call.UP),  # the last bucket holds 1
    ],
)
def test_buckets_and_model_calls(p: float, bucket: int, call: Call) -> None:
    assert bucket_of(p) == bucket
    assert performance.model_call(p) is call


def test_probability_of_a_score() -> None:
    assert performance.probability(-1.0) == 0.0
    assert performance.probability(0.0) == 0.5
    assert performance.probability(0.6) == 0.8


def _model(p: float, outcome: Outcome, key: str = "m") -> Prediction[str]:
    return Prediction(key, p, performance.model_call(p), outcome)


def test_quality_of_model_predictions() -> None:
    predictions = [
        _model(0.9, UP),  # called up, rose: hit; (0.9 - 1)^2 = 0.01
        _model(0.8, DOWN),  # called up, fell: miss; 0.8^2 = 0.64
        _model(0.3, DOWN),  # called down, fell: hit; 0.3^2 = 0.09
        _model(0.55, UP),  # hit; 0.45^2 = 0.2025
        _model(0.2, TIE),  # not scored
        _model(0.7, UNRESOLVED),  # not scored
    ]
    q = quality(cells_of(predictions))
    assert (q.prediction_count, q.scored_count, q.tie_count, q.unresolved_count) == (6, 4, 1, 1)
    assert (q.directional_count, q.hit_count, q.hit_rate) == (4, 3, D("0.75"))
    # (0.01 + 0.64 + 0.09 + 0.2025) / 4
    assert q.brier_score == D("0.235625")
    assert q.base_rate == D("0.5")  # 2 of the 4 scored rose
    assert [(b.lower, b.upper, b.count, b.mean_predicted, b.realized_frequency) for b in q.calibration] == [
        (D("0.3"), D("0.4"), 1, D("0.3"), D(0)),
        (D("0.5"), D("0.6"), 1, D("0.55"), D(1)),
        (D("0.8"), D("0.9"), 1, D("0.8"), D(0)),
        (D("0.9"), D(1), 1, D("0.9"), D(1)),
    ]


def test_calibration_bucket_pools_predictions() -> None:
    # Three predictions in [0.6, 0.7): mean (0.6 + 0.62 + 0.67) / 3 = 0.63, two of three rose.
    q = quality(cells_of([_model(0.6, UP), _model(0.62, DOWN), _model(0.67, UP)]))
    (bucket,) = q.calibration
    assert (bucket.count, bucket.mean_predicted, bucket.realized_frequency) == (
        3,
        D("0.63"),
        D("0.666666666667"),
    )
    # Brier: (0.16 + 0.3844 + 0.1089) / 3 = 0.6533 / 3
    assert q.brier_score == D("0.217766666667")


def test_perfect_and_constant_predictions() -> None:
    perfect = quality(cells_of([_model(1.0, UP), _model(0.0, DOWN)]))
    assert (perfect.brier_score, perfect.hit_rate) == (D(0), D(1))
    coin = quality(cells_of([_model(0.5, UP), _model(0.5, DOWN)]))
    assert (coin.brier_score, coin.hit_rate) == (D("0.25"), D("0.5"))


def test_strategy_holds_are_scored_but_call_nothing() -> None:
    # BUY at p 0.7 rose (hit), SELL at p 0.4 rose (miss), HOLD at p 0.52 fell.
    predictions = [
        Prediction("s", 0.7, Call.UP, UP),
        Prediction("s", 0.4, Call.DOWN, UP),
        Prediction("s", 0.52, Call.NONE, DOWN),
    ]
    q = quality(cells_of(predictions))
    assert (q.scored_count, q.directional_count, q.hit_count, q.hit_rate) == (3, 2, 1, D("0.5"))
    # (0.09 + 0.36 + 0.2704) / 3 = 0.7204 / 3
    assert q.brier_score == D("0.240133333333")


def test_no_scored_prediction_leaves_the_ratios_unset() -> None:
    q = quality(cells_of([_model(0.7, UNRESOLVED), _model(0.6, TIE)]))
    assert (q.prediction_count, q.scored_count) == (2, 0)
    assert (q.hit_rate, q.brier_score, q.base_rate, q.calibration) == (None, None, None, ())
    assert quality([]) == Quality()


def test_qualities_per_key_from_sql_shaped_cells() -> None:
    cells = [
        Cell(("a", "1"), 7, Call.UP, UP, 3, 2.1, 1.47),  # three at p 0.7 that rose
        Cell(("a", "1"), 2, Call.DOWN, UP, 1, 0.2, 0.04),
        Cell(("b", "1"), 5, Call.UP, DOWN, 2, 1.0, 0.5),
    ]
    got = performance.qualities(cells)
    assert got[("a", "1")].hit_rate == D("0.75")
    # a: 3 x 0.09 + 0.64 = 0.91 over 4
    assert got[("a", "1")].brier_score == D("0.2275")
    assert (got[("b", "1")].hit_count, got[("b", "1")].brier_score) == (0, D("0.25"))


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ([], D(0)),
        ([D(1), D(2), D(3)], D(0)),
        ([D(1), D(3), D(-1), D(2), D(0)], D(4)),  # peak 3 down to -1
        ([D(-2), D(-1)], D(2)),  # from 0 (the start) down to -2
    ],
)
def test_max_drawdown(path: list[D], want: D) -> None:
    assert max_drawdown(path) == want


def _fill(side: Side, qty: str, price: str, at_s: int, symbol: str = "X") -> StrategyFill:
    return StrategyFill(symbol, side, D(price), D(qty), D("0.1"), "USD", at_s * S)


def test_strategy_pnl_books_its_own_average_price_position() -> None:
    fills = [
        _fill(Side.BUY, "1", "100", 1),
        _fill(Side.BUY, "1", "102", 2),  # long 2 @ 101
        _fill(Side.SELL, "1", "105", 3),  # closes 1: +4
        _fill(Side.SELL, "2", "99", 4),  # closes 1: -2, opens a short of 1 @ 99
    ]
    pnl = strategy_pnl({}, fills, {}, {"X": D(97)})
    assert pnl.fill_count == 4
    assert pnl.turnover == D(505)  # 100 + 102 + 105 + 2 x 99
    assert (pnl.realized_pnl, pnl.fees, pnl.net_realized_pnl) == (D(2), D("0.4"), D("1.6"))
    # short 1 @ 99 marked at 97: -1 x (97 - 99)
    assert pnl.unrealized_pnl == D(2)
    # net after each fill: -0.1, -0.2, 3.7 (peak), 1.6: a fall of 2.1
    assert pnl.max_drawdown == D("2.1")
    assert pnl.currency == "USD"


def test_strategy_pnl_takes_a_carried_position_at_the_start_mark() -> None:
    sell = [_fill(Side.SELL, "1", "103", 1)]
    # Long 2 carried in at the start mark 100: the sale realises 3, the rest
    # (1 @ 100) is marked at 104.
    pnl = strategy_pnl({"X": D(2)}, sell, {"X": D(100)}, {"X": D(104)})
    assert (pnl.realized_pnl, pnl.unrealized_pnl, pnl.turnover) == (D(3), D(4), D(103))
    # Without a start mark the first fill's price is the basis.
    pnl = strategy_pnl({"X": D(2)}, sell, {}, {"X": D(104)})
    assert (pnl.realized_pnl, pnl.unrealized_pnl) == (D(0), D(1))
    # Neither a start mark nor a fill: it enters at the end mark, so no PnL.
    idle = strategy_pnl({"Y": D(-3)}, [], {}, {"Y": D(50)})
    assert idle.fill_count == 0
    assert (idle.realized_pnl, idle.unrealized_pnl, idle.max_drawdown) == (D(0), D(0), D(0))
    # Carried short marked from 100 at the start to 90 at the end: -3 x (90 - 100)
    short = strategy_pnl({"Y": D(-3)}, [], {"Y": D(100)}, {"Y": D(90)})
    assert short.unrealized_pnl == D(30)


def test_strategy_pnl_without_end_mark_uses_the_last_price() -> None:
    pnl = strategy_pnl({}, [_fill(Side.BUY, "1", "10", 1), _fill(Side.BUY, "1", "12", 2)], {}, {})
    # long 2 @ 11, last price 12
    assert pnl.unrealized_pnl == D(2)


# ------------------------------------------------------------------------------ rows


def _signal(**fields: Any) -> decision_events.SignalGenerated:
    signal = dpb.Signal(
        signal_id="0190c0de-0000-7000-8000-000000000001",
        strategy_id="btc-momentum",
        symbol="BTC-USD",
        direction=dpb.SIGNAL_DIRECTION_BUY,
        strength=0.3,
        confidence=1.0,
        feature_tick_sequence=42,
        model_scores=[
            dpb.ModelScore(model_id="gbt-trend", model_version="v1", outcome=dpb.MODEL_OUTCOME_OK, score=0.4,
                           weight=1.0),
            dpb.ModelScore(model_id="logreg-trend", model_version="v2", outcome=dpb.MODEL_OUTCOME_TIMEOUT,
                           weight=1.0),
        ],
    )  # fmt: skip
    signal.feature_as_of.FromNanoseconds(10 * S + 5)
    signal.generated_at.FromNanoseconds(10 * S + 900)
    for name, value in fields.items():
        setattr(signal, name, value)
    return decision_events.SignalGenerated(symbol=signal.symbol, signal=signal)


def test_signal_rows_keep_the_models_scores() -> None:
    row = domain.row_of(domain.SIGNAL_EVENT, "e1", "t1", _signal())
    assert isinstance(row, domain.SignalRow)
    assert (row.tenant_id, row.strategy_id, row.symbol, row.direction) == (
        "t1",
        "btc-momentum",
        "BTC-USD",
        "BUY",
    )
    assert (row.feature_as_of_ns, row.generated_at_ns, row.feature_tick_sequence) == (
        10 * S + 5,
        10 * S + 900,
        42,
    )
    assert row.model_ids == ("gbt-trend", "logreg-trend")
    assert row.model_versions == ("v1", "v2")
    assert row.model_outcomes == (dpb.MODEL_OUTCOME_OK, dpb.MODEL_OUTCOME_TIMEOUT)
    assert row.model_scores == (0.4, 0.0)
    assert domain.SIGNAL_EVENT in domain.SUNK_EVENTS


def test_signal_without_feature_time_is_placed_at_its_generation() -> None:
    event = _signal()
    event.signal.ClearField("feature_as_of")
    row = domain.signal_row("e1", "t1", event)
    assert row.feature_as_of_ns == 10 * S + 900


@pytest.mark.parametrize(
    "change",
    [
        {"direction": dpb.SIGNAL_DIRECTION_UNSPECIFIED},
        {"strength": 1.5},
        {"strength": float("nan")},
        {"symbol": ""},
        {"signal_id": ""},
    ],
)
def test_bad_signals_are_invalid_events(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidEventError):
        domain.row_of(domain.SIGNAL_EVENT, "e1", "t1", _signal(**change))


def test_signals_need_a_tenant_a_time_and_sane_scores() -> None:
    with pytest.raises(InvalidEventError):
        domain.row_of(domain.SIGNAL_EVENT, "e1", "", _signal())
    timeless = _signal()
    timeless.signal.ClearField("feature_as_of")
    timeless.signal.ClearField("generated_at")
    with pytest.raises(InvalidEventError):
        domain.signal_row("e1", "t1", timeless)
    wild = _signal()
    wild.signal.model_scores[0].score = -3.0
    with pytest.raises(InvalidEventError):
        domain.signal_row("e1", "t1", wild)


def test_fill_rows_carry_the_orders_strategy() -> None:
    fill = execution_types.Fill(
        execution_id="x1",
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        price=decimal_pb2.Decimal(value="100"),
        quantity=decimal_pb2.Decimal(value="1"),
    )
    fill.executed_at.FromSeconds(10)
    order = execution_types.Order(order_id="o1", strategy_id="btc-momentum")
    row = domain.fill_row(
        "e1", "t1", execution_events.OrderFillReported(order_id="o1", fill=fill, order=order)
    )
    assert row.strategy_id == "btc-momentum"
    order.strategy_id = ""
    manual = domain.fill_row(
        "e2", "t1", execution_events.OrderFillReported(order_id="o1", fill=fill, order=order)
    )
    assert manual.strategy_id == ""


# ------------------------------------------------------------------------------ evaluator


def test_top_models_bounds_the_series() -> None:
    found = {
        ("a", "1"): Quality(scored_count=5),
        ("b", "1"): Quality(scored_count=50),
        ("c", "1"): Quality(scored_count=5),
    }
    assert [k for k, _ in top_models(found, 2)] == [("b", "1"), ("a", "1")]


class _FakeStore:
    """model_cells answers from a list the test changes between rounds."""

    def __init__(self) -> None:
        self.cells: list[Cell[tuple[str, str]]] = []
        self.calls: list[tuple[Any, ...]] = []

    async def model_cells(self, *args: Any) -> list[Cell[tuple[str, str]]]:
        self.calls.append(args)
        return self.cells


def _sample(name: str, model: str, version: str) -> float | None:
    labels = {"model_id": model, "model_version": version, "horizon_ticks": "20"}
    return REGISTRY.get_sample_value(name, labels)


async def test_evaluator_sets_the_gauges_without_tenants_and_drops_stale_series() -> None:
    store = _FakeStore()
    settings = AnalyticsSettings(
        evaluation_window_s=600, evaluation_horizon_ticks=20, evaluation_max_models=5
    )
    evaluator = ModelEvaluator(cast(AnalyticsStore, store), settings, clock_ns=lambda: 1_000 * S)
    store.cells = [
        Cell(("unit-gbt", "v1"), 7, Call.UP, UP, 3, 2.1, 1.47),
        Cell(("unit-gbt", "v1"), 7, Call.UP, DOWN, 1, 0.7, 0.49),
        Cell(("unit-old", "v0"), 5, Call.UP, UNRESOLVED, 4, 2.0, 1.0),
    ]
    await evaluator.run_once()
    # every tenant (None), the last 600 s, at horizon 20
    assert store.calls[0][:5] == (None, "", 400 * S, 1_000 * S, 20)
    assert _sample("trading_model_signal_hit_ratio", "unit-gbt", "v1") == 0.75
    # (3 x 0.09 + 0.49) / 4
    assert _sample("trading_model_brier_score", "unit-gbt", "v1") == 0.19
    assert _sample("trading_model_realized_up_ratio", "unit-gbt", "v1") == 0.75
    assert _sample("trading_model_scored_predictions", "unit-gbt", "v1") == 4
    # a model without a scored prediction: its count, no made-up ratios
    assert _sample("trading_model_scored_predictions", "unit-old", "v0") == 0
    assert _sample("trading_model_signal_hit_ratio", "unit-old", "v0") is None
    assert REGISTRY.get_sample_value("trading_model_evaluation_timestamp_seconds") == 1_000
    # the next round no longer sees the old version: its series go
    store.cells = store.cells[:2]
    await evaluator.run_once()
    assert _sample("trading_model_scored_predictions", "unit-old", "v0") is None
    assert _sample("trading_model_scored_predictions", "unit-gbt", "v1") == 4
    for metric in REGISTRY.collect():
        if metric.name.startswith("trading_model_"):
            assert all("tenant" not in s.labels and "tenant_id" not in s.labels for s in metric.samples)


async def test_evaluator_task_stops_cleanly_and_survives_failures() -> None:
    class Failing(_FakeStore):
        async def model_cells(self, *args: Any) -> list[Cell[tuple[str, str]]]:
            self.calls.append(args)
            raise RuntimeError("ClickHouse is down")

    store = Failing()
    evaluator = ModelEvaluator(cast(AnalyticsStore, store), AnalyticsSettings(evaluation_interval_s=0.01))
    evaluator.start()
    for _ in range(100):
        if len(store.calls) >= 2:
            break
        await asyncio.sleep(0.01)
    await evaluator.stop()
    assert len(store.calls) >= 2  # a failed round does not end the loop
    off = ModelEvaluator(cast(AnalyticsStore, _FakeStore()), AnalyticsSettings(evaluation_interval_s=0))
    off.start()
    await off.stop()  # never started: nothing to stop
