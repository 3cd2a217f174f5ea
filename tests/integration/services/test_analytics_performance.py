"""Model and strategy performance on real servers: ticks, decision's signals
and execution's fills of two tenants published to tansu, sunk by analytics'
consumer group into chdb (a database of this module's own), read back with
GetModelPerformance and GetStrategyPerformance, and scored platform-wide by
the evaluator behind the trading_model_* gauges.

Every expected figure is worked out by hand below from the mids of ten ticks
(horizon 2 ticks: the outcome of a signal at tick i is mid[i + 2] against
mid[i]). Redelivery of every signal changes nothing; another tenant sees
nothing of them; the same strategy id in two tenants stays two strategies.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import Message
from prometheus_client import REGISTRY
from trading.analytics.v1 import analytics_service_pb2 as pb
from trading.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from trading.common.v1 import event_pb2, types_pb2
from trading.decision.v1 import decision_service_pb2 as dpb
from trading.decision.v1 import events_pb2 as decision_events
from trading.execution.v1 import events_pb2 as execution_events
from trading.execution.v1 import types_pb2 as execution_types
from trading.marketdata.v1 import events_pb2 as md_events

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging import uuid7
from runtime.messaging.kafka import KafkaPublisher
from services.analytics import domain
from services.analytics.adapters.clickhouse import ClickHouseAnalyticsStore
from services.analytics.evaluator import ModelEvaluator
from services.analytics.settings import AnalyticsSettings
from tests.integration.services.test_analytics_service import analytics, dec, envelope, md, ts, usd
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

DATABASE = f"analytics_perf_{uuid.uuid4().hex[:8]}"
TOPICS = ("trading.marketdata.ticks", "trading.execution.fills", "trading.decision.signals")
BASE_S = 1_709_373_600  # 2024-03-02 10:00:00 UTC
NS = domain.NS_PER_S
MS = NS // 1000
HORIZON = 2
# Mid of tick i (at BASE + i s); bid and ask are 0.5 either side.
MIDS = {1: 100, 2: 101, 3: 102, 4: 101, 5: 100, 6: 100, 7: 99, 8: 100, 9: 101, 10: 102}
OK, TIMEOUT = dpb.MODEL_OUTCOME_OK, dpb.MODEL_OUTCOME_TIMEOUT
BUY, SELL, HOLD = dpb.SIGNAL_DIRECTION_BUY, dpb.SIGNAL_DIRECTION_SELL, dpb.SIGNAL_DIRECTION_HOLD


def settings_for(group: str) -> AnalyticsSettings:
    # The service's own evaluator is off: the test runs one with its own clock.
    return AnalyticsSettings(
        consumer_group=group,
        batch_max_rows=200,
        batch_max_interval_s=0.2,
        query_timeout_s=15.0,
        evaluation_interval_s=0,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def publisher(infra_settings: Settings) -> AsyncIterator[KafkaPublisher]:
    async with KafkaPublisher(infra_settings.kafka, event_registry(), client_id="test-analytics-perf") as pub:
        yield pub


async def caught_up(settings: Settings, group: str) -> bool:
    """Whether `group` committed the test's topics up to their end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in TOPICS for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            if ends[tp] and ((await consumer.committed(tp)) or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


# ------------------------------------------------------------------ the data


def tick(symbol: str, i: int) -> md_events.Tick:
    mid = D(MIDS[i])
    at = ts((BASE_S + i) * NS)
    return md_events.Tick(
        symbol=symbol,
        bid_price=dec(mid - D("0.5")),
        bid_size=dec("1"),
        ask_price=dec(mid + D("0.5")),
        ask_size=dec("1"),
        sequence=i,
        source="test",
        exchange_time=at,
        receive_time=at,
    )


