"""decision over gRPC and NATS with real risk and execution, on real
PostgreSQL, Redis, NATS and tansu.

Decision places a strategy's orders under a delegation it gets from
identity (which runs too), so the tenants are real: created in identity by
the platform operator.

The test plays the features service's part: it computes real feature vectors
(the synthetic feed's generator through the real FeatureEngine) for a symbol
of its own and publishes them as FeatureVectorComputed envelopes on
``features.vectors.{symbol}``; it writes the symbol's last quote to Redis as
marketdata would, so execution's paper venue can fill. Each test has its own
tenant(s) and symbol, and the service its own NATS queue group, so runs by
colleagues on the shared servers never see each other's vectors or orders.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import grpc
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf import duration_pb2
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from trading.common.v1 import decimal_pb2, market_pb2
from trading.decision.v1 import decision_service_pb2 as pb
from trading.decision.v1 import decision_service_pb2_grpc as pb_grpc
from trading.decision.v1 import events_pb2
from trading.execution.v1 import execution_service_pb2 as exec_pb
from trading.execution.v1 import execution_service_pb2_grpc as exec_grpc
from trading.execution.v1 import types_pb2 as exec_types
from trading.features.v1 import events_pb2 as features_events
from trading.identity.v1 import identity_service_pb2 as identity_pb
from trading.identity.v1 import identity_service_pb2_grpc as identity_grpc

from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.errors import error_details
from runtime.grpc_client import ClientFactory
from runtime.messaging import Delivery, Event, Transport, decode_envelope, new_envelope, uuid7
from runtime.messaging.envelope import unpack
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsPublisher
from runtime.outbox import OutboxRelay, PostgresOutbox
from runtime.security.delegations import DelegationCache
from runtime.security.store_credentials import REDIS_ADMIN, open_redis
from runtime.storage.postgres import tenant_transaction
from services.decision import models
from services.decision.adapters.postgres import PostgresSignalStore, PostgresStrategyStore
from services.decision.engine import VECTOR_EVENT, DecisionEngine, IntentSweeper, StrategyCache
from services.decision.inference import Ensemble
from services.decision.main import make_spec
from services.decision.ports import NewSignal
from services.decision.settings import DecisionSettings, TrainingSettings
from services.decision.signal_writer import QueuedSignal, SignalWriter
from services.execution.main import SPEC as EXECUTION
from services.features.domain import FeatureEngine, Tick
from services.identity.main import make_spec as identity_spec
from services.identity.seed import PLATFORM_SLUG
from services.marketdata.feeds import GbmGenerator, SymbolSpec
from tests.support.gateway_stack import FAST_IDENTITY, OPERATOR_EMAIL, OPERATOR_PASSWORD
from tests.support.nats import connect_harness
from tests.support.polling import eventually
from tests.support.risk import risk_spec
from tests.support.security import service_channel, user_md
from tests.support.services import running_service

if TYPE_CHECKING:
    from trading.decision.v1.decision_service_pb2_grpc import DecisionServiceAsyncStub
    from trading.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub
    from trading.identity.v1.identity_service_pb2_grpc import IdentityServiceAsyncStub

T = TypeVar("T")
INSTRUMENTS_KEY = "md:instruments"


def D(value: str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=value)


SCOPES = ("strategies:read", "strategies:write", "orders:read")


def md(tenant: str, service: str = "decision") -> tuple[tuple[str, str], ...]:
    return user_md(service, tenant, subject="user-1", scopes=SCOPES)


async def new_tenant(identity: IdentityServiceAsyncStub) -> str:
    """A tenant that exists in identity (decision's delegations are only issued
    for those), created by the platform operator as the gateway would pass it on."""
    operator = await identity.Login(
        identity_pb.LoginRequest(tenant_slug=PLATFORM_SLUG, email=OPERATOR_EMAIL, password=OPERATOR_PASSWORD)
    )
    slug = f"t-{uuid.uuid4().hex[:10]}"
    created = await identity.CreateTenant(
        identity_pb.CreateTenantRequest(
            slug=slug, display_name=slug, admin_email=f"admin@{slug}.test", admin_password="admin-password-1"
        ),
        metadata=user_md(
            "identity", operator.tenant_id, subject=operator.user_id, scopes=["admin"], roles=["ADMIN"]
        ),
    )
    return created.tenant.tenant_id


def new_symbol() -> str:
    return f"D{uuid.uuid4().hex[:8].upper()}-USD"


def spec(symbol: str, **changes: Any) -> pb.StrategySpec:
    fields: dict[str, Any] = {
        "name": "momentum",
        "symbols": [symbol],
        "enabled": True,
        "max_position": D("10"),
        "sizing": pb.OrderSizing(fixed_quantity=D("1")),
        "model_ids": ["gbt-trend", "logreg-trend"],
        "signal_threshold": 1.0,
    }
    fields.update(changes)
    return pb.StrategySpec(**fields)


def vectors(symbol: str, n: int, seed: int = 3) -> list[features_events.FeatureVectorComputed]:
    """The last `n` (warmed-up) vectors of a synthetic feed of `symbol`."""
    gen = GbmGenerator(
        [SymbolSpec(symbol, Decimal("100"), Decimal("0.01"), Decimal("1"))],
        seed=seed, rate=6.25, volatility=0.6, drift=0.0, spread_bps=2.0,
    )  # fmt: skip
    engine = FeatureEngine()
    out = []
    now_ns = time.time_ns()
    for raw in gen.next_batch(engine.config.warm_up_ticks + n, now_ns):
        assert raw.bid_price is not None and raw.ask_price is not None
        now_ns += 1_000_000
        tick = Tick(
            symbol=symbol,
            bid=raw.bid_price,
            ask=raw.ask_price,
            bid_size=raw.bid_size or Decimal(0),
            ask_size=raw.ask_size or Decimal(0),
            last=raw.last_price or Decimal(0),
            last_size=raw.last_size or Decimal(0),
            ts=datetime.fromtimestamp(now_ns / 1e9, UTC),
            sequence=raw.sequence,
        )
        vector = engine.update(tick)
        if vector is not None and vector.warmed_up:
            out.append(vector.to_event(datetime.now(UTC)))
    return out[-n:]


DUPLICATES = "trading_decision_duplicate_vectors_total"


async def _true(condition: bool) -> bool | None:
    return condition or None


async def _counted(metric: str, at_least: float) -> bool | None:
    """True once the in-process Prometheus counter reached `at_least`."""
    return (REGISTRY.get_sample_value(metric) or 0.0) >= at_least or None


def _decision_counters() -> str:
    """Where vectors went, for a failure message."""
    names = (
        DUPLICATES,
        "trading_decision_shed_vectors_total",
        "trading_decision_vector_failures_total",
    )
    return ", ".join(f"{n}={REGISTRY.get_sample_value(n) or 0:g}" for n in names)


@dataclass
class Platform:
    decision: DecisionServiceAsyncStub
    execution: ExecutionServiceAsyncStub
    redis: Redis
    nats: NatsClient
    symbols: list[str]
    execution_address: str
    identity: IdentityServiceAsyncStub
    identity_address: str

    async def tenant(self) -> str:
        return await new_tenant(self.identity)

    async def symbol(self) -> str:
        """A fresh instrument: registered where marketdata would, with a quote."""
        symbol = new_symbol()
        self.symbols.append(symbol)
        await self.redis.sadd(INSTRUMENTS_KEY, symbol)
        quote = market_pb2.Quote(
            symbol=symbol, bid_price=D("99"), bid_size=D("50"), ask_price=D("100"), ask_size=D("50"),
            sequence=1, source="test",
        )  # fmt: skip
        quote.exchange_time.FromDatetime(datetime.now(UTC))
        quote.receive_time.FromDatetime(datetime.now(UTC))
        await self.redis.set(f"md:quote:{symbol}", quote.SerializeToString(), ex=600)
        return symbol

    async def publish(self, event: features_events.FeatureVectorComputed, envelope: Any = None) -> Any:
        envelope = envelope or new_envelope(event, tenant_id="", correlation_id="test", producer="features")
        await self.nats.publish(f"features.vectors.{event.symbol}", envelope.SerializeToString())
        await self.nats.flush()
        return envelope

    async def set(self, tenant: str, strategy_id: str, s: pb.StrategySpec, expected: int = 0) -> Any:
        request = pb.SetStrategyRequest(strategy_id=strategy_id, spec=s, expected_version=expected)
        return await self.decision.SetStrategy(request, metadata=md(tenant))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the service trains its models at start (and the engine-level tests load them)."""
    return tmp_path_factory.mktemp("models")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(infra_settings: Settings, model_dir: Path) -> AsyncIterator[Platform]:
    decision_spec = make_spec(
        DecisionSettings(model_dir=model_dir, inference_budget_ms=500, strategy_refresh_s=0.5),
        TrainingSettings(ticks_per_symbol=4000, symbols=["BTC-USD", "AAPL", "ETH-USD"], seed=11),
        queue=f"decision-test-{uuid.uuid4().hex[:8]}",
    )
    redis = open_redis(infra_settings, REDIS_ADMIN)
    nc = await connect_harness(infra_settings)
    symbols: list[str] = []
    try:
        async with (
            running_service(identity_spec(FAST_IDENTITY), infra_settings) as identity_address,
            running_service(risk_spec(), infra_settings) as risk_address,
        ):
            with_risk = infra_settings.model_copy(update={"service_addresses": {"risk": risk_address}})
            async with running_service(EXECUTION, with_risk) as execution_address:
                addresses = {
                    "identity": identity_address,
                    "risk": risk_address,
                    "execution": execution_address,
                }
                settings = infra_settings.model_copy(update={"service_addresses": addresses})
                async with (
                    running_service(decision_spec, settings) as address,
                    service_channel(address, "decision") as channel,
                    service_channel(execution_address, "execution") as exec_channel,
                    service_channel(identity_address, "identity") as identity_channel,
                ):
                    yield Platform(
                        pb_grpc.DecisionServiceStub(channel),
                        exec_grpc.ExecutionServiceStub(exec_channel),
                        redis,
                        nc,
                        symbols,
                        execution_address,
                        identity_grpc.IdentityServiceStub(identity_channel),
                        identity_address,
                    )
    finally:
        if symbols:
            await redis.srem(INSTRUMENTS_KEY, *symbols)
        await nc.close()
        await redis.aclose()


