"""The protovalidate rules of trading.risk.v1 accept good input and name the
right field (and rule) for bad input; risk events route per tenant."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from trading.common.v1 import market_pb2, types_pb2
from trading.risk.v1 import events_pb2 as ev
from trading.risk.v1 import risk_service_pb2 as pb

from runtime import contracts
from tests.support.validation import dec, violations

UUID = "0190f1a2-7b3c-7def-8123-456789abcdef"
TENANT = "0190f1a2-0000-7000-8000-000000000001"
NOW = timestamp_pb2.Timestamp(seconds=1_700_000_000)


def check(**changes: object) -> pb.CheckOrderRequest:
    request = pb.CheckOrderRequest(
        client_order_id="ord-2024-0001",
        symbol="BTC-USD",
        side=types_pb2.SIDE_BUY,
        quantity=dec("0.5"),
        order_type=market_pb2.ORDER_TYPE_LIMIT,
        limit_price=dec("64000.25"),
        strategy_id="btc-momentum",
    )
    _apply(request, changes)
    return request


def _apply(target: Message, changes: dict[str, object]) -> None:
    """Set fields by name: messages are copied in, None clears the field."""
    for name, value in changes.items():
        if isinstance(value, Message):
            getattr(target, name).CopyFrom(value)
        elif value is None:
            target.ClearField(name)
        else:
            setattr(target, name, value)


def limits() -> pb.RiskLimits:
    return pb.RiskLimits(
        max_orders_per_second=20,
        max_order_notional=dec("100000"),
        default_max_position=dec("10"),
        max_position_by_symbol={"BTC-USD": dec("2.5"), "DOGE-USD": dec("0")},
        price_collar_bps=250,
        daily_loss_limit=dec("5000"),
        max_quote_age=duration_pb2.Duration(seconds=5),
    )


VALID: list[Callable[[], Message]] = [
    check,
    lambda: check(order_type=market_pb2.ORDER_TYPE_MARKET, limit_price=None, strategy_id=""),
    lambda: check(side=types_pb2.SIDE_SELL, quantity=dec("0.000000000001"), dry_run=True),
    lambda: pb.SetLimitsRequest(limits=limits(), expected_version=4),
    lambda: pb.GetLimitsRequest(),
    lambda: pb.GetTradingStateRequest(),
    lambda: pb.SetTradingStateRequest(state=pb.TRADING_STATE_HALTED, reason="model misbehaving"),
]


@pytest.mark.parametrize("make", VALID, ids=lambda f: type(f()).__name__)
def test_valid_requests_pass(make: Callable[[], Message]) -> None:
    assert violations(make()) == set()


def set_limits(**changes: object) -> pb.SetLimitsRequest:
    request = pb.SetLimitsRequest(limits=limits())
    _apply(request.limits, changes)
    return request


BAD: list[tuple[str, Message, tuple[str, str]]] = [
    ("quantity 0", check(quantity=dec("0")), ("quantity", "decimal.positive")),
    ("quantity 0.000", check(quantity=dec("0.000")), ("quantity", "decimal.positive")),
    ("negative quantity", check(quantity=dec("-1")), ("quantity", "decimal.positive")),
    ("quantity not a decimal", check(quantity=dec("1e3")), ("quantity.value", "string.pattern")),
    ("missing quantity", check(quantity=None), ("quantity", "required")),
    ("bad symbol", check(symbol="BTC/USD"), ("symbol", "string.pattern")),
    ("UNSPECIFIED side", check(side=types_pb2.SIDE_UNSPECIFIED), ("side", "enum.not_in")),
    ("undefined side", check(side=7), ("side", "enum.defined_only")),
    (
        "UNSPECIFIED order type",
        check(order_type=market_pb2.ORDER_TYPE_UNSPECIFIED),
        ("order_type", "enum.not_in"),
    ),
    ("limit order without price", check(limit_price=None), ("", "check_order.limit_price")),
    (
        "market order with price",
        check(order_type=market_pb2.ORDER_TYPE_MARKET),
        ("", "check_order.limit_price"),
    ),
    ("zero limit price", check(limit_price=dec("0")), ("limit_price", "decimal.positive")),
    (
        "bad client order id",
        check(client_order_id="no spaces allowed"),
        ("client_order_id", "string.pattern"),
    ),
    ("empty client order id", check(client_order_id=""), ("client_order_id", "string.pattern")),
    ("bad strategy id", check(strategy_id="BTC Momentum"), ("strategy_id", "string.pattern")),
    ("no limits", pb.SetLimitsRequest(), ("limits", "required")),
    (
        "zero order rate",
        set_limits(max_orders_per_second=0),
        ("limits.max_orders_per_second", "uint32.gte_lte"),
    ),
    (
        "zero notional",
        set_limits(max_order_notional=dec("0")),
        ("limits.max_order_notional", "decimal.positive"),
    ),
    (
        "missing default position",
        set_limits(default_max_position=None),
        ("limits.default_max_position", "required"),
    ),
    ("collar above 100%", set_limits(price_collar_bps=10001), ("limits.price_collar_bps", "uint32.gte_lte")),
    (
        "negative loss limit",
        set_limits(daily_loss_limit=dec("-5")),
        ("limits.daily_loss_limit", "decimal.positive"),
    ),
    (
        "zero quote age",
        set_limits(max_quote_age=duration_pb2.Duration()),
        ("limits.max_quote_age", "duration.gt_lte"),
    ),
    (
        "bad expected version",
        pb.SetLimitsRequest(limits=limits(), expected_version=-1),
        ("expected_version", "int64.gte"),
    ),
    ("UNSPECIFIED state", pb.SetTradingStateRequest(reason="x"), ("state", "enum.not_in")),
    ("no reason", pb.SetTradingStateRequest(state=pb.TRADING_STATE_ACTIVE), ("reason", "string.min_len")),
    (
        "reason too long",
        pb.SetTradingStateRequest(state=pb.TRADING_STATE_ACTIVE, reason="x" * 501),
        ("reason", "string.max_len"),
    ),
]


@pytest.mark.parametrize(("case", "msg", "expected"), BAD, ids=[c[0] for c in BAD])
def test_bad_requests_name_the_field(case: str, msg: Message, expected: tuple[str, str]) -> None:
    assert expected in violations(msg), case


def test_position_limit_map_checks_keys_and_values() -> None:
    request = pb.SetLimitsRequest(limits=limits())
    request.limits.max_position_by_symbol["btc"].value = "1"
    request.limits.max_position_by_symbol["ETH-USD"].value = "-1"
    found = violations(request)
    assert ('limits.max_position_by_symbol["btc"]', "string.pattern") in found
    assert ('limits.max_position_by_symbol["ETH-USD"]', "decimal.non_negative") in found


def test_denial_reasons_cover_every_check() -> None:
    names = {v.name.removeprefix("DENIAL_REASON_") for v in pb.DenialReason.DESCRIPTOR.values if v.number}
    assert names == {
        "ORDER_RATE",
        "MAX_NOTIONAL",
        "MAX_POSITION",
        "PRICE_COLLAR",
        "DAILY_LOSS",
        "TRADING_HALTED",
        "REDUCING_ONLY",
        "NO_QUOTE",
        "CLUSTER_EXPOSURE",
    }


def test_risk_events_route_per_tenant() -> None:
    registry = contracts.event_registry()
    event = ev.TradingStateChanged(
        previous_state=pb.TRADING_STATE_ACTIVE,
        state=pb.TRADING_STATE_HALTED,
        reason="kill switch",
        actor_id=UUID,
        changed_at=NOW,
    )
    assert violations(event) == set()
    for payload in (ev.OrderRiskRejected, ev.TradingStateChanged, ev.LimitsChanged, ev.RiskAlert):
        name = payload.DESCRIPTOR.full_name
        route = registry.route(name)
        assert route.kafka_topic == "trading.risk.events", name
        assert route.nats_subject == "risk.events.{tenant}", name
    name = ev.TradingStateChanged.DESCRIPTOR.full_name
    assert registry.partition_key(name, TENANT, event) == TENANT.encode()
    assert registry.nats_subject(name, TENANT, event) == f"risk.events.{TENANT}"


def test_rejection_events_need_at_least_one_denial() -> None:
    rejected = ev.OrderRiskRejected(check_id=UUID, client_order_id="ord-1", symbol="BTC-USD", rejected_at=NOW)
    assert ("denials", "repeated.min_items") in violations(rejected)
    rejected.denials.add(reason=pb.DENIAL_REASON_MAX_NOTIONAL, code="RISK_MAX_NOTIONAL_EXCEEDED")
    assert violations(rejected) == set()


def test_the_kill_switch_needs_the_admin_scope() -> None:
    service = pb.DESCRIPTOR.services_by_name["RiskService"]
    scopes = {
        m.name: list(contracts.method_policy(contracts.full_method_name(m)).scopes) for m in service.methods
    }
    assert scopes["SetTradingState"] == ["risk:admin"]
    assert scopes["SetLimits"] == ["risk:write"]
    assert scopes["GetLimits"] == scopes["GetTradingState"] == ["risk:read"]