def signal(
    symbol: str,
    strategy: str,
    at_ns: int,
    direction: int,
    strength: float,
    scores: list[tuple[str, int, float]],
) -> decision_events.SignalGenerated:
    out = dpb.Signal(
        signal_id=str(uuid7()),
        strategy_id=strategy,
        symbol=symbol,
        direction=direction,  # type: ignore[arg-type]
        strength=strength,
        confidence=1.0,
        model_scores=[
            dpb.ModelScore(model_id=m, model_version="v1", outcome=o, score=s, weight=1.0)  # type: ignore[arg-type]
            for m, o, s in scores
        ],
    )
    out.feature_as_of.CopyFrom(ts(at_ns))
    out.generated_at.CopyFrom(ts(at_ns + MS))
    return decision_events.SignalGenerated(symbol=symbol, signal=out)


def tick_ns(i: int, after_ms: int = 1) -> int:
    return (BASE_S + i) * NS + after_ms * MS


def signals_a(symbol: str) -> list[decision_events.SignalGenerated]:
    """Tenant A. Outcomes at horizon 2: tick 1 (100 -> 102) UP, 3 (102 -> 100)
    DOWN, 5 (100 -> 99) DOWN, 6 (100 -> 100) TIE, 9 (tick 11 never comes)
    UNRESOLVED. Scores s give p = (s + 1) / 2."""
    return [
        # exactly at tick 1's time (the ASOF JOIN takes the tick at that moment)
        signal(symbol, "alpha", tick_ns(1, 0), BUY, 0.4, [("gbt", OK, 0.6), ("logreg", OK, -0.2)]),
        # the same vector for another strategy: gbt's score counts once
        signal(symbol, "beta", tick_ns(1, 0), HOLD, 0.02, [("gbt", OK, 0.6), ("logreg", TIMEOUT, 0.0)]),
        signal(symbol, "alpha", tick_ns(3), SELL, -0.5, [("gbt", OK, -0.4), ("logreg", OK, -0.6)]),
        signal(symbol, "alpha", tick_ns(5), BUY, 0.3, [("gbt", OK, 0.2), ("logreg", OK, 0.4)]),
        signal(symbol, "alpha", tick_ns(6), SELL, -0.3, [("gbt", OK, -0.2), ("logreg", OK, 0.0)]),
        signal(symbol, "alpha", tick_ns(9), BUY, 0.5, [("gbt", OK, 0.8), ("logreg", OK, 0.6)]),
        # no model answered: left out of the strategy's quality
        signal(symbol, "alpha", tick_ns(2), HOLD, 0.0, [("gbt", TIMEOUT, 0.0)]),
    ]


def signals_b(symbol: str) -> list[decision_events.SignalGenerated]:
    """Tenant B, same strategy id: tick 4 (101 -> 100) DOWN, gbt said 0.9 up."""
    return [signal(symbol, "alpha", tick_ns(4), BUY, 0.8, [("gbt", OK, 0.8)])]


def fill(tenant: str, symbol: str, strategy: str, side: int, qty: str, price: str, at_ns: int) -> Any:
    order_id = str(uuid7())
    f = execution_types.Fill(
        execution_id=str(uuid7()),
        order_id=order_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        price=dec(price),
        quantity=dec(qty),
        fee=usd("0.1"),
        executed_at=ts(at_ns),
    )
    order = execution_types.Order(order_id=order_id, symbol=symbol, strategy_id=strategy, version=2)
    return envelope(execution_events.OrderFillReported(order_id=order_id, fill=f, order=order), tenant)


def fills_a(tenant: str, symbol: str) -> list[tuple[event_pb2.EventEnvelope, Message]]:
    """alpha: buy 1 @ 100, buy 1 @ 102 (long 2 @ 101), sell 1 @ 105 (+4),
    sell 2 @ 99 (-2 on the last one, then short 1 @ 99); a manual buy of 1 @ 100."""
    b, s = types_pb2.SIDE_BUY, types_pb2.SIDE_SELL
    return [
        fill(tenant, symbol, "alpha", b, "1", "100", tick_ns(1, 500)),
        fill(tenant, symbol, "", b, "1", "100", tick_ns(2, 500)),
        fill(tenant, symbol, "alpha", b, "1", "102", tick_ns(3, 500)),
        fill(tenant, symbol, "alpha", s, "1", "105", tick_ns(5, 500)),
        fill(tenant, symbol, "alpha", s, "2", "99", tick_ns(7, 500)),
    ]