# ---------------------------------------------------------------------------- strategies


async def test_strategies_round_trip_with_versions_and_tenant_isolation(platform: Platform) -> None:
    a, b, symbol = await platform.tenant(), await platform.tenant(), await platform.symbol()
    cooldown = duration_pb2.Duration(seconds=5)
    created = await platform.set(a, "btc-momentum", spec(symbol, cooldown=cooldown, enabled=False))
    assert created.created and created.strategy.version == 1
    s = created.strategy
    assert (s.spec.max_position.value, s.spec.sizing.fixed_quantity.value, s.updated_by) == (
        "10",
        "1",
        "user-1",
    )
    assert s.spec.cooldown.seconds == 5 and not s.spec.enabled

    same = await platform.set(a, "btc-momentum", spec(symbol, cooldown=cooldown, enabled=False))
    assert not same.created and same.strategy.version == 1  # unchanged: no bump
    changed = await platform.set(a, "btc-momentum", spec(symbol, signal_threshold=0.5), expected=1)
    assert changed.strategy.version == 2 and changed.strategy.spec.signal_threshold == 0.5

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await platform.set(a, "btc-momentum", spec(symbol), expected=1)
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error_details(stale.value)
    assert details.error_info is not None and details.error_info.reason == "STRATEGY_VERSION_MISMATCH"

    enabled = await platform.decision.SetStrategyEnabled(
        pb.SetStrategyEnabledRequest(strategy_id="btc-momentum", enabled=False), metadata=md(a)
    )
    assert enabled.strategy.version == 3 and not enabled.strategy.spec.enabled
    got = await platform.decision.GetStrategy(
        pb.GetStrategyRequest(strategy_id="btc-momentum"), metadata=md(a)
    )
    assert got.strategy == enabled.strategy

    # Tenant B sees nothing of A's and cannot change it.
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await platform.decision.GetStrategy(pb.GetStrategyRequest(strategy_id="btc-momentum"), metadata=md(b))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as hidden_toggle:
        await platform.decision.SetStrategyEnabled(
            pb.SetStrategyEnabledRequest(strategy_id="btc-momentum", enabled=True), metadata=md(b)
        )
    assert hidden_toggle.value.code() == grpc.StatusCode.NOT_FOUND
    listed_b = await platform.decision.ListStrategies(pb.ListStrategiesRequest(), metadata=md(b))
    assert list(listed_b.strategies) == []
    # B may use the same id for its own strategy; A's stays as it was.
    await platform.set(b, "btc-momentum", spec(symbol, name="other"))
    again = await platform.decision.GetStrategy(
        pb.GetStrategyRequest(strategy_id="btc-momentum"), metadata=md(a)
    )
    assert again.strategy == enabled.strategy

    # Paging and filters.
    for i in range(3):
        await platform.set(a, f"s{i}", spec(symbol, enabled=i != 1))
    first = await platform.decision.ListStrategies(pb.ListStrategiesRequest(page_size=2), metadata=md(a))
    rest = await platform.decision.ListStrategies(
        pb.ListStrategiesRequest(page_size=2, page_token=first.next_page_token), metadata=md(a)
    )
    ids = [s.strategy_id for s in [*first.strategies, *rest.strategies]]
    assert ids == ["btc-momentum", "s0", "s1", "s2"] and rest.next_page_token == ""
    only_on = await platform.decision.ListStrategies(
        pb.ListStrategiesRequest(enabled_only=True, symbol=symbol), metadata=md(a)
    )
    assert [s.strategy_id for s in only_on.strategies] == ["s0", "s2"]


