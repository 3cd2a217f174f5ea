"""The protovalidate rules of trading.decision.v1 accept good input and name the
right field (and rule) for bad input; signals and intents route as declared."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from trading.common.v1 import market_pb2, types_pb2
from trading.decision.v1 import decision_service_pb2 as pb
from trading.decision.v1 import events_pb2 as ev

from runtime import contracts
from tests.support.validation import dec, violations

UUID = "0190f1a2-7b3c-7def-8123-456789abcdef"
TENANT = "0190f1a2-0000-7000-8000-000000000001"
NOW = timestamp_pb2.Timestamp(seconds=1_700_000_000)


def spec() -> pb.StrategySpec:
    return pb.StrategySpec(
        name="BTC momentum",
        symbols=["BTC-USD", "ETH-USD"],
        enabled=True,
        max_position=dec("2"),
        sizing=pb.OrderSizing(fixed_quantity=dec("0.01")),
        model_ids=["gbm-momentum", "logreg-meanrev"],
        signal_threshold=0.6,
        cooldown=duration_pb2.Duration(seconds=30),
    )


def set_strategy(**spec_changes: object) -> pb.SetStrategyRequest:
    request = pb.SetStrategyRequest(strategy_id="btc-momentum", spec=spec(), expected_version=3)
    target: Message = request.spec
    for name, value in spec_changes.items():
        if isinstance(value, list):
            target.ClearField(name)
            getattr(target, name).extend(value)
        elif isinstance(value, Message):
            getattr(target, name).CopyFrom(value)
        else:
            setattr(target, name, value)
    return request


def intent() -> ev.OrderIntentCreated:
    return ev.OrderIntentCreated(
        intent_id=UUID,
        strategy_id="btc-momentum",
        signal_id=UUID,
        client_order_id=f"sig-{UUID}",
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        quantity=dec("0.01"),
        order_type=market_pb2.ORDER_TYPE_MARKET,
        signal_strength=0.8,
        created_at=NOW,
    )


VALID: list[Callable[[], Message]] = [
    set_strategy,
    lambda: pb.GetStrategyRequest(strategy_id="btc-momentum"),
    lambda: pb.ListStrategiesRequest(),
    lambda: pb.ListStrategiesRequest(page_size=10, symbol="BTC-USD", enabled_only=True),
    lambda: pb.SetStrategyEnabledRequest(strategy_id="btc_momentum_2", enabled=False),
    lambda: pb.ListModelsRequest(kind=pb.MODEL_KIND_GRADIENT_BOOSTING),
    lambda: pb.GetSignalsRequest(),
    lambda: pb.GetSignalsRequest(
        symbol="BTC-USD",
        strategy_id="btc-momentum",
        time_range=types_pb2.TimeRange(start=NOW, end=timestamp_pb2.Timestamp(seconds=NOW.seconds + 60)),
        direction=pb.SIGNAL_DIRECTION_BUY,
    ),
    intent,
    lambda: pb.FindSimilarStatesRequest(symbol="BTC-USD"),
    lambda: pb.FindSimilarStatesRequest(
        symbol="AAPL",
        limit=100,
        same_symbol=True,
        time_range=types_pb2.TimeRange(start=NOW, end=timestamp_pb2.Timestamp(seconds=NOW.seconds + 60)),
    ),
]


@pytest.mark.parametrize("make", VALID, ids=lambda f: type(f()).__name__)
def test_valid_messages_pass(make: Callable[[], Message]) -> None:
    assert violations(make()) == set()


BAD: list[tuple[str, Message, tuple[str, str]]] = [
    (
        "zero fixed quantity",
        set_strategy(sizing=pb.OrderSizing(fixed_quantity=dec("0.000"))),
        ("spec.sizing.fixed_quantity", "decimal.positive"),
    ),
    (
        "negative fixed quantity",
        set_strategy(sizing=pb.OrderSizing(fixed_quantity=dec("-1"))),
        ("spec.sizing.fixed_quantity", "decimal.positive"),
    ),
    ("no sizing method", set_strategy(sizing=pb.OrderSizing()), ("spec.sizing.method", "required")),
    ("zero max position", set_strategy(max_position=dec("0")), ("spec.max_position", "decimal.positive")),
    ("bad symbol", set_strategy(symbols=["BTC-USD", "btc"]), ("spec.symbols[1]", "string.pattern")),
    ("no symbols", set_strategy(symbols=[]), ("spec.symbols", "repeated.min_items")),
    ("no models", set_strategy(model_ids=[]), ("spec.model_ids", "repeated.min_items")),
    ("bad model id", set_strategy(model_ids=["GBM Momentum"]), ("spec.model_ids[0]", "string.pattern")),
    ("threshold 0", set_strategy(signal_threshold=0.0), ("spec.signal_threshold", "double.gt_lte")),
    ("threshold above 1", set_strategy(signal_threshold=1.5), ("spec.signal_threshold", "double.gt_lte")),
    (
        "cooldown over an hour",
        set_strategy(cooldown=duration_pb2.Duration(seconds=3601)),
        ("spec.cooldown", "duration.gte_lte"),
    ),
    ("empty name", set_strategy(name=""), ("spec.name", "string.min_len")),
    ("missing spec", pb.SetStrategyRequest(strategy_id="x"), ("spec", "required")),
    ("upper-case strategy id", pb.GetStrategyRequest(strategy_id="BTC"), ("strategy_id", "string.pattern")),
    (
        "negative expected version",
        pb.SetStrategyEnabledRequest(strategy_id="x", expected_version=-1),
        ("expected_version", "int64.gte"),
    ),
    ("page_size 10000", pb.GetSignalsRequest(page_size=10000), ("page_size", "int32.gte_lte")),
    ("bad symbol filter", pb.GetSignalsRequest(symbol="btc"), ("symbol", "string.pattern")),
    (
        "undefined direction",
        pb.GetSignalsRequest(direction=pb.SignalDirection.ValueType(9)),
        ("direction", "enum.defined_only"),
    ),
    (
        "reversed time range",
        pb.GetSignalsRequest(
            time_range=types_pb2.TimeRange(start=NOW, end=timestamp_pb2.Timestamp(seconds=1))
        ),
        ("time_range", "time_range.ordered"),
    ),
    (
        "undefined model kind",
        pb.ListModelsRequest(kind=pb.ModelKind.ValueType(42)),
        ("kind", "enum.defined_only"),
    ),
    ("similar states of no symbol", pb.FindSimilarStatesRequest(), ("symbol", "string.pattern")),
    (
        "similar states of a bad symbol",
        pb.FindSimilarStatesRequest(symbol="btc"),
        ("symbol", "string.pattern"),
    ),
    (
        "more than 100 similar states",
        pb.FindSimilarStatesRequest(symbol="BTC-USD", limit=101),
        ("limit", "int32.gte_lte"),
    ),
    (
        "negative similar states",
        pb.FindSimilarStatesRequest(symbol="BTC-USD", limit=-1),
        ("limit", "int32.gte_lte"),
    ),
    (
        "similar states in a reversed time range",
        pb.FindSimilarStatesRequest(
            symbol="BTC-USD",
            time_range=types_pb2.TimeRange(start=NOW, end=timestamp_pb2.Timestamp(seconds=1)),
        ),
        ("time_range", "time_range.ordered"),
    ),
]


@pytest.mark.parametrize(("case", "msg", "expected"), BAD, ids=[c[0] for c in BAD])
def test_bad_requests_name_the_field(case: str, msg: Message, expected: tuple[str, str]) -> None:
    assert expected in violations(msg), case


def test_order_intents_are_validated() -> None:
    bad = intent()
    bad.quantity.value = "0"
    bad.side = types_pb2.SIDE_UNSPECIFIED
    bad.client_order_id = "has spaces"
    found = violations(bad)
    assert {
        ("quantity", "decimal.positive"),
        ("side", "enum.not_in"),
        ("client_order_id", "string.pattern"),
    } <= found
    limit_without_price = intent()
    limit_without_price.order_type = market_pb2.ORDER_TYPE_LIMIT
    assert ("", "order_intent_created.limit_price") in violations(limit_without_price)
    limit_without_price.limit_price.value = "64000"
    assert violations(limit_without_price) == set()


def test_signal_generated_routes_per_tenant_and_symbol() -> None:
    registry = contracts.event_registry()
    name = ev.SignalGenerated.DESCRIPTOR.full_name
    event = ev.SignalGenerated(
        symbol="BTC-USD",
        signal=pb.Signal(signal_id=UUID, strategy_id="btc-momentum", symbol="BTC-USD"),
    )
    assert violations(event) == set()
    assert registry.route(name).kafka_topic == "trading.decision.signals"
    assert registry.nats_subject(name, TENANT, event) == f"decision.signals.{TENANT}.BTC-USD"
    event.signal.symbol = "ETH-USD"
    assert ("", "signal_generated.symbol_matches") in violations(event)


def test_strategy_writes_are_idempotent_upserts_with_write_scope() -> None:
    service = pb.DESCRIPTOR.services_by_name["DecisionService"]
    for method in service.methods:
        policy = contracts.method_policy(contracts.full_method_name(method))
        expected = "strategies:write" if method.name.startswith("Set") else "strategies:read"
        assert list(policy.scopes) == [expected], method.name
        assert policy.idempotent, method.name
