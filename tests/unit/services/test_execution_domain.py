"""Pure order logic of execution: the transition table, fills, time in force,
paper matching and the contract conversions. No servers."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction

import protovalidate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trading.common.v1 import decimal_pb2, market_pb2
from trading.common.v1 import types_pb2 as common_types_pb2
from trading.execution.v1 import events_pb2, types_pb2

from services.execution.domain import (
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    WIRE_QUANTUM,
    Accept,
    Cancel,
    CancelReason,
    DuplicateFill,
    EventKind,
    Expire,
    InvalidFill,
    InvalidOrder,
    InvalidTransition,
    Liquidity,
    Order,
    OrderInput,
    OrderStatus,
    OrderType,
    Overfill,
    Quote,
    Reject,
    ReportFill,
    RequestCancel,
    Side,
    TimeInForce,
    Trigger,
    apply,
    apply_all,
    day_session_end,
    derive_execution_id,
    expiry_due,
    is_cancelable,
    match_quote,
    new_order,
    on_quote,
)
from services.execution.wire import (
    event_to_proto,
    fill_to_proto,
    order_from_proto,
    order_to_proto,
    quote_from_proto,
    status_changed_to_proto,
)

T0 = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
ORDER_ID = "0190f4a2-7c1e-7d3a-9b2f-1a2b3c4d5e6f"
D = Decimal


def make_order(
    *,
    side: Side = Side.BUY,
    type: OrderType = OrderType.LIMIT,
    tif: TimeInForce = TimeInForce.GTC,
    quantity: str = "10",
    limit: str | None = "100",
) -> Order:
    return new_order(
        order_id=ORDER_ID,
        tenant_id="tenant-a",
        client_order_id="c-1",
        symbol="BTC-USD",
        side=side,
        type=type,
        time_in_force=tif,
        quantity=D(quantity),
        limit_price=D(limit) if limit is not None and type is OrderType.LIMIT else None,
        created_at=T0,
        strategy_id="s-1",
        venue="paper",
    )


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fill(execution_id: str, price: str, quantity: str, seconds: int = 1) -> ReportFill:
    return ReportFill(at=at(seconds), execution_id=execution_id, price=D(price), quantity=D(quantity))


def accepted(order: Order | None = None) -> Order:
    new, _ = apply(order or make_order(), Accept(at=at(0), venue="paper", venue_order_id="v-1"))
    return new


def in_status(status: OrderStatus) -> Order:
    """An order of quantity 10 driven through the machine into ``status``."""
    paths: dict[OrderStatus, list[OrderInput]] = {
        OrderStatus.NEW: [],
        OrderStatus.ACCEPTED: [Accept(at=at(0))],
        OrderStatus.PARTIALLY_FILLED: [Accept(at=at(0)), fill("x-0", "100", "4")],
        OrderStatus.FILLED: [Accept(at=at(0)), fill("x-0", "100", "10")],
        OrderStatus.PENDING_CANCEL: [Accept(at=at(0)), RequestCancel(at=at(1))],
        OrderStatus.CANCELED: [Accept(at=at(0)), Cancel(at=at(1), reason=CancelReason.VENUE)],
        OrderStatus.REJECTED: [Reject(at=at(0), reason="RISK_MAX_NOTIONAL_EXCEEDED")],
        OrderStatus.EXPIRED: [Accept(at=at(0)), Expire(at=at(1))],
    }
    order, _ = apply_all(make_order(), paths[status])
    assert order.status is status
    return order


def firing(trigger: Trigger, order: Order) -> OrderInput:
    """An input that fires ``trigger`` on ``order`` (fills sized to partial or complete it)."""
    later = order.updated_at + timedelta(seconds=1)
    match trigger:
        case Trigger.ACCEPT:
            return Accept(at=later, venue_order_id="v-9")
        case Trigger.REJECT:
            return Reject(at=later, reason="VENUE_REJECTED", message="no")
        case Trigger.PARTIAL_FILL:
            return ReportFill(at=later, execution_id="x-new", price=D("99.5"), quantity=D("1"))
        case Trigger.FILL:
            return ReportFill(
                at=later, execution_id="x-new", price=D("99.5"), quantity=max(order.open_quantity, D(1))
            )
        case Trigger.REQUEST_CANCEL:
            return RequestCancel(at=later)
        case Trigger.CANCEL:
            return Cancel(at=later)
        case Trigger.EXPIRE:
            return Expire(at=later)


EVENT_OF_TRIGGER = {
    Trigger.ACCEPT: EventKind.ACCEPTED,
    Trigger.REJECT: EventKind.REJECTED,
    Trigger.PARTIAL_FILL: EventKind.FILL_REPORTED,
    Trigger.FILL: EventKind.FILL_REPORTED,
    Trigger.REQUEST_CANCEL: EventKind.CANCEL_REQUESTED,
    Trigger.CANCEL: EventKind.CANCELED,
    Trigger.EXPIRE: EventKind.EXPIRED,
}


# ----------------------------------------------------------------- contract mirror


@pytest.mark.parametrize(
    ("domain", "contract", "prefix"),
    [
        (OrderStatus, types_pb2.OrderStatus, "ORDER_STATUS_"),
        (TimeInForce, types_pb2.TimeInForce, "TIME_IN_FORCE_"),
        (CancelReason, types_pb2.CancelReason, "CANCEL_REASON_"),
        (Liquidity, types_pb2.Liquidity, "LIQUIDITY_"),
        (Side, common_types_pb2.Side, "SIDE_"),
        (OrderType, market_pb2.OrderType, "ORDER_TYPE_"),
    ],
)
def test_enums_mirror_the_contract_exactly(domain: type, contract: object, prefix: str) -> None:
    wire = {name.removeprefix(prefix): number for name, number in contract.items()}  # type: ignore[attr-defined]
    wire.pop("UNSPECIFIED")
    mine = {m.name: m.value for m in domain}  # type: ignore[attr-defined]
    mine.pop("UNSPECIFIED", None)
    assert mine == wire


def test_terminal_statuses_are_the_contracts() -> None:
    assert {s.name for s in TERMINAL_STATUSES} == {"FILLED", "CANCELED", "REJECTED", "EXPIRED"}
    assert frozenset(OrderStatus) - TERMINAL_STATUSES == OPEN_STATUSES


# ----------------------------------------------------------------- transition table


@pytest.mark.parametrize(
    ("status", "trigger", "expected"),
    [(s, t, e) for (s, t), e in TRANSITIONS.items()],
    ids=[f"{s.name}-{t.value}->{e.name}" for (s, t), e in TRANSITIONS.items()],
)
def test_every_valid_transition(status: OrderStatus, trigger: Trigger, expected: OrderStatus) -> None:
    order = in_status(status)
    event = firing(trigger, order)
    new, emitted = apply(order, event)
    assert new.status is expected
    assert new.version == order.version + 1
    assert new.updated_at == event.at
    assert [e.kind for e in emitted] == [EVENT_OF_TRIGGER[trigger]]
    assert emitted[0].order == new
    assert emitted[0].previous_status is status
    # The input order is a value: untouched.
    assert order.status is status


INVALID = [(s, t) for s, t in itertools.product(OrderStatus, Trigger) if (s, t) not in TRANSITIONS]


@pytest.mark.parametrize(("status", "trigger"), INVALID, ids=[f"{s.name}-{t.value}" for s, t in INVALID])
def test_every_invalid_transition_raises_and_changes_nothing(status: OrderStatus, trigger: Trigger) -> None:
    order = in_status(status)
    before = replace(order)
    with pytest.raises(InvalidTransition) as info:
        apply(order, firing(trigger, order))
    assert info.value.status is status
    if trigger in (Trigger.PARTIAL_FILL, Trigger.FILL):
        # On a FILLED order any fill would complete (over-complete) it.
        assert info.value.trigger in (Trigger.PARTIAL_FILL, Trigger.FILL)
    else:
        assert info.value.trigger is trigger
    assert order == before


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_terminal_states_are_final(status: OrderStatus) -> None:
    assert not any(s is status for s, _ in TRANSITIONS)
    order = in_status(status)
    for trigger in Trigger:
        with pytest.raises(InvalidTransition):
            apply(order, firing(trigger, order))
    assert not is_cancelable(order)


def test_versions_count_every_change() -> None:
    order, events = apply_all(
        make_order(),
        [
            Accept(at=at(0)),
            fill("a", "100", "3"),
            fill("b", "100", "3"),
            RequestCancel(at=at(2)),
            Cancel(at=at(3)),
        ],
    )
    assert order.version == 6
    assert [e.order.version for e in events] == [2, 3, 4, 5, 6]
    assert order.status is OrderStatus.CANCELED
    assert order.cancel_reason is CancelReason.CLIENT_REQUEST  # kept from the request
    assert order.filled_quantity == D(6)
    assert order.remaining_quantity == 0  # terminal


def test_apply_all_is_all_or_nothing() -> None:
    order = accepted()
    with pytest.raises(Overfill):
        apply_all(order, [fill("a", "100", "6"), fill("b", "100", "6")])
    assert order.filled_quantity == 0 and order.status is OrderStatus.ACCEPTED


def test_fills_while_pending_cancel_stay_pending_until_confirmed() -> None:
    order, events = apply_all(accepted(), [RequestCancel(at=at(1)), fill("a", "100", "4")])
    assert order.status is OrderStatus.PENDING_CANCEL
    assert events[-1].kind is EventKind.FILL_REPORTED
    assert events[-1].previous_status is OrderStatus.PENDING_CANCEL
    done, _ = apply(order, fill("b", "100", "6"))
    assert done.status is OrderStatus.FILLED


# ----------------------------------------------------------------- fills


def test_duplicate_fill_is_rejected_and_changes_nothing() -> None:
    order, _ = apply(accepted(), fill("x-1", "100", "4"))
    with pytest.raises(DuplicateFill) as info:
        apply(order, fill("x-1", "100", "4"))
    assert info.value.execution_id == "x-1"
    assert order.filled_quantity == D(4) and order.version == 3


def test_duplicate_fill_is_recognised_after_the_order_completed() -> None:
    order, _ = apply(accepted(), fill("x-1", "100", "10"))
    assert order.status is OrderStatus.FILLED
    with pytest.raises(DuplicateFill):
        apply(order, fill("x-1", "100", "10"))


def test_overfill_is_rejected_and_changes_nothing() -> None:
    order, _ = apply(accepted(), fill("x-1", "100", "7"))
    with pytest.raises(Overfill) as info:
        apply(order, fill("x-2", "100", "3.0000000001"))
    assert info.value.fill_quantity == D("3.0000000001")
    assert order.filled_quantity == D(7) and order.status is OrderStatus.PARTIALLY_FILLED
    exact, _ = apply(order, fill("x-2", "100", "3.000"))
    assert exact.status is OrderStatus.FILLED


@pytest.mark.parametrize(("price", "quantity"), [("100", "0"), ("100", "-1"), ("0", "1"), ("-5", "1")])
def test_non_positive_fills_are_rejected(price: str, quantity: str) -> None:
    order = accepted()
    with pytest.raises(InvalidFill):
        apply(order, fill("x", price, quantity))
    assert order.status is OrderStatus.ACCEPTED


def test_average_price_is_volume_weighted_and_exact() -> None:
    order, _ = apply_all(accepted(), [fill("a", "100", "1"), fill("b", "101", "2")])
    assert order.filled_notional == D(302)
    # 302 / 3 = 100.666..., rounded half-even to the contract's 12 places.
    assert order.average_fill_price == D("100.666666666667")
    msg = order_to_proto(order)
    assert msg.average_fill_price.value == "100.666666666667"
    assert msg.filled_quantity.value == "3"
    assert msg.remaining_quantity.value == "7"


def test_average_price_of_tiny_increments_is_exact() -> None:
    # Floats would drift here: 0.1 + 0.2 != 0.3.
    order = accepted(make_order(quantity="0.6"))
    order, _ = apply_all(
        order,
        [fill("a", "0.1", "0.1"), fill("b", "0.2", "0.2"), fill("c", "0.3", "0.3")],
    )
    assert order.status is OrderStatus.FILLED
    assert order.filled_quantity == D("0.6")
    assert order.filled_notional == D("0.14")
    assert order.average_fill_price == (D("0.14") / D("0.6")).quantize(WIRE_QUANTUM)


decimals_12 = st.decimals(min_value=D("0.000000000001"), max_value=D("999999"), places=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(decimals_12, decimals_12), min_size=1, max_size=20))
def test_fill_sums_match_exact_rational_arithmetic(fills: list[tuple[Decimal, Decimal]]) -> None:
    total = sum((q for _, q in fills), D(0))
    order = accepted(make_order(quantity=str(total)))
    order, events = apply_all(order, [fill(f"x-{i}", str(p), str(q)) for i, (p, q) in enumerate(fills)])
    assert order.status is OrderStatus.FILLED
    assert len(events) == len(fills)
    notional = sum((Fraction(p) * Fraction(q) for p, q in fills), Fraction(0))
    assert Fraction(order.filled_notional) == notional
    assert Fraction(order.filled_quantity) == Fraction(total)
    average = order.average_fill_price
    assert average is not None
    assert abs(Fraction(average) - notional / Fraction(total)) <= Fraction(1, 2 * 10**12)


# ----------------------------------------------------------------- creation rules


@pytest.mark.parametrize(
    ("type", "quantity", "limit"),
    [
        (OrderType.LIMIT, "0", "100"),
        (OrderType.LIMIT, "-1", "100"),
        (OrderType.LIMIT, "1", None),
        (OrderType.LIMIT, "1", "0"),
        (OrderType.MARKET, "1", "100"),
        (OrderType.MARKET, "NaN", None),
    ],
)
def test_new_order_refuses_inconsistent_fields(type: OrderType, quantity: str, limit: str | None) -> None:
    with pytest.raises(InvalidOrder):
        new_order(
            order_id=ORDER_ID,
            tenant_id="t",
            client_order_id="c",
            symbol="BTC-USD",
            side=Side.BUY,
            type=type,
            time_in_force=TimeInForce.GTC,
            quantity=D(quantity),
            limit_price=D(limit) if limit is not None else None,
            created_at=T0,
        )


def test_new_order_starts_new_at_version_one() -> None:
    order = make_order()
    assert (order.status, order.version, order.filled_quantity) == (OrderStatus.NEW, 1, D(0))
    assert order.average_fill_price is None
    assert order.remaining_quantity == D(10)


# ----------------------------------------------------------------- matching


def quote(bid: str = "99", bid_size: str = "5", ask: str = "101", ask_size: str = "3", seq: int = 7) -> Quote:
    return Quote(
        symbol="BTC-USD", bid=D(bid), bid_size=D(bid_size), ask=D(ask), ask_size=D(ask_size), sequence=seq
    )


def test_market_buy_takes_the_ask_up_to_its_size() -> None:
    order = accepted(make_order(type=OrderType.MARKET, quantity="10"))
    (got,) = match_quote(order, quote(), at=at(1), incoming=True)
    assert (got.price, got.quantity, got.liquidity) == (D(101), D(3), Liquidity.TAKER)


def test_market_sell_takes_the_bid() -> None:
    order = accepted(make_order(side=Side.SELL, type=OrderType.MARKET, quantity="2"))
    (got,) = match_quote(order, quote(), at=at(1), incoming=True)
    assert (got.price, got.quantity) == (D(99), D(2))


def test_marketable_limit_fills_at_the_touch_not_its_limit() -> None:
    order = accepted(make_order(limit="105", quantity="2"))
    (got,) = match_quote(order, quote(), at=at(1), incoming=True)
    assert (got.price, got.quantity, got.liquidity) == (D(101), D(2), Liquidity.TAKER)


@pytest.mark.parametrize(("side", "limit"), [(Side.BUY, "100.99"), (Side.SELL, "99.01")])
def test_non_marketable_limit_gets_nothing(side: Side, limit: str) -> None:
    order = accepted(make_order(side=side, limit=limit))
    assert match_quote(order, quote(), at=at(1), incoming=True) == ()


@pytest.mark.parametrize(("side", "limit"), [(Side.BUY, "101"), (Side.SELL, "99")])
def test_limit_at_the_touch_is_marketable(side: Side, limit: str) -> None:
    order = accepted(make_order(side=side, limit=limit, quantity="1"))
    (got,) = match_quote(order, quote(), at=at(1), incoming=True)
    assert got.price == D(limit)


def test_resting_limit_fills_at_its_limit_as_maker_when_the_market_crosses() -> None:
    order = accepted(make_order(limit="100", quantity="10"))
    assert match_quote(order, quote(), at=at(1), incoming=True) == ()  # rests
    crossed = quote(bid="97", ask="98.5", ask_size="4", seq=8)
    (got,) = match_quote(order, crossed, at=at(2), incoming=False)
    assert (got.price, got.quantity, got.liquidity) == (D(100), D(4), Liquidity.MAKER)


@pytest.mark.parametrize(
    "q",
    [
        quote(ask_size="0"),
        quote(ask="0"),
        Quote(symbol="ETH-USD", bid=D(99), bid_size=D(5), ask=D(101), ask_size=D(3)),
    ],
)
def test_no_fill_without_liquidity_or_on_another_symbol(q: Quote) -> None:
    order = accepted(make_order(type=OrderType.MARKET))
    assert match_quote(order, q, at=at(1), incoming=True) == ()


def test_orders_that_are_not_working_are_not_matched() -> None:
    for status in (OrderStatus.NEW, OrderStatus.PENDING_CANCEL, *TERMINAL_STATUSES):
        assert match_quote(in_status(status), quote(ask="1"), at=at(1), incoming=True) == ()


def test_partial_fills_across_quotes_complete_the_order() -> None:
    order = accepted(make_order(type=OrderType.MARKET, quantity="7"))
    for seq in (1, 2, 3):
        order, _ = apply_all(order, match_quote(order, quote(seq=seq), at=at(seq), incoming=seq == 1))
    assert order.status is OrderStatus.FILLED
    assert order.filled_quantity == D(7)  # 3 + 3 + 1
    assert len(order.execution_ids) == 3


def test_execution_ids_are_deterministic_so_a_replayed_quote_cannot_fill_twice() -> None:
    order = accepted(make_order(type=OrderType.MARKET, quantity="10"))
    first = match_quote(order, quote(seq=42), at=at(1), incoming=True)
    again = match_quote(order, quote(seq=42), at=at(1), incoming=True)
    assert first == again
    assert first[0].execution_id == derive_execution_id(ORDER_ID, 42)
    assert derive_execution_id(ORDER_ID, 43) != first[0].execution_id
    order, _ = apply_all(order, first)
    with pytest.raises(DuplicateFill):
        apply_all(order, again)
    given_id = match_quote(order, quote(seq=43), at=at(2), incoming=False, execution_id="exec-given")
    assert given_id[0].execution_id == "exec-given"


# ----------------------------------------------------------------- time in force


def test_ioc_fills_what_is_there_and_cancels_the_rest() -> None:
    order = accepted(make_order(type=OrderType.MARKET, tif=TimeInForce.IOC, quantity="10"))
    order, events = apply_all(order, on_quote(order, quote(), at=at(1), incoming=True))
    assert [e.kind for e in events] == [EventKind.FILL_REPORTED, EventKind.CANCELED]
    assert order.status is OrderStatus.CANCELED
    assert order.cancel_reason is CancelReason.UNFILLED_REMAINDER
    assert order.filled_quantity == D(3)


def test_ioc_that_fills_completely_is_not_canceled() -> None:
    order = accepted(make_order(type=OrderType.MARKET, tif=TimeInForce.IOC, quantity="3"))
    order, events = apply_all(order, on_quote(order, quote(), at=at(1), incoming=True))
    assert [e.kind for e in events] == [EventKind.FILL_REPORTED]
    assert order.status is OrderStatus.FILLED


def test_ioc_limit_not_marketable_is_canceled_without_fill() -> None:
    order = accepted(make_order(tif=TimeInForce.IOC, limit="100"))
    order, _ = apply_all(order, on_quote(order, quote(), at=at(1), incoming=True))
    assert order.status is OrderStatus.CANCELED and order.filled_quantity == 0


def test_ioc_without_any_quote_is_canceled() -> None:
    order = accepted(make_order(type=OrderType.MARKET, tif=TimeInForce.IOC))
    order, _ = apply_all(order, on_quote(order, None, at=at(1), incoming=True))
    assert order.status is OrderStatus.CANCELED


def test_fok_fills_all_or_nothing() -> None:
    too_big = accepted(make_order(type=OrderType.MARKET, tif=TimeInForce.FOK, quantity="4"))
    planned = on_quote(too_big, quote(ask_size="3"), at=at(1), incoming=True)
    assert [type(p) for p in planned] == [Cancel]
    killed, _ = apply_all(too_big, planned)
    assert killed.status is OrderStatus.CANCELED and killed.filled_quantity == 0
    assert killed.cancel_reason is CancelReason.UNFILLED_REMAINDER

    fits = accepted(make_order(type=OrderType.MARKET, tif=TimeInForce.FOK, quantity="3"))
    filled, events = apply_all(fits, on_quote(fits, quote(ask_size="3"), at=at(1), incoming=True))
    assert filled.status is OrderStatus.FILLED and filled.filled_quantity == D(3)
    assert [e.kind for e in events] == [EventKind.FILL_REPORTED]


def test_gtc_rests_and_fills_later() -> None:
    order = accepted(make_order(tif=TimeInForce.GTC, limit="100", quantity="5"))
    assert on_quote(order, quote(), at=at(1), incoming=True) == ()
    far_future = at(86400 * 30)
    assert on_quote(order, quote(), at=far_future, incoming=False, session_end=at(60)) == ()
    order, _ = apply_all(
        order, on_quote(order, quote(ask="99", ask_size="5", seq=9), at=far_future, incoming=False)
    )
    assert order.status is OrderStatus.FILLED
    assert order.average_fill_price == D(100)


def test_day_rests_until_the_session_end_then_expires() -> None:
    order = accepted(make_order(tif=TimeInForce.DAY, limit="100", quantity="5"))
    end = day_session_end(order.created_at)
    assert end == datetime(2024, 6, 4, 0, 0, tzinfo=UTC)
    before = end - timedelta(microseconds=1)
    assert on_quote(order, quote(), at=before, incoming=False, session_end=end) == ()
    partly, _ = apply_all(
        order, on_quote(order, quote(ask="99", ask_size="2"), at=before, incoming=False, session_end=end)
    )
    assert partly.status is OrderStatus.PARTIALLY_FILLED
    planned = on_quote(partly, quote(ask="99"), at=end, incoming=False, session_end=end)
    assert [type(p) for p in planned] == [Expire]  # no fill at or after the close
    expired, events = apply_all(partly, planned)
    assert expired.status is OrderStatus.EXPIRED
    assert events[0].kind is EventKind.EXPIRED
    assert expired.filled_quantity == D(2) and expired.remaining_quantity == 0


def test_expiry_applies_only_to_open_day_orders() -> None:
    end = at(60)
    assert expiry_due(accepted(make_order(tif=TimeInForce.GTC)), at(61), end) == ()
    assert expiry_due(in_status(OrderStatus.FILLED), at(61), end) == ()
    assert expiry_due(accepted(make_order(tif=TimeInForce.DAY)), at(59), end) == ()
    assert len(expiry_due(accepted(make_order(tif=TimeInForce.DAY)), at(60), end)) == 1


@pytest.mark.parametrize(
    ("created", "close", "expected"),
    [
        (datetime(2024, 6, 3, 23, 59, 59, tzinfo=UTC), time(0), datetime(2024, 6, 4, tzinfo=UTC)),
        (datetime(2024, 6, 3, 0, 0, tzinfo=UTC), time(0), datetime(2024, 6, 4, tzinfo=UTC)),
        (datetime(2024, 6, 3, 15, 0, tzinfo=UTC), time(20), datetime(2024, 6, 3, 20, tzinfo=UTC)),
        (datetime(2024, 6, 3, 21, 0, tzinfo=UTC), time(20), datetime(2024, 6, 4, 20, tzinfo=UTC)),
    ],
)
def test_day_session_end(created: datetime, close: time, expected: datetime) -> None:
    assert day_session_end(created, close) == expected


# ----------------------------------------------------------------- contract conversions


def test_order_round_trips_through_the_contract() -> None:
    order, _ = apply_all(accepted(), [fill("a", "100.5", "2"), fill("b", "100.25", "2")])
    msg = order_to_proto(order)
    assert msg.status == types_pb2.ORDER_STATUS_PARTIALLY_FILLED
    assert msg.average_fill_price.value == "100.375"
    assert msg.limit_price.value == "100"
    assert msg.version == 4
    back = order_from_proto(msg, tenant_id="tenant-a", execution_ids=order.execution_ids)
    assert back == order


def test_market_order_has_no_limit_price_and_no_average_before_fills() -> None:
    msg = order_to_proto(accepted(make_order(type=OrderType.MARKET)))
    assert not msg.HasField("limit_price")
    assert not msg.HasField("average_fill_price")
    assert order_from_proto(msg, tenant_id="t").limit_price is None


def test_order_from_proto_refuses_unknown_enums() -> None:
    msg = order_to_proto(accepted())
    msg.status = types_pb2.OrderStatus.ValueType(42)
    with pytest.raises(InvalidOrder):
        order_from_proto(msg, tenant_id="t")


def test_quote_from_proto() -> None:
    msg = market_pb2.Quote(
        symbol="BTC-USD",
        bid_price=decimal_pb2.Decimal(value="64000.5"),
        bid_size=decimal_pb2.Decimal(value="1.25"),
        ask_price=decimal_pb2.Decimal(value="64001"),
        ask_size=decimal_pb2.Decimal(value="0.5"),
        sequence=12,
    )
    assert quote_from_proto(msg) == Quote("BTC-USD", D("64000.5"), D("1.25"), D("64001"), D("0.5"), 12)


def test_fill_converts_to_the_contract_with_fee() -> None:
    _, (event,) = apply(
        accepted(),
        ReportFill(
            at=at(1),
            execution_id="0190f4a2-7c1e-7d3a-9b2f-000000000001",
            price=D("100"),
            quantity=D("1"),
            fee=D("0.05"),
            fee_currency="USD",
        ),
    )
    assert event.fill is not None
    msg = fill_to_proto(event.fill)
    assert msg.fee.currency == "USD" and msg.fee.amount.value == "0.05"
    assert (msg.execution_id, msg.order_id, msg.symbol) == (event.fill.execution_id, ORDER_ID, "BTC-USD")
    assert (msg.price.value, msg.quantity.value) == ("100", "1")
    assert msg.side == common_types_pb2.SIDE_BUY and msg.liquidity == types_pb2.LIQUIDITY_TAKER
    assert msg.executed_at.ToDatetime(tzinfo=UTC) == at(1)
    protovalidate.validate(msg)


def test_events_convert_to_their_contract_payloads_and_validate() -> None:
    order = make_order()
    flows: list[list[OrderInput]] = [
        [
            Accept(at=at(0)),
            fill("0190f4a2-7c1e-7d3a-9b2f-00000000000a", "100", "4"),
            RequestCancel(at=at(2)),
            Cancel(at=at(3)),
        ],
        [Reject(at=at(0), reason="RISK_TRADING_HALTED", message="halted")],
        [Accept(at=at(0)), Expire(at=at(5))],
    ]
    seen: set[type] = set()
    for flow in flows:
        _, events = apply_all(order, flow)
        for event in events:
            payload = event_to_proto(event)
            seen.add(type(payload))
            assert payload.order_id == ORDER_ID
            assert payload.order.version == event.order.version
            protovalidate.validate(payload)
            nats = status_changed_to_proto(event)
            protovalidate.validate(nats)
            assert nats.previous_status == event.previous_status.value
            assert nats.HasField("fill") == (event.kind is EventKind.FILL_REPORTED)
    assert seen == {
        events_pb2.OrderAccepted,
        events_pb2.OrderFillReported,
        events_pb2.OrderCancelRequested,
        events_pb2.OrderCanceled,
        events_pb2.OrderRejected,
        events_pb2.OrderExpired,
    }
