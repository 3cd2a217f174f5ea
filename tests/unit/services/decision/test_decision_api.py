"""The DecisionService servicer on the in-memory adapters: strategies
(versioned, announced, per tenant), the loaded models, the signals the engine
recorded with their intents' status now, and the refusals, each with the
status the contract names."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from trading.common.v1 import decimal_pb2
from trading.decision.v1 import decision_service_pb2 as pb
from trading.decision.v1 import events_pb2

from runtime import paging
from runtime.errors import ServiceError
from runtime.messaging import decode_envelope
from services.decision.adapters.memory import (
    MemoryInstrumentDirectory,
    MemorySignalStore,
    MemoryStrategyStore,
)
from services.decision.api import DecisionApi, strategy_updated_rows
from services.decision.domain import FEATURE_NAMES
from services.decision.inference import Ensemble
from services.decision.models import LoadedModel, ModelMetadata
from services.decision.ports import NewSignal, PendingOrder, SignalFilter
from tests.support.servicers import AbortedCall, as_caller, expect_error, servicer_context

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
READ, WRITE = "strategies:read", "strategies:write"
MODELS = {
    "gbt-trend": "GRADIENT_BOOSTING",
    "logreg-trend": "LOGISTIC_REGRESSION",
    "analog-knn": "NEAREST_NEIGHBORS",
}


class Half:
    """An estimator that always says even odds (ListModels never runs it)."""

    def predict_proba(self, x: Any) -> Any:
        return np.tile([0.5, 0.5], (len(x), 1))


def _model(model_id: str, kind: str) -> LoadedModel:
    meta = ModelMetadata(
        model_id=model_id, kind=kind, version="2026-11-30.1", trained_at="2026-11-30T08:00:00+00:00",
        feature_names=list(FEATURE_NAMES), feature_set_version="v1", training_samples=1000,
        metrics={"balanced_accuracy": 0.6}, artifact_sha256="ab" * 32, description=f"{model_id} for tests",
    )  # fmt: skip
    return LoadedModel(meta, Half(), Path("/nonexistent"))


class Desk:
    """The servicer on in-memory stores, an instrument universe and loaded models."""

    def __init__(self) -> None:
        self.strategies = MemoryStrategyStore(announce=strategy_updated_rows)
        self.signals = MemorySignalStore()
        self.instruments = MemoryInstrumentDirectory()
        self.ensemble = Ensemble(
            {m: _model(m, kind) for m, kind in MODELS.items()}, budget_s=0.05, threads=True
        )
        self.changed: list[str] = []
        self.now = NOW
        self.api = DecisionApi(
            self.strategies,
            self.signals,
            self.ensemble,
            self.instruments,
            self._changed,
            clock=lambda: self.now,
        )

    async def _changed(self, tenant: str) -> None:
        self.changed.append(tenant)

    async def set(self, tenant: str, strategy_id: str = "momentum", **changes: Any) -> pb.SetStrategyResponse:
        expected_version = changes.pop("expected_version", 0)
        request = pb.SetStrategyRequest(
            strategy_id=strategy_id, spec=spec(**changes), expected_version=expected_version
        )
        with as_caller(tenant, subject="user-1", scopes=[WRITE]):
            return await self.api.SetStrategy(request, context())


def spec(**changes: Any) -> pb.StrategySpec:
    fields: dict[str, Any] = {
        "name": "momentum",
        "symbols": ["BTC-USD"],
        "enabled": True,
        "max_position": decimal_pb2.Decimal(value="10"),
        "sizing": pb.OrderSizing(fixed_quantity=decimal_pb2.Decimal(value="0.5")),
        "model_ids": ["gbt-trend", "logreg-trend"],
        "signal_threshold": 0.3,
    }
    fields.update(changes)
    return pb.StrategySpec(**fields)


@pytest.fixture
async def desk() -> AsyncIterator[Desk]:
    desk = Desk()
    yield desk
    desk.ensemble.close()


def context() -> grpc.aio.ServicerContext[Any, Any]:
    """A fresh recorded context (tests/support/servicers.py), as the servicer's parameter is typed."""
    return servicer_context()


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def reason(error: ServiceError | AbortedCall) -> str:
    """The ErrorInfo reason of a refusal."""
    assert isinstance(error, ServiceError)
    for detail in error.status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def violations(error: ServiceError | AbortedCall) -> dict[str, str]:
    """The BadRequest field violations of a refusal: field -> reason."""
    assert isinstance(error, ServiceError)
    out: dict[str, str] = {}
    for detail in error.status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out.update({v.field: v.reason for v in bad.field_violations})
    return out


