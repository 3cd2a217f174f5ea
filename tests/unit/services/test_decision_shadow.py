"""Shadow mode: a candidate version scored beside the live model on the same
vectors, counted and logged, never traded. The engine runs with in-memory
stand-ins for its stores, execution and delegations (no servers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import REGISTRY
from trading.decision.v1 import decision_service_pb2 as pb
from trading.execution.v1 import execution_service_pb2 as exec_pb
from trading.execution.v1 import types_pb2 as exec_types

from runtime.messaging import Event
from runtime.messaging.base import Delivery, Transport
from runtime.messaging.envelope import new_envelope
from services.decision.adapters.memory import MemorySignalStore, MemoryStrategyStore
from services.decision.domain import FEATURE_NAMES, Direction, ModelResult, Outcome, Side
from services.decision.engine import DecisionEngine, StrategyCache
from services.decision.inference import Ensemble, ShadowScorer
from services.decision.models import LoadedModel, ModelMetadata
from services.decision.ports import NewSignal, PendingOrder, PositionState, StrategyRow
from services.features.domain import FeatureConfig, FeatureVector
from tests.support.polling import eventually

VERSION = FeatureConfig().version
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


class Const:
    """A model answering a fixed probability of a rise (counts its calls)."""

    def __init__(self, p_up: float) -> None:
        self.p_up = p_up
        self.rows = 0

    def predict_proba(self, x: Any) -> Any:
        self.rows += len(x)
        return np.tile([1 - self.p_up, self.p_up], (len(x), 1))


def _model(model_id: str, version: str, estimator: Any) -> LoadedModel:
    meta = ModelMetadata(
        model_id=model_id, kind="GRADIENT_BOOSTING", version=version, trained_at=T0.isoformat(),
        feature_names=list(FEATURE_NAMES), feature_set_version=VERSION, training_samples=1, metrics={},
        artifact_sha256="",
    )  # fmt: skip
    return LoadedModel(meta, estimator, Path("/nonexistent"))


def _vector(sequence: int, symbol: str = "BTC-USD") -> FeatureVector:
    return FeatureVector(
        symbol=symbol, as_of=T0, tick_sequence=sequence, feature_set_version=VERSION, tick_count=500,
        warmed_up=True, mid_price=Decimal("60000"), spread=Decimal("12"), vwap=Decimal("60000"),
        ema_fast=Decimal("60001"), ema_slow=Decimal("60000"), log_return=1e-4, window_return=5e-4, rsi=60.0,
        volatility=1e-4, order_book_imbalance=0.1, spread_bps=2.0, ema_crossover=1e-5,
    )  # fmt: skip


def _event(sequence: int) -> Event:
    payload = _vector(sequence).to_event(T0)
    envelope = new_envelope(payload, tenant_id="", correlation_id=f"c-{sequence}", producer="features")
    return Event(envelope, payload, {}, Delivery(Transport.NATS, f"features.vectors.{payload.symbol}"))


class _Strategies(MemoryStrategyStore):
    def __init__(self, rows: dict[str, list[StrategyRow]]) -> None:
        self.rows = rows

    async def tenants(self) -> list[str]:
        return sorted(self.rows)

    async def enabled(self, tenant_id: str) -> list[StrategyRow]:
        return self.rows.get(tenant_id, [])


class _Signals(MemorySignalStore):
    """Records in memory; every intent is new."""

    def __init__(self) -> None:
        self.signals: list[NewSignal] = []

    async def book(self, tenant_id: str, strategy_ids: Any, symbol: str, *args: Any, **kwargs: Any) -> Any:
        return {}, {}

    async def positions(self, tenant_id: str, strategy_ids: Any, symbol: str) -> dict[str, PositionState]:
        return {}

    async def record(self, tenant_id: str, signals: Any) -> tuple[list[NewSignal], list[PendingOrder]]:
        self.signals += signals
        pending = [
            PendingOrder(s.signal_id, s.strategy_id, s.symbol, s.client_order_id, s.side, s.quantity, b"")
            for s in signals
            if s.client_order_id
        ]
        return list(signals), pending

    async def record_batch(self, tenant_id: str, signals: Any) -> set[str]:
        self.signals += signals
        return {s.vector_key for s in signals}

    async def order_placed(
        self, tenant_id: str, order: PendingOrder, order_id: str, signed_fill: Decimal
    ) -> bool:
        return True


class _Execution:
    def __init__(self) -> None:
        self.placed: list[exec_pb.PlaceOrderRequest] = []

    async def PlaceOrder(
        self, request: exec_pb.PlaceOrderRequest, timeout: float
    ) -> exec_pb.PlaceOrderResponse:
        self.placed.append(request)
        order = exec_types.Order(order_id=f"o-{len(self.placed)}", filled_quantity=request.quantity)
        return exec_pb.PlaceOrderResponse(order=order)


class _Delegations:
    async def get(self, tenant_id: str, purpose: str) -> str:
        return "delegation"


def _strategy() -> StrategyRow:
    return StrategyRow(
        tenant_id="t1", strategy_id="s1", name="n", description="", symbols=("BTC-USD",), enabled=True,
        max_position=Decimal(1), fixed_quantity=Decimal("0.01"), model_ids=("m",), signal_threshold=0.2,
        cooldown_ms=0, version=1, created_at=T0, updated_at=T0, updated_by="u",
    )  # fmt: skip


def _count(model: str, version: str, result: str) -> float:
    labels = {"model": model, "shadow_version": version, "result": result}
    return REGISTRY.get_sample_value("trading_decision_shadow_predictions_total", labels) or 0.0


async def _engine(
    live_p_up: float, shadow_p_up: float, shadow_version: str
) -> tuple[DecisionEngine, _Execution, _Signals, ShadowScorer, Ensemble]:
    cache = StrategyCache(_Strategies({"t1": [_strategy()]}), refresh_s=3600)
    await cache.reload()
    ensemble = Ensemble({"m": _model("m", "2026-01-01.1", Const(live_p_up))}, budget_s=1.0, threads=True)
    shadow = ShadowScorer({"m": _model("m", shadow_version, Const(shadow_p_up))})
    execution, signals = _Execution(), _Signals()
    engine = DecisionEngine(
        ensemble=ensemble, strategies=cache, signals=signals, execution=execution, delegations=_Delegations(),
        place_timeout_s=1.0, clock=lambda: T0, signal_flush_s=0.01, shadow=shadow,
    )  # fmt: skip
    engine.start()
    return engine, execution, signals, shadow, ensemble


async def _settled(engine: DecisionEngine, shadow_answers: Callable[[], float], want: int) -> None:
    await engine.drain(5.0)

    async def answered() -> bool:  # the shadow answers on its own thread, after the decision
        return shadow_answers() >= want

    await eventually(answered, 5.0, f"{want} shadow answers", interval=0.01)


async def test_a_shadow_that_would_trade_places_no_order() -> None:
    """Live says hold (score 0); the shadow says buy hard: nothing is placed."""
    engine, execution, signals, shadow, ensemble = await _engine(0.5, 0.99, "2026-01-01.2")
    before = _count("m", "2026-01-01.2", "disagree")
    estimator = shadow.models["m"].estimator
    assert isinstance(estimator, Const)
    try:
        for sequence in range(1, 6):
            await engine.decide(_event(sequence), 0.0)
        await _settled(engine, lambda: _count("m", "2026-01-01.2", "disagree") - before, 5)
    finally:
        ensemble.close()
        shadow.close()
    assert execution.placed == []
    assert estimator.rows == 5  # it did score every vector
    assert _count("m", "2026-01-01.2", "disagree") - before == 5
    # The signals carry the live version's score only.
    assert len(signals.signals) == 5
    for s in signals.signals:
        message = pb.Signal.FromString(s.payload)
        assert [(m.model_id, m.model_version) for m in message.model_scores] == [("m", "2026-01-01.1")]
        assert message.direction == int(Direction.HOLD) and not s.client_order_id


async def test_orders_follow_the_live_model_whatever_the_shadow_says() -> None:
    """Live says buy; the shadow says sell: one BUY per vector, as without a shadow."""
    engine, execution, _, shadow, ensemble = await _engine(0.9, 0.05, "2026-01-01.3")
    before = _count("m", "2026-01-01.3", "disagree")
    try:
        for sequence in range(1, 4):
            await engine.decide(_event(sequence), 0.0)
        await _settled(engine, lambda: _count("m", "2026-01-01.3", "disagree") - before, 3)
    finally:
        ensemble.close()
        shadow.close()
    assert [r.side for r in execution.placed] == [int(Side.BUY)] * 3
    assert all(r.client_order_id.startswith("dc-") for r in execution.placed)
    assert _count("m", "2026-01-01.3", "disagree") - before == 3


async def test_the_shadow_scores_only_beside_a_live_answer() -> None:
    shadow = ShadowScorer({"m": _model("m", "2026-01-01.4", Const(0.8)), "x": _model("x", "1", Const(0.8))})
    ok = ModelResult("m", "2026-01-01.1", Outcome.OK, score=0.5)
    try:
        before = _count("m", "2026-01-01.4", "agree")
        assert shadow.observe(_vector(1), {"m": ok}) == 1  # "x" has no live answer on it
        assert shadow.observe(_vector(2), {"m": replace(ok, outcome=Outcome.TIMEOUT)}) == 0
        assert shadow.observe(_vector(3)._replace(feature_set_version="v0"), {"m": ok}) == 0

        async def answered() -> bool:
            return _count("m", "2026-01-01.4", "agree") - before >= 1

        await eventually(answered, 5.0, "the shadow's answer", interval=0.01)
        buckets = REGISTRY.get_sample_value("trading_decision_shadow_score_difference_count", {"model": "m"})
        assert buckets is not None and buckets >= 1
    finally:
        shadow.close()


def test_observe_returns_without_waiting_for_the_shadow() -> None:
    """observe only hands the row over: a hung shadow costs the caller nothing."""

    class Hung:
        def predict_proba(self, x: Any) -> Any:
            time.sleep(0.5)
            return np.tile([0.5, 0.5], (len(x), 1))

    async def run() -> float:
        shadow = ShadowScorer({"m": _model("m", "2", Hung())})
        ok = ModelResult("m", "1", Outcome.OK, score=0.5)
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for sequence in range(20):
                shadow.observe(_vector(sequence), {"m": ok})
            return loop.time() - start
        finally:
            shadow.close()

    assert asyncio.run(run()) < 0.1