def hour(start_s: int = 0) -> types_pb2.TimeRange:
    return types_pb2.TimeRange(start=ts((BASE_S + start_s) * NS), end=ts((BASE_S + 3600) * NS))


def value(d: Any) -> D | None:
    """A Decimal field's value; None when the message is unset."""
    return D(d.value) if d.value else None


def quality(q: pb.PredictionQuality) -> tuple[Any, ...]:
    return (
        q.prediction_count, q.scored_count, q.tie_count, q.unresolved_count, q.directional_count, q.hit_count,
        value(q.hit_rate), value(q.brier_score), value(q.base_rate),
    )  # fmt: skip


def calibration(q: pb.PredictionQuality) -> list[tuple[Any, ...]]:
    return [
        (value(b.lower), value(b.upper), b.count, value(b.mean_predicted), value(b.realized_frequency))
        for b in q.calibration
    ]


def pnl(p: pb.StrategyPnl) -> tuple[Any, ...]:
    return (
        p.fill_count, value(p.turnover.amount), value(p.realized_pnl.amount), value(p.fees.amount),
        value(p.net_realized_pnl.amount), value(p.unrealized_pnl.amount) or D(0),
        value(p.max_drawdown.amount) or D(0),
    )  # fmt: skip


async def models_of(
    stub: pb_grpc.AnalyticsServiceAsyncStub, tenant: str, **fields: Any
) -> dict[tuple[str, str], pb.ModelPerformance]:
    reply = await stub.GetModelPerformance(
        pb.GetModelPerformanceRequest(time_range=hour(), horizon_ticks=HORIZON, **fields),
        metadata=md(tenant),
        timeout=10,
    )
    assert reply.horizon_ticks == HORIZON
    return {(m.model_id, m.model_version): m for m in reply.models}


async def strategies_of(
    stub: pb_grpc.AnalyticsServiceAsyncStub, tenant: str, start_s: int = 0, **fields: Any
) -> dict[str, pb.StrategyPerformance]:
    reply = await stub.GetStrategyPerformance(
        pb.GetStrategyPerformanceRequest(time_range=hour(start_s), horizon_ticks=HORIZON, **fields),
        metadata=md(tenant),
        timeout=10,
    )
    return {s.strategy_id: s for s in reply.strategies}


# ------------------------------------------------------------------ the test


