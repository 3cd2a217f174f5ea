"""Pure risk checks and PnL bookkeeping (services.risk.domain), table-driven."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest
from trading.common.v1 import market_pb2, types_pb2
from trading.risk.v1 import risk_service_pb2 as pb

from services.risk import domain
from services.risk.domain import (
    DenialReason as R,
)
from services.risk.domain import (
    OrderIntent,
    OrderType,
    Position,
    QuoteView,
    RiskSnapshot,
    Side,
    TradingState,
    check_order,
)

LIMITS = domain.Limits(
    max_orders_per_second=10,
    max_order_notional=D(10_000),
    default_max_position=D(10),
    price_collar_bps=100,  # 1%
    daily_loss_limit=D(1_000),
    max_quote_age_s=5.0,
    max_position_by_symbol={"ETH-USD": D(50), "DOGE-USD": D(0), "XL-USD": D(1000)},
)
QUOTE = QuoteView(bid=D(99), ask=D(101), last=D(100), age_s=0.1)
BASE = RiskSnapshot(
    limits=LIMITS,
    state=TradingState.ACTIVE,
    position=D(0),
    orders_in_window=0,
    daily_pnl=D(0),
    quote=QUOTE,
)


def buy(qty: str, price: str | None = None, symbol: str = "BTC-USD") -> OrderIntent:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderIntent(symbol, Side.BUY, D(qty), kind, D(price) if price is not None else None)


def sell(qty: str, price: str | None = None, symbol: str = "BTC-USD") -> OrderIntent:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderIntent(symbol, Side.SELL, D(qty), kind, D(price) if price is not None else None)


CASES: list[tuple[str, OrderIntent, dict[str, object], tuple[R, ...]]] = [
    # (id, order, snapshot changes, expected denials in order)
    ("market buy approved", buy("1"), {}, ()),
    ("limit buy approved", buy("1", "101"), {}, ()),
    # ---- order rate (window excludes this order; a retry of a counted order is never limited)
    ("rate below limit", buy("1"), {"orders_in_window": 9}, ()),
    ("rate at limit", buy("1"), {"orders_in_window": 10}, (R.ORDER_RATE,)),
    ("rate over limit", buy("1"), {"orders_in_window": 11}, (R.ORDER_RATE,)),
    ("rate retry already counted", buy("1"), {"orders_in_window": 10, "already_counted": True}, ()),
    # ---- notional: limit price, or the touch (ask for buys, bid for sells) for market orders
    ("notional exactly at max (limit)", buy("100", "100", "XL-USD"), {}, ()),
    ("notional over max (limit)", buy("100.01", "100", "XL-USD"), {}, (R.MAX_NOTIONAL,)),
    ("market buy uses ask", buy("99.1", symbol="XL-USD"), {}, (R.MAX_NOTIONAL,)),  # 99.1 x 101 > 10000
    ("market sell uses bid", sell("101.02", symbol="XL-USD"), {}, (R.MAX_NOTIONAL,)),  # x 99 > 10000
    ("market sell under max", sell("101", symbol="XL-USD"), {}, ()),  # 101 x 99 = 9999
    # ---- position: symbol-specific or default, after the order
    ("position to exactly max", buy("4"), {"position": D(6)}, ()),
    ("position over default max", buy("5"), {"position": D(6)}, (R.MAX_POSITION,)),
    ("short over default max", sell("11"), {}, (R.MAX_POSITION,)),
    ("symbol limit overrides default", buy("40", symbol="ETH-USD"), {}, ()),
    ("symbol limit zero forbids holding", buy("1", symbol="DOGE-USD"), {}, (R.MAX_POSITION,)),
    ("over limit may still reduce", sell("5"), {"position": D(20)}, ()),
    ("over limit may not add", buy("1"), {"position": D(20)}, (R.MAX_POSITION,)),
    # ---- collar: |limit - touch| / touch <= 100 bps, edges pass
    ("collar buy at upper edge", buy("1", "102.01"), {}, ()),  # 1.01 / 101 = 100 bps
    ("collar buy above edge", buy("1", "102.02"), {}, (R.PRICE_COLLAR,)),
    ("collar buy at lower edge", buy("1", "99.99"), {}, ()),
    ("collar buy below edge", buy("1", "99.98"), {}, (R.PRICE_COLLAR,)),
    ("collar sell at edge vs bid", sell("1", "98.01"), {"position": D(5)}, ()),  # 0.99 / 99 = 100 bps
    ("collar sell past edge", sell("1", "98.00"), {"position": D(5)}, (R.PRICE_COLLAR,)),
    ("market order has no collar", buy("1"), {"quote": QuoteView(D(1), D(500), age_s=0)}, ()),
    # ---- quotes
    ("no quote market", buy("1"), {"quote": None}, (R.NO_QUOTE,)),
    (
        "no quote limit still sized",
        buy("200", "100"),
        {"quote": None},
        (R.NO_QUOTE, R.MAX_NOTIONAL, R.MAX_POSITION),
    ),
    ("stale quote", buy("1"), {"quote": replace(QUOTE, age_s=5.01)}, (R.NO_QUOTE,)),
    ("quote at max age", buy("1"), {"quote": replace(QUOTE, age_s=5.0)}, ()),
    ("quote of unknown age", buy("1"), {"quote": replace(QUOTE, age_s=None)}, (R.NO_QUOTE,)),
    ("buy needs the ask side", buy("1"), {"quote": replace(QUOTE, ask=None)}, (R.NO_QUOTE,)),
    ("sell needs only the bid", sell("1"), {"quote": replace(QUOTE, ask=None)}, ()),
    # ---- daily loss: only non-reducing orders are denied
    ("loss below limit", buy("1"), {"daily_pnl": D("-999.99")}, ()),
    ("loss at limit", buy("1"), {"daily_pnl": D(-1000)}, (R.DAILY_LOSS,)),
    ("loss at limit, reducing allowed", sell("1"), {"daily_pnl": D(-1000), "position": D(3)}, ()),
    # ---- trading state
    ("halted denies", buy("1"), {"state": TradingState.HALTED}, (R.TRADING_HALTED,)),
    (
        "halted denies reducing too",
        sell("1"),
        {"state": TradingState.HALTED, "position": D(3)},
        (R.TRADING_HALTED,),
    ),
    ("reducing allows reduce long", sell("3"), {"state": TradingState.REDUCING, "position": D(3)}, ()),
    ("reducing allows reduce short", buy("2"), {"state": TradingState.REDUCING, "position": D(-3)}, ()),
    (
        "reducing denies increase",
        buy("1"),
        {"state": TradingState.REDUCING, "position": D(3)},
        (R.REDUCING_ONLY,),
    ),
    (
        "reducing denies flip",
        sell("4"),
        {"state": TradingState.REDUCING, "position": D(3)},
        (R.REDUCING_ONLY,),
    ),
    ("reducing denies open from flat", sell("1"), {"state": TradingState.REDUCING}, (R.REDUCING_ONLY,)),
    # ---- combinations: every failure, in CHECK_ORDER order
    (
        "everything fails",
        buy("200", "150"),
        {"state": TradingState.HALTED, "orders_in_window": 10, "daily_pnl": D(-5000)},
        (R.TRADING_HALTED, R.DAILY_LOSS, R.ORDER_RATE, R.PRICE_COLLAR, R.MAX_NOTIONAL, R.MAX_POSITION),
    ),
    (
        "reducing + loss + stale",
        buy("1"),
        {"state": TradingState.REDUCING, "daily_pnl": D(-5000), "quote": replace(QUOTE, age_s=60)},
        (R.REDUCING_ONLY, R.DAILY_LOSS, R.NO_QUOTE),
    ),
]


@pytest.mark.parametrize(("order", "changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_order(order: OrderIntent, changes: dict[str, object], expected: tuple[R, ...]) -> None:
    result = check_order(order, replace(BASE, **changes))  # type: ignore[arg-type]
    assert result.reasons == expected
    assert result.approved == (not expected)
    for denial in result.denials:
        assert denial.code.startswith("RISK_") and denial.message


def test_result_carries_reference_notional_projection_and_numbers() -> None:
    market = check_order(buy("2"), replace(BASE, position=D(1)))
    assert (market.reference_price, market.notional, market.projected_position) == (D(101), D(202), D(3))
    limit = check_order(sell("2", "99.5"), BASE)
    assert (limit.reference_price, limit.notional, limit.projected_position) == (D("99.5"), D(199), D(-2))
    big = check_order(buy("100", "101"), BASE)
    notional = next(d for d in big.denials if d.reason is R.MAX_NOTIONAL)
    assert (notional.limit, notional.actual) == (D(10_000), D(10_100))
    assert notional.message == "notional 10100 exceeds 10000"
    collar = check_order(buy("1", "103"), BASE).denials[0]
    assert collar.reason is R.PRICE_COLLAR and collar.limit == D(100) and collar.actual == D("198.02")
    none = check_order(buy("1"), replace(BASE, quote=None))
    assert none.reference_price is None and none.notional is None and not none.stale_quote
    assert check_order(buy("1"), replace(BASE, quote=replace(QUOTE, age_s=9))).stale_quote


@pytest.mark.parametrize(
    ("position", "side", "qty", "reduces"),
    [
        ("5", Side.SELL, "5", True),
        ("5", Side.SELL, "5.0001", False),
        ("5", Side.BUY, "1", False),
        ("-5", Side.BUY, "0.5", True),
        ("-5", Side.SELL, "1", False),
        ("0", Side.SELL, "1", False),
        ("0", Side.BUY, "1", False),
    ],
)
def test_reduces_position(position: str, side: Side, qty: str, reduces: bool) -> None:
    assert domain.reduces_position(D(position), side, D(qty)) is reduces


@pytest.mark.parametrize(
    ("start", "side", "qty", "price", "after", "realized"),
    [
        (Position(), Side.BUY, "2", "100", Position(D(2), D(100)), "0"),
        (Position(D(2), D(100)), Side.BUY, "2", "110", Position(D(4), D(105)), "0"),
        (Position(D(4), D(105)), Side.SELL, "1", "115", Position(D(3), D(105)), "10"),
        (Position(D(3), D(105)), Side.SELL, "3", "100", Position(), "-15"),
        (Position(D(1), D(100)), Side.SELL, "3", "90", Position(D(-2), D(90)), "-10"),  # flip
        (Position(D(-2), D(90)), Side.BUY, "1", "80", Position(D(-1), D(90)), "10"),  # short gains
        (Position(D(-2), D(90)), Side.SELL, "1", "93", Position(D(-3), D(91)), "0"),
        (Position(D(3), D(1)), Side.BUY, "1", "2", Position(D(4), D("1.25")), "0"),
        (Position(D(1), D(0)), Side.BUY, "2", "1", Position(D(3), D("0.666666666667")), "0"),
    ],
)
def test_apply_fill(
    start: Position, side: Side, qty: str, price: str, after: Position, realized: str
) -> None:
    assert domain.apply_fill(start, side, D(qty), D(price)) == (after, D(realized))


def test_daily_pnl_and_loss_levels() -> None:
    positions = {"A": Position(D(2), D(100)), "B": Position(D(-1), D(50)), "C": Position(D(1), D(10))}
    marks: dict[str, D | None] = {"A": D(90), "B": D(60), "C": None}
    assert domain.daily_pnl(D(-5), positions, marks) == D(-5 - 20 - 10)
    assert QUOTE.mark() == D(100) and QuoteView(None, D(3), last=D(2)).mark() == D(2)
    assert domain.loss_level(D(-799), D(1000)) is domain.LossLevel.OK
    assert domain.loss_level(D(-800), D(1000)) is domain.LossLevel.WARNING
    assert domain.loss_level(D(-1000), D(1000)) is domain.LossLevel.BREACHED
    assert domain.loss_level(D(500), D(1000)) is domain.LossLevel.OK


def test_enums_match_the_contract() -> None:
    for reason in R:
        assert pb.DenialReason.Value(f"DENIAL_REASON_{reason.name}") == reason.value
    for state in TradingState:
        assert pb.TradingState.Value(f"TRADING_STATE_{state.name}") == state.value
    assert int(types_pb2.Side.Value("SIDE_SELL")) == Side.SELL.value
    assert int(market_pb2.OrderType.Value("ORDER_TYPE_LIMIT")) == OrderType.LIMIT.value
    # Every reason is checked, and reported in one fixed order.
    assert sorted(domain.CHECK_ORDER) == sorted(R)
    assert R.MAX_NOTIONAL.code == "RISK_MAX_NOTIONAL_EXCEEDED"