# ---------------------------------------------------------------- strategies


async def test_a_new_strategy_is_created_announced_and_read_back(desk: Desk) -> None:
    tenant = new_tenant()
    created = await desk.set(tenant, cooldown=duration_pb2.Duration(seconds=30))
    assert created.created is True
    strategy = created.strategy
    assert (strategy.strategy_id, strategy.version, strategy.updated_by) == ("momentum", 1, "user-1")
    assert strategy.spec.max_position.value == "10" and strategy.spec.sizing.fixed_quantity.value == "0.5"
    assert strategy.spec.cooldown.ToMilliseconds() == 30_000
    assert strategy.created_at.ToDatetime(tzinfo=UTC) == NOW
    assert desk.changed == [tenant]  # the strategy cache reloads the tenant
    [row] = desk.strategies.outbox
    envelope = decode_envelope(row.envelope)
    announced = events_pb2.StrategyUpdated()
    envelope.payload.Unpack(announced)
    assert (envelope.tenant_id, announced.previous_version, announced.strategy.version) == (tenant, 0, 1)
    with as_caller(tenant, scopes=[READ]):
        got = await desk.api.GetStrategy(pb.GetStrategyRequest(strategy_id="momentum"), context())
    assert got.strategy == strategy


async def test_setting_the_same_spec_again_changes_nothing(desk: Desk) -> None:
    tenant = new_tenant()
    first = await desk.set(tenant)
    desk.now = NOW + timedelta(minutes=5)
    again = await desk.set(tenant, expected_version=1)
    assert again.created is False
    assert again.strategy == first.strategy  # same version, same updated_at
    assert desk.changed == [tenant] and len(desk.strategies.outbox) == 1