async def test_model_and_strategy_performance_per_tenant_and_platform_wide(
    infra_settings: Settings, publisher: KafkaPublisher
) -> None:
    symbol = f"P{uuid.uuid4().hex[:8].upper()}"
    tenant_a, tenant_b = f"t-a-{uuid.uuid4().hex[:8]}", f"t-b-{uuid.uuid4().hex[:8]}"
    signal_events = [envelope(s, tenant_a) for s in signals_a(symbol)] + [
        envelope(s, tenant_b) for s in signals_b(symbol)
    ]
    # A signal the table cannot take (strength outside [-1, 1]): dead-lettered, nothing else held up.
    bad = signal(symbol, "alpha", tick_ns(8), BUY, 2.0, [("gbt", OK, 0.1)])
    b_fill = fill(tenant_b, symbol, "alpha", types_pb2.SIDE_BUY, "1", "50", tick_ns(2))
    await publisher.publish_many(
        [envelope(tick(symbol, i)) for i in MIDS]
        + [envelope(bad, tenant_a)]
        + signal_events
        + fills_a(tenant_a, symbol)
        + [b_fill]
    )
    group = f"analytics.perf-{uuid.uuid4().hex[:8]}"
    async with analytics(infra_settings, settings_for(group), database=DATABASE) as stub:

        async def all_stored() -> dict[tuple[str, str], pb.ModelPerformance] | None:
            got = await models_of(stub, tenant_a)
            gbt = got.get(("gbt", "v1"))
            return got if gbt is not None and gbt.quality.scored_count == 3 else None

        models = await eventually(all_stored, what="tenant A's signals and the ticks stored")
        await eventually(lambda: caught_up(infra_settings, group), what="the group at the end of the topics")
        models = await models_of(stub, tenant_a)
        assert sorted(models) == [("gbt", "v1"), ("logreg", "v1")]
        gbt, logreg = models[("gbt", "v1")].quality, models[("logreg", "v1")].quality
        # gbt: 0.8 UP (hit), 0.3 DOWN (hit), 0.6 DOWN (miss), 0.4 TIE, 0.9 unresolved;
        # beta's copy of the tick-1 score counts once. Brier (0.04 + 0.09 + 0.36) / 3.
        assert quality(gbt) == (
            5, 3, 1, 1, 3, 2, D("0.666666666667"), D("0.163333333333"), D("0.333333333333"),
        )  # fmt: skip
        assert calibration(gbt) == [
            (D("0.3"), D("0.4"), 1, D("0.3"), D(0)),
            (D("0.6"), D("0.7"), 1, D("0.6"), D(0)),
            (D("0.8"), D("0.9"), 1, D("0.8"), D(1)),
        ]
        # logreg: 0.4 UP (miss), 0.2 DOWN (hit), 0.7 DOWN (miss), 0.5 TIE, 0.8
        # unresolved; its timeout is no prediction. Brier (0.36 + 0.04 + 0.49) / 3.
        assert quality(logreg) == (
            5, 3, 1, 1, 3, 1, D("0.333333333333"), D("0.296666666667"), D("0.333333333333"),
        )  # fmt: skip
        # one model only
        assert list(await models_of(stub, tenant_a, model_id="logreg")) == [("logreg", "v1")]
        # the default horizon (20 ticks): ten ticks never get there
        default = await stub.GetModelPerformance(
            pb.GetModelPerformanceRequest(time_range=hour()), metadata=md(tenant_a), timeout=10
        )
        assert default.horizon_ticks == 20
        assert {(m.quality.unresolved_count, m.quality.scored_count) for m in default.models} == {(5, 0)}
        assert not default.models[0].quality.HasField("hit_rate")

        # Tenant B sees its own signal only, and A's numbers are not B's.
        b_models = await models_of(stub, tenant_b)
        assert list(b_models) == [("gbt", "v1")]
        assert quality(b_models[("gbt", "v1")].quality) == (1, 1, 0, 0, 1, 0, D(0), D("0.81"), D(0))
        # A third tenant sees nothing at all.
        stranger = f"t-c-{uuid.uuid4().hex[:8]}"
        assert await models_of(stub, stranger) == {}
        assert await strategies_of(stub, stranger) == {}

        strategies = await strategies_of(stub, tenant_a)
        assert sorted(strategies) == ["", "alpha", "beta"]
        alpha = strategies["alpha"]
        # p from strength: 0.7 BUY UP (hit), 0.25 SELL DOWN (hit), 0.65 BUY DOWN
        # (miss), 0.35 TIE, 0.75 unresolved; the HOLD no model answered is left out.
        # Brier (0.09 + 0.0625 + 0.4225) / 3.
        assert quality(alpha.quality) == (
            5, 3, 1, 1, 3, 2, D("0.666666666667"), D("0.191666666667"), D("0.333333333333"),
        )  # fmt: skip
        # beta's HOLD at p 0.51 rose: scored, no call; (0.51 - 1)^2.
        assert quality(strategies["beta"].quality) == (1, 1, 0, 0, 0, 0, None, D("0.2401"), D(1))
        # alpha's fills: turnover 100 + 102 + 105 + 198; realised +4 - 2; fees 0.4;
        # net after each fill -0.1, -0.2, 3.7, 1.6 (a fall of 2.1); short 1 @ 99
        # marked at tick 10's mid 102: -3.
        assert pnl(alpha.pnl) == (4, D(505), D(2), D("0.4"), D("1.6"), D(-3), D("2.1"))
        assert alpha.pnl.turnover.currency == "USD"
        # the manual buy: long 1 @ 100 marked at 102
        assert pnl(strategies[""].pnl) == (1, D(100), D(0), D("0.1"), D("-0.1"), D(2), D("0.1"))
        assert strategies[""].quality.prediction_count == 0
        assert pnl(strategies["beta"].pnl)[0] == 0
        # B's "alpha" is B's: its one fill, its one signal
        b_alpha = (await strategies_of(stub, tenant_b))["alpha"]
        assert (b_alpha.pnl.fill_count, b_alpha.quality.prediction_count) == (1, 1)
        # one strategy only
        assert list(await strategies_of(stub, tenant_a, strategy_id="beta")) == ["beta"]

        # From tick 4 on: alpha held 2 (its two buys) before the range, taken at
        # the mid of the last tick before it (tick 3: 102). Sell 1 @ 105: +3;
        # sell 2 @ 99: -3 on the last one, then short 1 @ 99. Net 2.9, then
        # -0.2 (a fall of 3.1); the short marked at 102: -3.
        later = await strategies_of(stub, tenant_a, start_s=4)
        assert pnl(later["alpha"].pnl) == (2, D(303), D(0), D("0.2"), D("-0.2"), D(-3), D("3.1"))
        # the manual long 1 @ 100, held in from 102 to 102: nothing
        assert pnl(later[""].pnl) == (0, D(0), D(0), D(0), D(0), D(0), D(0))

        # Platform-wide (the evaluator, no tenant): A's and B's gbt predictions
        # together, at the test's hour: 4 scored, 2 hits; (0.49 + 0.81) / 4.
        store = ClickHouseAnalyticsStore(infra_settings.clickhouse, settings_for(group), database=DATABASE)
        try:
            evaluator = ModelEvaluator(
                store,
                settings_for(group).model_copy(update={"evaluation_horizon_ticks": HORIZON}),
                clock_ns=lambda: (BASE_S + 60) * NS,
            )
            shown = await evaluator.run_once()
        finally:
            await store.close()
        assert (shown[("gbt", "v1")].scored_count, shown[("gbt", "v1")].hit_rate) == (4, D("0.5"))
        labels = {"model_id": "gbt", "model_version": "v1", "horizon_ticks": str(HORIZON)}
        assert REGISTRY.get_sample_value("trading_model_signal_hit_ratio", labels) == 0.5
        assert REGISTRY.get_sample_value("trading_model_brier_score", labels) == 0.325
        assert REGISTRY.get_sample_value("trading_model_scored_predictions", labels) == 4

        before = (await models_of(stub, tenant_a), await strategies_of(stub, tenant_a))

    # Redelivery: every signal published again (same event ids), read by the
    # same group: nothing is counted twice.
    await publisher.publish_many(signal_events)
    async with analytics(infra_settings, settings_for(group), database=DATABASE) as stub:
        await eventually(lambda: caught_up(infra_settings, group), what="the redelivered signals read")
        after = (await models_of(stub, tenant_a), await strategies_of(stub, tenant_a))
    assert {k: v.SerializeToString(deterministic=True) for k, v in after[0].items()} == {
        k: v.SerializeToString(deterministic=True) for k, v in before[0].items()
    }
    assert {k: v.SerializeToString(deterministic=True) for k, v in after[1].items()} == {
        k: v.SerializeToString(deterministic=True) for k, v in before[1].items()
    }