async def test_bad_strategies_are_refused_and_change_nothing(platform: Platform) -> None:
    tenant, symbol = await platform.tenant(), await platform.symbol()
    cases = {
        "spec.model_ids[1]": spec(symbol, model_ids=["gbt-trend", "no-such-model"]),
        "spec.symbols[0]": spec(f"Z{uuid.uuid4().hex[:6].upper()}"),
        "spec.max_position": spec(symbol, max_position=D("-1")),
        "spec.signal_threshold": spec(symbol, signal_threshold=0.0),
    }
    for field, bad in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await platform.set(tenant, "bad", bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in error_details(err.value).violated_fields, (field, error_details(err.value))
    with pytest.raises(grpc.aio.AioRpcError) as creating_with_version:
        await platform.set(tenant, "bad", spec(symbol), expected=3)
    assert creating_with_version.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as no_tenant:
        await platform.decision.ListStrategies(pb.ListStrategiesRequest())
    assert no_tenant.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as token:
        await platform.decision.GetSignals(pb.GetSignalsRequest(page_token="garbage!"), metadata=md(tenant))
    assert token.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await platform.decision.ListStrategies(pb.ListStrategiesRequest(), metadata=md(tenant))
    assert list(listed.strategies) == []


async def test_list_models_shows_the_trained_models(platform: Platform) -> None:
    tenant = await platform.tenant()
    reply = await platform.decision.ListModels(pb.ListModelsRequest(), metadata=md(tenant))
    by_id = {m.model_id: m for m in reply.models}
    assert list(by_id) == ["analog-knn", "gbt-trend", "logreg-trend"]
    assert by_id["analog-knn"].kind == pb.MODEL_KIND_NEAREST_NEIGHBORS
    assert by_id["gbt-trend"].kind == pb.MODEL_KIND_GRADIENT_BOOSTING
    assert by_id["logreg-trend"].kind == pb.MODEL_KIND_LOGISTIC_REGRESSION
    for m in reply.models:
        assert m.metrics["accuracy"] > 0.5 and len(m.artifact_sha256) == 64
        assert list(m.feature_names) and m.feature_set_version.startswith("v1:") and m.training_samples > 0
    only = await platform.decision.ListModels(
        pb.ListModelsRequest(kind=pb.MODEL_KIND_LOGISTIC_REGRESSION, page_size=1),
        metadata=md(tenant),
    )
    assert [m.model_id for m in only.models] == ["logreg-trend"] and only.next_page_token == ""


# ---------------------------------------------------------------------------- signals


async def _subscribe(nc: NatsClient, subject: str) -> tuple[list[events_pb2.SignalGenerated], Any]:
    received: list[events_pb2.SignalGenerated] = []

    async def on_msg(msg: Msg) -> None:
        envelope = decode_envelope(msg.data)
        payload = events_pb2.SignalGenerated()
        envelope.payload.Unpack(payload)
        received.append(payload)

    sub = await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return received, sub


async def test_feature_vectors_lead_to_signal_events_once_per_vector(platform: Platform) -> None:
    tenant, other, symbol = await platform.tenant(), await platform.tenant(), await platform.symbol()
    # Threshold 1: the ensemble never reaches it, so every signal is HOLD and no order is placed.
    await platform.set(tenant, "watch", spec(symbol, signal_threshold=1.0))
    await platform.set(other, "off", spec(symbol, enabled=False))
    received, sub = await _subscribe(platform.nats, f"decision.signals.{tenant}.{symbol}")
    others, other_sub = await _subscribe(platform.nats, f"decision.signals.{other}.>")
    try:
        batch = vectors(symbol, 4)
        envelopes = [await platform.publish(v) for v in batch]
        await eventually(lambda: _true(len(received) >= 4))
        # The same vector again (a redelivery): no second signal.
        duplicates = REGISTRY.get_sample_value(DUPLICATES) or 0.0
        await platform.publish(batch[-1], envelopes[-1])
        await platform.publish(batch[-1])  # and a re-publication under a new envelope
        await eventually(lambda: _counted(DUPLICATES, duplicates + 2))
        signals = await eventually(
            lambda: _signals(platform, tenant, symbol, lambda s: len(s) >= 4), timeout=10
        )
    finally:
        await sub.unsubscribe()
        await other_sub.unsubscribe()
    assert len(received) == 4 and others == []  # a disabled strategy produces nothing
    sequences = [e.signal.feature_tick_sequence for e in received]
    assert sorted(sequences) == [v.vector.tick_sequence for v in batch]
    for event in received:
        s = event.signal
        assert event.symbol == symbol == s.symbol and s.strategy_id == "watch"
        assert s.direction == pb.SIGNAL_DIRECTION_HOLD and s.client_order_id == ""
        assert -1 < s.strength < 1 and 0 <= s.confidence <= 1 and not s.fallback
        assert {(m.model_id, m.outcome) for m in s.model_scores} == {
            ("gbt-trend", pb.MODEL_OUTCOME_OK),
            ("logreg-trend", pb.MODEL_OUTCOME_OK),
        }
    # GetSignals: newest first, paged, only this tenant's.
    assert len(signals) == 4
    assert [s.signal_id for s in signals] == sorted((e.signal.signal_id for e in received), reverse=True)
    page = await platform.decision.GetSignals(
        pb.GetSignalsRequest(page_size=3, symbol=symbol), metadata=md(tenant)
    )
    rest = await platform.decision.GetSignals(
        pb.GetSignalsRequest(page_size=3, symbol=symbol, page_token=page.next_page_token), metadata=md(tenant)
    )
    assert [s.signal_id for s in [*page.signals, *rest.signals]] == [s.signal_id for s in signals]
    nothing = await platform.decision.GetSignals(pb.GetSignalsRequest(symbol=symbol), metadata=md(other))
    assert list(nothing.signals) == []


async def _signals(
    platform: Platform, tenant: str, symbol: str, done: Callable[[list[pb.Signal]], bool]
) -> list[pb.Signal] | None:
    reply = await platform.decision.GetSignals(pb.GetSignalsRequest(symbol=symbol), metadata=md(tenant))
    found = list(reply.signals)
    return found if done(found) else None


# ---------------------------------------------------------------------------- orders


async def _orders(platform: Platform, tenant: str, symbol: str) -> list[exec_types.Order]:
    reply = await platform.execution.ListOrders(
        exec_pb.ListOrdersRequest(symbol=symbol), metadata=md(tenant, "execution")
    )
    return list(reply.orders)


async def test_an_enabled_strategy_places_one_order_per_vector(
    platform: Platform, pg_pool: asyncpg.Pool
) -> None:
    tenant, symbol = await platform.tenant(), await platform.symbol()
    # A tiny threshold: every vector is a BUY or a SELL.
    await platform.set(tenant, "trader", spec(symbol, signal_threshold=0.000001, max_position=D("5")))
    latency_count = REGISTRY.get_sample_value("trading_decision_order_latency_seconds_count") or 0.0
    latency_sum = REGISTRY.get_sample_value("trading_decision_order_latency_seconds_sum") or 0.0
    (vector,) = vectors(symbol, 1, seed=5)
    envelope = await platform.publish(vector)

    orders = await eventually(lambda: _orders(platform, tenant, symbol))
    assert len(orders) == 1
    order = orders[0]
    assert order.client_order_id.startswith("dc-") and order.strategy_id == "trader"
    assert order.status == exec_types.ORDER_STATUS_FILLED and order.filled_quantity.value == "1"

    signals = await eventually(lambda: _signals(platform, tenant, symbol, lambda s: len(s) == 1))
    signal = signals[0]
    assert signal.client_order_id == order.client_order_id
    assert signal.direction in (pb.SIGNAL_DIRECTION_BUY, pb.SIGNAL_DIRECTION_SELL)
    expected_side = 1 if signal.direction == pb.SIGNAL_DIRECTION_BUY else 2
    assert order.side == expected_side

    async def position() -> Decimal | None:
        async with tenant_transaction(pg_pool, tenant) as conn:
            row = await conn.fetchrow(
                "SELECT quantity, (SELECT order_id FROM decision.signals WHERE strategy_id = 'trader')"
                " AS order_id FROM decision.positions WHERE strategy_id = 'trader'"
            )
        return row["quantity"] if row is not None and row["order_id"] else None

    sign = 1 if expected_side == 1 else -1
    assert await eventually(position) == sign * Decimal(1)

    # The same vector, redelivered (same envelope) and re-published (new envelope): no second order.
    duplicates = REGISTRY.get_sample_value(DUPLICATES) or 0.0
    await platform.publish(vector, envelope)
    await platform.publish(vector)
    # Generous: on a loaded CI machine the second decision waits for the
    # first's database round trips; the message names what did happen.
    await eventually(
        lambda: _counted(DUPLICATES, duplicates + 2),
        timeout=45,
        what=lambda: f"two duplicates counted (from {duplicates}; now {_decision_counters()})",
    )
    assert [o.order_id for o in await _orders(platform, tenant, symbol)] == [order.order_id]
    assert await position() == sign * Decimal(1)
    again = await platform.decision.GetSignals(pb.GetSignalsRequest(symbol=symbol), metadata=md(tenant))
    assert len(again.signals) == 1

    # Decision latency, vector received -> PlaceOrder answered (in-process histogram): the
    # first order above paid for the channel set-up; a few more on a warm channel.
    count = (REGISTRY.get_sample_value("trading_decision_order_latency_seconds_count") or 0) - latency_count
    total = (REGISTRY.get_sample_value("trading_decision_order_latency_seconds_sum") or 0) - latency_sum
    assert count >= 1
    warm_count, warm_sum = count + latency_count, total + latency_sum
    more = vectors(symbol, 4, seed=9)
    for v in more:
        await platform.publish(v)
    await eventually(lambda: _counted("trading_decision_order_latency_seconds_count", warm_count + 4))
    warm = (REGISTRY.get_sample_value("trading_decision_order_latency_seconds_count") or 0) - warm_count
    warm_total = (REGISTRY.get_sample_value("trading_decision_order_latency_seconds_sum") or 0) - warm_sum
    print(
        f"\ndecision latency (vector received -> PlaceOrder answered): first {total / count * 1e3:.1f} ms,"
        f" then mean {warm_total / max(warm, 1) * 1e3:.1f} ms over {int(warm)} orders"
    )


# ---------------------------------------------------------------------------- subscriptions


CONSUMED = "trading_messaging_consumed_total"


def _vectors_consumed() -> float:
    labels = {"transport": "nats", "consumer": "decision-vectors", "event_type": VECTOR_EVENT}
    return REGISTRY.get_sample_value(CONSUMED, labels) or 0.0


async def test_only_the_symbols_of_enabled_strategies_are_subscribed_to(platform: Platform) -> None:
    tenant, traded, untraded = await platform.tenant(), await platform.symbol(), await platform.symbol()
    before = _vectors_consumed()
    # No strategy trades either symbol yet: their vectors never reach decision.
    await platform.publish(vectors(traded, 1, seed=31)[0])
    await platform.publish(vectors(untraded, 1, seed=32)[0])
    # SetStrategy returns once the new symbol is subscribed to: the next vector arrives.
    await platform.set(tenant, "watch", spec(traded))
    await platform.publish(vectors(traded, 1, seed=33)[0])
    await eventually(lambda: _true(_vectors_consumed() >= before + 1))
    await platform.publish(vectors(untraded, 1, seed=34)[0])
    await asyncio.sleep(0.3)  # what else would arrive has arrived
    assert _vectors_consumed() == before + 1

    # Turned off: the symbol is unsubscribed again.
    await platform.decision.SetStrategyEnabled(
        pb.SetStrategyEnabledRequest(strategy_id="watch", enabled=False), metadata=md(tenant)
    )
    await platform.publish(vectors(traded, 1, seed=35)[0])
    await asyncio.sleep(0.3)
    assert _vectors_consumed() == before + 1


# ---------------------------------------------------------------------------- the engine's paths
#
# The engine run in the test's own process on the test database (through a
# pool that counts the connections the stores take: every PostgreSQL round
# trip starts with one), with the service's trained models, the real NATS,
# tansu and execution. Its strategy cache reloads only when told, and its
# batch writer writes when a batch is full or it is flushed.


class CountingPool:
    """The test database's pool, counting the connections taken from it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.acquired = 0

    def acquire(self) -> Any:
        self.acquired += 1
        return self._pool.acquire()

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        self.acquired += 1
        return await self._pool.fetch(*args, **kwargs)


@dataclass
class Harness:
    engine: DecisionEngine
    cache: StrategyCache
    pool: CountingPool

    async def decide(self, vector: features_events.FeatureVectorComputed) -> None:
        envelope = new_envelope(vector, tenant_id="", correlation_id="test", producer="features")
        delivery = Delivery(Transport.NATS, f"features.vectors.{vector.symbol}")
        await self.engine.decide(Event(envelope, vector, {}, delivery), time.perf_counter())
        await self.engine.settle()  # its orders placed (that happens off the lane)


@asynccontextmanager
async def engine_on(
    platform: Platform,
    pg_pool: asyncpg.Pool,
    model_dir: Path,
    settings: Settings,
    execution_address: str = "",
    signal_batch: int = 500,
) -> AsyncIterator[Harness]:
    pool = CountingPool(pg_pool)
    signals = PostgresSignalStore(pool)  # the pool's counting stand-in
    cache = StrategyCache(PostgresStrategyStore(pool), refresh_s=3600)
    await cache.reload()
    ensemble = Ensemble(models.load_promoted(model_dir), budget_s=0.5, threads=True)
    registry = event_registry()
    address = execution_address or platform.execution_address
    # The engine is decision: it dials as decision and holds decision's delegations.
    addresses = {"execution": address, "identity": platform.identity_address}
    clients = ClientFactory(
        settings.model_copy(update={"service_addresses": addresses}), principal="decision"
    )
    try:
        async with KafkaPublisher(settings.kafka, registry) as kafka:
            # The events go through decision's outbox: this engine's own relay publishes them
            # (on the uncounted pool: the relay's round trips are not the vectors').
            relay = OutboxRelay(
                PostgresOutbox(pg_pool, "decision"), kafka=kafka, nats=NatsPublisher(platform.nats, registry)
            )
            await relay.start()
            engine = DecisionEngine(
                ensemble=ensemble,
                strategies=cache,
                signals=signals,
                execution=clients.stub(exec_grpc.ExecutionServiceStub, "execution"),
                delegations=DelegationCache(clients),
                relay=relay,
                place_timeout_s=2.0,
                signal_batch=signal_batch,
                signal_flush_s=3600,
            )
            engine.start()
            pool.acquired = 0  # counted from here: the vectors' own round trips
            try:
                yield Harness(engine, cache, pool)
            finally:
                await engine.drain()
                await relay.stop()
    finally:
        await clients.close()
        ensemble.close()


async def _stored_signals(pg_pool: asyncpg.Pool, tenant: str, symbol: str) -> list[asyncpg.Record]:
    async with tenant_transaction(pg_pool, tenant) as conn:
        return list(
            await conn.fetch(
                "SELECT signal_id::text AS id, vector_key, client_order_id, order_id FROM decision.signals"
                " WHERE symbol = $1 ORDER BY generated_at, signal_id",
                symbol,
            )
        )


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_hold_vectors_cost_no_postgres_round_trip_and_are_recorded_in_one_batch(
    platform: Platform, pg_pool: asyncpg.Pool, model_dir: Path, infra_settings: Settings
) -> None:
    tenant, symbol = await platform.tenant(), await platform.symbol()
    await platform.set(tenant, "watch", spec(symbol, signal_threshold=1.0))  # every signal is HOLD
    received, sub = await _subscribe(platform.nats, f"decision.signals.{tenant}.{symbol}")
    batch = vectors(symbol, 6, seed=21)
    try:
        async with engine_on(platform, pg_pool, model_dir, infra_settings) as h:
            await h.decide(batch[0])
            assert h.pool.acquired == 1  # the (tenant, symbol) book, loaded on first use
            duplicates = _sample(DUPLICATES)
            batches = _sample("trading_decision_signal_batch_size_count")
            for v in batch[1:]:
                await h.decide(v)
            await h.decide(batch[2])  # seen again: caught in memory
            assert h.pool.acquired == 1  # five more HOLD vectors and a duplicate: no round trip
            assert _sample(DUPLICATES) == duplicates + 1
            await platform.nats.flush()
            assert received == [] and await _stored_signals(pg_pool, tenant, symbol) == []

            await h.engine.writer.flush()
            assert h.pool.acquired == 2  # all six in one insert
            assert _sample("trading_decision_signal_batch_size_count") == batches + 1
            stored = await _stored_signals(pg_pool, tenant, symbol)
            assert len(stored) == 6 and all(r["client_order_id"] == "" for r in stored)
            await eventually(lambda: _true(len(received) >= 6))
            listed = await _signals(platform, tenant, symbol, lambda s: len(s) == 6)
            assert listed is not None
            assert sorted(s.signal_id for s in listed) == sorted(e.signal.signal_id for e in received)
            assert sorted(e.signal.feature_tick_sequence for e in received) == sorted(
                v.vector.tick_sequence for v in batch
            )

        # Another process (or this one after a restart) remembers nothing: the
        # unique vector key in PostgreSQL skips the vector, nothing is announced twice.
        async with engine_on(platform, pg_pool, model_dir, infra_settings) as other:
            duplicates = _sample(DUPLICATES)
            await other.decide(batch[0])
            await other.decide(batch[0])  # and again: in memory now
            await other.engine.writer.flush()
            assert _sample(DUPLICATES) == duplicates + 2
        await platform.nats.flush()
        await asyncio.sleep(0.2)
    finally:
        await sub.unsubscribe()
    assert len(received) == 6 and len(await _stored_signals(pg_pool, tenant, symbol)) == 6


async def test_the_signal_writer_writes_full_batches_at_once_dedups_and_flushes_on_stop(
    platform: Platform, pg_pool: asyncpg.Pool
) -> None:
    tenant, symbol = await platform.tenant(), await platform.symbol()
    store = PostgresSignalStore(pg_pool)
    announced: list[QueuedSignal] = []

    async def publish(recorded: Sequence[QueuedSignal]) -> None:
        announced.extend(recorded)

    def queued(key: str) -> QueuedSignal:
        signal_id = str(uuid7())
        message = pb.Signal(signal_id=signal_id, strategy_id="s", symbol=symbol)
        new = NewSignal(
            signal_id=signal_id, vector_key=key, strategy_id="s", symbol=symbol,
            direction=int(pb.SIGNAL_DIRECTION_HOLD), generated_at=datetime.now(UTC), client_order_id="",
            side=0, quantity=None, payload=message.SerializeToString(),
        )  # fmt: skip
        return QueuedSignal(tenant, new, message, "corr", "cause")

    writer = SignalWriter(store, publish, max_batch=3, max_delay_s=3600)
    writer.start()
    duplicates = _sample(DUPLICATES)
    k1, k1_again, k2 = queued("k1"), queued("k1"), queued("k2")
    writer.add(k1)
    writer.add(k1_again)  # the same vector key twice in one batch
    await asyncio.sleep(0.05)
    assert await _stored_signals(pg_pool, tenant, symbol) == []  # neither full nor due
    writer.add(k2)  # the batch is full: written now, not in an hour
    stored = await eventually(lambda: _stored_signals(pg_pool, tenant, symbol))
    assert [(r["id"], r["vector_key"]) for r in stored] == [
        (k1.signal.signal_id, "k1"),
        (k2.signal.signal_id, "k2"),
    ]
    await eventually(lambda: _true(len(announced) == 2))
    assert announced == [k1, k2] and _sample(DUPLICATES) == duplicates + 1

    # A key recorded in an earlier batch is skipped; what waits is written on stop.
    k2_again, k3 = queued("k2"), queued("k3")
    writer.add(k2_again)
    writer.add(k3)
    await writer.stop()
    stored = await _stored_signals(pg_pool, tenant, symbol)
    assert [r["vector_key"] for r in stored] == ["k1", "k2", "k3"]
    assert announced == [k1, k2, k3] and _sample(DUPLICATES) == duplicates + 2


async def test_cooldown_blocked_intents_cost_no_round_trip_and_pending_intents_are_retried(
    platform: Platform, pg_pool: asyncpg.Pool, model_dir: Path, infra_settings: Settings
) -> None:
    tenant, symbol = await platform.tenant(), await platform.symbol()
    # Every vector is a BUY or a SELL; one intent an hour at most.
    hour = duration_pb2.Duration(seconds=3600)
    await platform.set(tenant, "trader", spec(symbol, signal_threshold=0.000001, cooldown=hour))
    first, second = vectors(symbol, 2, seed=5)
    unavailable = _sample("trading_decision_orders_total", {"result": "unavailable"})
    # Execution unreachable: the intent is recorded, its placement stays pending.
    async with engine_on(platform, pg_pool, model_dir, infra_settings, "127.0.0.1:9") as down:
        await down.decide(first)
        assert _sample("trading_decision_orders_total", {"result": "unavailable"}) == unavailable + 1
        [intent] = await _stored_signals(pg_pool, tenant, symbol)
        assert intent["client_order_id"].startswith("dc-") and intent["order_id"] is None
        acquired = down.pool.acquired
        await down.decide(second)  # within the cooldown: no intent, no round trip
        assert down.pool.acquired == acquired
    assert await _orders(platform, tenant, symbol) == []

    # A restarted process sees the first vector again: the pending intent is
    # placed with its client order id, once; its fill moves the position.
    async with engine_on(platform, pg_pool, model_dir, infra_settings) as up:
        await up.decide(first)
        [order] = await _orders(platform, tenant, symbol)
        assert order.client_order_id == intent["client_order_id"]
        assert order.status == exec_types.ORDER_STATUS_FILLED
        acquired = up.pool.acquired
        duplicates = _sample(DUPLICATES)
        await up.decide(first)  # settled: caught in memory
        assert up.pool.acquired == acquired and _sample(DUPLICATES) == duplicates + 1
        book = await up.engine.books.get(tenant, symbol, ["trader"])
        sign = 1 if order.side == 1 else -1
        assert book.positions["trader"].quantity == sign * Decimal(1) and book.pending == {}
    assert [o.order_id for o in await _orders(platform, tenant, symbol)] == [order.order_id]
    rows = await _stored_signals(pg_pool, tenant, symbol)
    assert len(rows) == 2  # the intent, and the second vector's signal (cooldown)
    assert (rows[0]["client_order_id"], rows[0]["order_id"]) == (order.client_order_id, order.order_id)
    async with tenant_transaction(pg_pool, tenant) as conn:
        quantity = await conn.fetchval("SELECT quantity FROM decision.positions WHERE strategy_id = 'trader'")
    assert quantity == sign * Decimal(1)


async def test_orders_in_flight_count_against_the_position_limit(
    platform: Platform, pg_pool: asyncpg.Pool, model_dir: Path, infra_settings: Settings
) -> None:
    tenant, symbol = await platform.tenant(), await platform.symbol()
    # Every vector is a BUY or a SELL, no cooldown, one lot either way at most.
    await platform.set(tenant, "trader", spec(symbol, signal_threshold=0.000001, max_position=D("1")))
    batch = vectors(symbol, 8, seed=9)
    async with engine_on(platform, pg_pool, model_dir, infra_settings) as h:
        for v in batch:  # decided back to back: placements overlap the next decisions
            envelope = new_envelope(v, tenant_id="", correlation_id="test", producer="features")
            delivery = Delivery(Transport.NATS, f"features.vectors.{symbol}")
            await h.engine.decide(Event(envelope, v, {}, delivery), time.perf_counter())
        await h.engine.settle()
        book = await h.engine.books.get(tenant, symbol, ["trader"])
        in_memory = book.positions["trader"].quantity
    orders = await _orders(platform, tenant, symbol)
    assert orders and all(o.status == exec_types.ORDER_STATUS_FILLED for o in orders)
    signed = [Decimal(o.filled_quantity.value) * (1 if o.side == 1 else -1) for o in orders]
    net = sum(signed, Decimal(0))
    # Each intent was checked against the position plus the same-side orders
    # still out, so the lots alternate: whatever order the fills came in,
    # the position never went beyond one lot either way.
    assert len(orders) >= 2 and abs(net) <= 1
    assert abs(sum(1 if q > 0 else -1 for q in signed)) <= 1
    async with tenant_transaction(pg_pool, tenant) as conn:
        stored = await conn.fetchval("SELECT quantity FROM decision.positions WHERE strategy_id = 'trader'")
    assert stored == net == in_memory


async def _expired_events(
    settings: Settings, tenant: str, timeout: float = 20
) -> list[events_pb2.OrderIntentExpired]:
    """The tenant's OrderIntentExpired events on trading.decision.intents (from the beginning)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.servers, enable_auto_commit=False)
    await consumer.start()
    found: list[events_pb2.OrderIntentExpired] = []
    try:
        await consumer._client.force_metadata_update()
        topic = "trading.decision.intents"
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    envelope = decode_envelope(record.value)
                    if envelope.tenant_id != tenant:
                        continue
                    event = unpack(envelope, event_registry())
                    if isinstance(event, events_pb2.OrderIntentExpired):
                        found.append(event)
        await asyncio.sleep(1.0)  # a second event (there must be none) would have arrived by now
        for records in (await consumer.getmany(timeout_ms=500)).values():
            for record in records:
                envelope = decode_envelope(record.value)
                if envelope.tenant_id == tenant:
                    event = unpack(envelope, event_registry())
                    if isinstance(event, events_pb2.OrderIntentExpired):
                        found.append(event)
    finally:
        await consumer.stop()
    return found


async def test_an_unanswered_intent_expires_once_with_two_sweepers_and_is_never_placed(
    platform: Platform, pg_pool: asyncpg.Pool, model_dir: Path, infra_settings: Settings
) -> None:
    tenant, symbol = await platform.tenant(), await platform.symbol()
    await platform.set(tenant, "trader", spec(symbol, signal_threshold=0.000001))
    [first] = vectors(symbol, 1, seed=9)
    # Execution unreachable: the intent stays pending.
    async with engine_on(platform, pg_pool, model_dir, infra_settings, "127.0.0.1:9") as down:
        await down.decide(first)
    [intent] = await _stored_signals(pg_pool, tenant, symbol)
    assert intent["client_order_id"] and intent["order_id"] is None

    ttl = timedelta(minutes=10)
    store = PostgresSignalStore(pg_pool, intent_ttl=ttl)
    # Not due yet: nothing expires.
    assert await store.expire_due(tenant, datetime.now(UTC)) == []
    # Eleven minutes on, two replicas sweep at once: exactly one expires it.
    later = datetime.now(UTC) + timedelta(minutes=11)
    forgotten: list[str] = []
    # The expiry events go into decision's outbox with the expiry; the
    # running decision service's relay publishes them.
    sweepers = [
        IntentSweeper(
            PostgresStrategyStore(pg_pool),
            store,
            every_s=3600,
            clock=lambda: later,
            on_expired=lambda _t, batch: forgotten.extend(i.client_order_id for i in batch),
        )
        for _ in range(2)
    ]
    counts = await asyncio.gather(*(s.sweep_tenant(tenant) for s in sweepers))
    assert sorted(counts) == [0, 1] and forgotten == [intent["client_order_id"]]
    assert [await s.sweep_tenant(tenant) for s in sweepers] == [0, 0]  # idempotent

    [event] = await _expired_events(infra_settings, tenant)
    assert (event.client_order_id, event.signal_id, event.symbol) == (
        intent["client_order_id"],
        intent["id"],
        symbol,
    )
    assert event.previous_status == pb.INTENT_STATUS_PENDING
    assert event.expired_at.ToDatetime(tzinfo=UTC) == later
    reply = await platform.decision.GetSignals(pb.GetSignalsRequest(symbol=symbol), metadata=md(tenant))
    assert [s.intent_status for s in reply.signals] == [pb.INTENT_STATUS_EXPIRED]

    # Execution is back and the vector comes again: an expired intent is
    # terminal, so nothing is placed (before, it would have been retried).
    async with engine_on(platform, pg_pool, model_dir, infra_settings) as up:
        await up.decide(first)
        book = await up.engine.books.get(tenant, symbol, ["trader"])
        assert book.pending == {}
    assert await _orders(platform, tenant, symbol) == []


# ---------------------------------------------------------------------------- market memory


async def test_the_market_memory_answers_similar_states_and_signals_name_their_analogs(
    platform: Platform, infra_settings: Settings
) -> None:
    """Decision embeds each vector's market state, stores it once its outcome
    is known 20 ticks later (the training horizon), finds the most similar
    past states for FindSimilarStates, and the analog model votes with its
    nearest states, whose ids its score in the signal names."""
    tenant, other, symbol = await platform.tenant(), await platform.tenant(), await platform.symbol()
    ask = pb.FindSimilarStatesRequest(symbol=symbol, limit=5, same_symbol=True)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:  # no vector of the symbol seen yet
        await platform.decision.FindSimilarStates(ask, metadata=md(tenant))
    assert unknown.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details(unknown.value).error_info
    assert info is not None and info.reason == "MARKET_STATE_UNKNOWN"
    # Threshold 1: never reached, so HOLD signals only and no orders.
    await platform.set(
        tenant, "analogs", spec(symbol, model_ids=["analog-knn", "gbt-trend"], signal_threshold=1.0)
    )
    batch = vectors(symbol, 95, seed=8)

    async def publish(events: Sequence[features_events.FeatureVectorComputed]) -> pb.Signal:
        """In groups the symbol's lane takes without shedding, each decided
        before the next; the newest signal."""
        newest: list[pb.Signal] = []
        for start in range(0, len(events), 10):
            group = events[start : start + 10]
            for event in group:
                await platform.publish(event)
            last = group[-1].vector.tick_sequence

            seen: list[int] = []

            def decided(signals: list[pb.Signal], last: int = last, seen: list[int] = seen) -> bool:
                seen[:] = [s.feature_tick_sequence for s in signals[:3]]
                return bool(signals) and signals[0].feature_tick_sequence == last

            # Generous: on a loaded CI machine the in-process services share
            # the test's event loop with everything the session left running.
            newest = await eventually(
                lambda: _signals(platform, tenant, symbol, decided),
                timeout=60,
                what=lambda: f"the signal of tick {last} (newest ticks: {seen})",  # noqa: B023 (awaited here)
            )
        return newest[0]

    await publish(batch[:90])

    async def remembered() -> pb.FindSimilarStatesResponse | None:
        try:
            reply = await platform.decision.FindSimilarStates(
                pb.FindSimilarStatesRequest(symbol=symbol, limit=100, same_symbol=True), metadata=md(tenant)
            )
        except grpc.aio.AioRpcError:
            return None
        # 90 vectors, horizon 20: the first 70 states have an outcome and are stored.
        return reply if len(reply.states) == 70 else None

    everything = await eventually(remembered, timeout=30, what="70 states of the symbol stored")
    last = batch[89].vector
    assert everything.current.symbol == symbol and everything.current.tick_sequence == last.tick_sequence
    assert everything.current.as_of == last.as_of and everything.current.embedding_version
    sequences = sorted(s.state.tick_sequence for s in everything.states)
    assert sequences == [v.vector.tick_sequence for v in batch[:70]]
    similarities = [s.similarity for s in everything.states]
    assert (
        similarities == sorted(similarities, reverse=True)
        and -1.0 <= min(similarities) <= max(similarities) <= 1.0
    )
    mids = {v.vector.tick_sequence: Decimal(v.vector.mid_price.value) for v in batch}
    for s in everything.states:
        seq = s.state.tick_sequence
        later, then = mids[seq + 20], mids[seq]
        expected = (
            pb.MARKET_STATE_OUTCOME_UP
            if later > then
            else pb.MARKET_STATE_OUTCOME_DOWN
            if later < then
            else pb.MARKET_STATE_OUTCOME_FLAT
        )
        assert s.outcome == expected and s.horizon_ticks == 20 and s.state.symbol == symbol
        assert s.state.as_of.ToDatetime() < everything.current.as_of.ToDatetime()
    top = await platform.decision.FindSimilarStates(ask, metadata=md(tenant))
    assert len(top.states) == 5
    assert {s.state.state_id for s in top.states} <= {s.state.state_id for s in everything.states}
    # Market data: another tenant (without a strategy) sees the same memory.
    theirs = await platform.decision.FindSimilarStates(ask, metadata=md(other))
    assert [s.state.state_id for s in theirs.states] == [s.state.state_id for s in top.states]
    # A time range that ends before the first state finds nothing.
    before = pb.FindSimilarStatesRequest(symbol=symbol, same_symbol=True)
    before.time_range.end.CopyFrom(batch[0].vector.as_of)
    assert list((await platform.decision.FindSimilarStates(before, metadata=md(tenant))).states) == []

    # The memory now holds at least k=32 states: the next vectors' analog model answers.
    newest = await publish(batch[90:])
    assert newest.feature_tick_sequence == batch[-1].vector.tick_sequence
    (score,) = [m for m in newest.model_scores if m.model_id == "analog-knn"]
    assert score.outcome == pb.MODEL_OUTCOME_OK, score.error
    assert len(score.analog_ids) == 32 == len(set(score.analog_ids)) and -1 <= score.score <= 1
    conn = await asyncpg.connect(infra_settings.vectors.postgres_dsn)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM decision.market_states WHERE scope = 'market' AND id = ANY($1::uuid[])",
            list(score.analog_ids),
        )
    finally:
        await conn.close()
    assert stored == 32
    # The other tenant has no signal of it (signals are the tenant's own).
    assert (
        list(
            (
                await platform.decision.GetSignals(pb.GetSignalsRequest(symbol=symbol), metadata=md(other))
            ).signals
        )
        == []
    )