async def test_a_change_makes_the_next_version_and_needs_the_current_one(desk: Desk) -> None:
    tenant = new_tenant()
    await desk.set(tenant)
    desk.now = NOW + timedelta(minutes=5)
    changed = await desk.set(tenant, expected_version=1, signal_threshold=0.6)
    assert (changed.created, changed.strategy.version) == (False, 2)
    assert changed.strategy.updated_at.ToDatetime(tzinfo=UTC) == desk.now
    assert changed.strategy.created_at.ToDatetime(tzinfo=UTC) == NOW
    stale = await expect_error(
        desk.set(tenant, expected_version=1, signal_threshold=0.9), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert reason(stale) == "STRATEGY_VERSION_MISMATCH"
    assert len(desk.strategies.outbox) == 2


async def test_a_spec_naming_unloaded_models_or_unlisted_symbols_is_invalid(desk: Desk) -> None:
    tenant = new_tenant()
    # Before marketdata ever published its universe, symbols are not checked.
    assert (await desk.set(tenant, "early", symbols=["ANY-USD"])).created
    desk.instruments.publish(["BTC-USD", "ETH-USD"])
    refused = await expect_error(
        desk.set(tenant, symbols=["BTC-USD", "NOPE-USD"], model_ids=["gbt-trend", "no-such-model"]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(refused) == {
        "spec.model_ids[1]": "MODEL_NOT_LOADED",
        "spec.symbols[1]": "UNKNOWN_SYMBOL",
    }
    with as_caller(tenant, scopes=[READ]):
        await expect_error(
            desk.api.GetStrategy(pb.GetStrategyRequest(strategy_id="momentum"), context()),
            grpc.StatusCode.NOT_FOUND,
        )
    assert desk.changed == [tenant]  # the early one only


async def test_a_tenant_never_sees_or_changes_another_tenants_strategies(desk: Desk) -> None:
    a, b = new_tenant(), new_tenant()
    await desk.set(a)
    with as_caller(b, scopes=[READ, WRITE]):
        missing = await expect_error(
            desk.api.GetStrategy(pb.GetStrategyRequest(strategy_id="momentum"), context()),
            grpc.StatusCode.NOT_FOUND,
        )
        listed = await desk.api.ListStrategies(pb.ListStrategiesRequest(), context())
        await expect_error(
            desk.api.SetStrategyEnabled(
                pb.SetStrategyEnabledRequest(strategy_id="momentum", enabled=False), context()
            ),
            grpc.StatusCode.NOT_FOUND,
        )
    assert reason(missing) == "STRATEGY_NOT_FOUND"
    assert list(listed.strategies) == []
    # B's own strategy of the same id is B's, version 1.
    assert (await desk.set(b, name="b's")).strategy.version == 1
    with as_caller(a, scopes=[READ]):
        mine = await desk.api.GetStrategy(pb.GetStrategyRequest(strategy_id="momentum"), context())
    assert (mine.strategy.spec.name, mine.strategy.spec.enabled) == ("momentum", True)


async def test_strategies_are_listed_in_pages_by_id_and_filtered(desk: Desk) -> None:
    tenant = new_tenant()
    for sid, symbols, enabled in [
        ("c", ["ETH-USD"], True),
        ("a", ["BTC-USD"], True),
        ("d", ["BTC-USD"], False),
        ("b", ["BTC-USD", "ETH-USD"], True),
    ]:
        await desk.set(tenant, sid, symbols=symbols, enabled=enabled)
    with as_caller(tenant, scopes=[READ]):
        first = await desk.api.ListStrategies(pb.ListStrategiesRequest(page_size=3), context())
        rest = await desk.api.ListStrategies(
            pb.ListStrategiesRequest(page_size=3, page_token=first.next_page_token), context()
        )
        btc = await desk.api.ListStrategies(
            pb.ListStrategiesRequest(symbol="BTC-USD", enabled_only=True), context()
        )
        await expect_error(
            desk.api.ListStrategies(pb.ListStrategiesRequest(page_token="garbage"), context()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    assert [s.strategy_id for s in first.strategies] == ["a", "b", "c"] and first.next_page_token
    assert [s.strategy_id for s in rest.strategies] == ["d"] and rest.next_page_token == ""
    assert [s.strategy_id for s in btc.strategies] == ["a", "b"]


async def test_enabling_bumps_the_version_once_and_needs_the_current_one(desk: Desk) -> None:
    tenant = new_tenant()
    await desk.set(tenant)

    async def enable(enabled: bool, expected_version: int = 0) -> pb.SetStrategyEnabledResponse:
        request = pb.SetStrategyEnabledRequest(
            strategy_id="momentum", enabled=enabled, expected_version=expected_version
        )
        with as_caller(tenant, subject="user-2", scopes=[WRITE]):
            return await desk.api.SetStrategyEnabled(request, context())

    desk.now = NOW + timedelta(minutes=1)
    disabled = await enable(False, expected_version=1)
    assert (disabled.strategy.version, disabled.strategy.spec.enabled, disabled.strategy.updated_by) == (
        2,
        False,
        "user-2",
    )
    assert (await enable(False)).strategy == disabled.strategy  # already disabled: no new version
    stale = await expect_error(enable(True, expected_version=1), grpc.StatusCode.FAILED_PRECONDITION)
    assert reason(stale) == "STRATEGY_VERSION_MISMATCH"
    assert desk.changed == [tenant, tenant] and len(desk.strategies.outbox) == 2


# ---------------------------------------------------------------- models


async def test_the_loaded_models_are_listed_by_id_in_pages_and_by_kind(desk: Desk) -> None:
    with as_caller(new_tenant(), scopes=[READ]):
        first = await desk.api.ListModels(pb.ListModelsRequest(page_size=2), context())
        rest = await desk.api.ListModels(
            pb.ListModelsRequest(page_size=2, page_token=first.next_page_token), context()
        )
        boosted = await desk.api.ListModels(
            pb.ListModelsRequest(kind=pb.MODEL_KIND_GRADIENT_BOOSTING), context()
        )
    assert [m.model_id for m in first.models] == ["analog-knn", "gbt-trend"]
    assert [m.model_id for m in rest.models] == ["logreg-trend"] and rest.next_page_token == ""
    [model] = boosted.models
    assert (model.model_id, model.version, model.training_samples) == ("gbt-trend", "2026-11-30.1", 1000)
    assert model.metrics["balanced_accuracy"] == 0.6 and list(model.feature_names) == list(FEATURE_NAMES)


# ---------------------------------------------------------------- signals


async def _record(
    desk: Desk, tenant: str, at: datetime, *, intent: bool, symbol: str = "BTC-USD"
) -> NewSignal:
    """A signal as the engine records it (its payload is the Signal as generated)."""
    signal_id = str(uuid.uuid4())
    message = pb.Signal(
        signal_id=signal_id,
        strategy_id="momentum",
        symbol=symbol,
        direction=pb.SIGNAL_DIRECTION_BUY if intent else pb.SIGNAL_DIRECTION_HOLD,
        client_order_id=f"dc-{signal_id}" if intent else "",
        intent_status=pb.INTENT_STATUS_PENDING if intent else pb.INTENT_STATUS_UNSPECIFIED,
    )
    message.generated_at.FromDatetime(at)
    new = NewSignal(
        signal_id=signal_id,
        vector_key=signal_id,
        strategy_id="momentum",
        symbol=symbol,
        direction=int(message.direction),
        generated_at=at,
        client_order_id=message.client_order_id,
        side=1 if intent else 0,
        quantity=D("0.5") if intent else None,
        payload=message.SerializeToString(),
    )
    await desk.signals.record(tenant, [new])
    return new


async def test_signals_come_newest_first_in_pages_with_their_intents_status_now(desk: Desk) -> None:
    tenant = new_tenant()
    held = await _record(desk, tenant, NOW - timedelta(seconds=3), intent=False)
    placed = await _record(desk, tenant, NOW - timedelta(seconds=2), intent=True)
    pending = await _record(desk, tenant, NOW - timedelta(seconds=1), intent=True, symbol="ETH-USD")
    order = PendingOrder(placed.signal_id, "momentum", "BTC-USD", placed.client_order_id, 1, D("0.5"), b"")
    assert await desk.signals.order_placed(tenant, order, "o-1", D("0.5"))
    with as_caller(tenant, scopes=[READ]):
        first = await desk.api.GetSignals(pb.GetSignalsRequest(page_size=2), context())
        rest = await desk.api.GetSignals(
            pb.GetSignalsRequest(page_size=2, page_token=first.next_page_token), context()
        )
        btc = await desk.api.GetSignals(pb.GetSignalsRequest(symbol="BTC-USD"), context())
    assert [(s.signal_id, s.intent_status) for s in first.signals] == [
        (pending.signal_id, pb.INTENT_STATUS_PENDING),
        (placed.signal_id, pb.INTENT_STATUS_PLACED),  # stored as PENDING; read as it stands now
    ]
    assert [(s.signal_id, s.intent_status) for s in rest.signals] == [
        (held.signal_id, pb.INTENT_STATUS_UNSPECIFIED)
    ]
    assert rest.next_page_token == ""
    assert [s.signal_id for s in btc.signals] == [placed.signal_id, held.signal_id]


async def test_a_tenant_never_sees_another_tenants_signals(desk: Desk) -> None:
    a, b = new_tenant(), new_tenant()
    await _record(desk, a, NOW, intent=True)
    with as_caller(b, scopes=[READ]):
        got = await desk.api.GetSignals(pb.GetSignalsRequest(), context())
    assert list(got.signals) == [] and got.next_page_token == ""
    assert len(await desk.signals.page(a, where=SignalFilter(), before=None, limit=9)) == 1


async def test_a_signal_page_token_not_issued_here_is_invalid(desk: Desk) -> None:
    # Garbage, and a well-formed token of another listing (ListStrategies').
    with as_caller(new_tenant(), scopes=[READ]):
        for token in ["garbage", paging.encode_token({"after": "momentum"})]:
            await expect_error(
                desk.api.GetSignals(pb.GetSignalsRequest(page_token=token), context()),
                grpc.StatusCode.INVALID_ARGUMENT,
            )


# ---------------------------------------------------------------- market memory


async def test_similar_states_without_a_market_memory_are_a_failed_precondition(desk: Desk) -> None:
    with as_caller(new_tenant(), scopes=[READ]):
        refused = await expect_error(
            desk.api.FindSimilarStates(pb.FindSimilarStatesRequest(symbol="BTC-USD"), context()),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
    assert reason(refused) == "MARKET_STATE_UNKNOWN"
