"""Portfolio accounting (services.portfolio.domain): hand-computed tables and
properties (hypothesis). Every number is a Decimal; none passes through float."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.portfolio import domain
from services.portfolio.domain import (
    DEFAULT_STARTING_CASH,
    Fill,
    InvalidFillError,
    Mark,
    Position,
    Side,
    apply_fill,
    apply_fills,
    mark_price,
    value_portfolio,
    value_position,
)

BUY, SELL = Side.BUY, Side.SELL
SYM = "BTC-USD"


def f(side: Side, qty: str, price: str, fee: str = "0", symbol: str = SYM) -> Fill:
    return Fill(symbol, side, D(qty), D(price), D(fee))


def cash_after(fills: list[Fill], start: D = DEFAULT_STARTING_CASH) -> D:
    for fill in fills:
        start += fill.cash_change
    return start


@dataclass(frozen=True)
class Case:
    name: str
    fills: list[Fill]
    quantity: str
    average: str | None
    realized: str
    fees: str
    cash_change: str


CASES = [
    Case("open long", [f(BUY, "2", "100")], "2", "100", "0", "0", "-200"),
    Case("add re-weights", [f(BUY, "1", "100"), f(BUY, "3", "120")], "4", "115", "0", "0", "-460"),
    Case("reduce keeps average", [f(BUY, "4", "100"), f(SELL, "1", "110")], "3", "100", "10", "0", "-290"),
    Case("close to flat", [f(BUY, "2", "100"), f(SELL, "2", "90")], "0", None, "-20", "0", "-20"),
    Case(
        "flip long to short resets average",
        [f(BUY, "10", "100"), f(SELL, "15", "110")],
        "-5",
        "110",
        "100",
        "0",
        "650",
    ),
    Case("open short", [f(SELL, "3", "50")], "-3", "50", "0", "0", "150"),
    Case("cover short at a profit", [f(SELL, "3", "50"), f(BUY, "1", "40")], "-2", "50", "10", "0", "110"),
    Case(
        "flip short to long",
        [f(SELL, "2", "50"), f(BUY, "5", "60")],
        "3",
        "60",
        "-20",
        "0",
        "-200",
    ),
    Case(
        "fees go to fees_paid and cash, not realised",
        [f(BUY, "1", "100", "0.25"), f(SELL, "1", "101", "0.3")],
        "0",
        None,
        "1",
        "0.55",
        "0.45",
    ),
    Case(
        "fractional crypto sizes stay exact",
        [f(BUY, "0.00001", "65000.01"), f(BUY, "0.00002", "65000.04"), f(SELL, "0.00003", "65001")],
        "0",
        None,
        "0.0000291",
        "0",
        "0.0000291",
    ),
    Case(
        "re-open after flat starts a new average, realised accumulates",
        [f(BUY, "1", "10"), f(SELL, "1", "12"), f(BUY, "1", "20"), f(SELL, "1", "19")],
        "0",
        None,
        "1",
        "0",
        "1",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fill_table(case: Case) -> None:
    position = apply_fills(Position(SYM), case.fills)
    assert position.quantity == D(case.quantity)
    assert position.average_price == (D(case.average) if case.average is not None else None)
    assert position.realized_pnl == D(case.realized)
    assert position.fees_paid == D(case.fees)
    assert position.version == len(case.fills)
    assert cash_after(case.fills) - DEFAULT_STARTING_CASH == D(case.cash_change)


def test_outcome_reports_previous_quantity_and_this_fills_pnl() -> None:
    long = apply_fills(Position(SYM), [f(BUY, "10", "100")])
    outcome = apply_fill(long, f(SELL, "4", "105", "0.1"))
    assert outcome.previous_quantity == D(10)
    assert outcome.realized_pnl_change == D(20)
    assert outcome.fee == D("0.1")
    assert outcome.cash_change == D("419.9")


def test_non_terminating_average_is_rounded_to_12_places_half_even() -> None:
    position = apply_fills(Position(SYM), [f(BUY, "1", "1"), f(BUY, "2", "2")])
    assert position.average_price == D("1.666666666667")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quantity": D(0)},
        {"quantity": D(-1)},
        {"price": D(0)},
        {"fee": D("-0.01")},
        {"quantity": D("NaN")},
        {"symbol": "btc-usd"},
    ],
)
def test_invalid_fills_are_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"symbol": SYM, "side": BUY, "quantity": D(1), "price": D(1), "fee": D(0)}
    with pytest.raises(InvalidFillError):
        Fill(**{**base, **kwargs})  # type: ignore[arg-type]


def test_fill_of_another_symbol_is_refused() -> None:
    with pytest.raises(InvalidFillError):
        apply_fill(Position("ETH-USD"), f(BUY, "1", "1"))


@pytest.mark.parametrize(
    ("bid", "ask", "last", "mark"),
    [
        ("100", "102", "50", "101"),
        ("0.000000000001", "0.000000000002", "0", "0.0000000000015"),
        ("0", "102", "99", "99"),
        ("100", "0", "99", "99"),
        ("0", "0", "0", None),
    ],
)
def test_mark_is_mid_else_last(bid: str, ask: str, last: str, mark: str | None) -> None:
    assert mark_price(D(bid), D(ask), D(last)) == (D(mark) if mark is not None else None)


def test_valuation_long_short_and_unmarked() -> None:
    long = apply_fills(Position("AAA"), [f(BUY, "2", "100", symbol="AAA")])
    short = apply_fills(Position("BBB"), [f(SELL, "3", "50", symbol="BBB")])
    unmarked = apply_fills(Position("CCC"), [f(BUY, "1", "7", symbol="CCC")])
    closed = apply_fills(Position("DDD"), [f(BUY, "1", "7", "1", "DDD"), f(SELL, "1", "9", symbol="DDD")])
    marks = {"AAA": Mark(D("110")), "BBB": Mark(D("40"))}
    cash = D(1000)
    value = value_portfolio(cash, [unmarked, short, closed, long], marks)
    assert [v.position.symbol for v in value.positions] == ["AAA", "BBB", "CCC", "DDD"]
    assert [v.position.symbol for v in value.open_positions] == ["AAA", "BBB", "CCC"]
    aaa, bbb, ccc, _ = value.positions
    assert (aaa.market_value, aaa.cost_basis, aaa.unrealized_pnl) == (D(220), D(200), D(20))
    assert (bbb.market_value, bbb.cost_basis, bbb.unrealized_pnl) == (D(-120), D(-150), D(30))
    assert (ccc.mark, ccc.market_value, ccc.unrealized_pnl) == (None, D(7), D(0))
    assert value.market_value == D(220 - 120 + 7)
    assert value.gross_exposure == D(220 + 120 + 7)
    assert value.equity == cash + D(107)
    assert value.total_unrealized_pnl == D(50)
    assert value.total_realized_pnl == D(2)
    assert value.total_fees == D(1)


def test_flat_position_values_to_zero() -> None:
    flat = value_position(Position(SYM), Mark(D(5)))
    assert (flat.market_value, flat.cost_basis, flat.unrealized_pnl) == (D(0), D(0), D(0))


def test_domain_uses_no_float() -> None:
    modules = [
        domain,
        *(
            importlib.import_module(m.name)
            for m in pkgutil.iter_modules(domain.__path__, "services.portfolio.domain.")
        ),
    ]
    assert len(modules) > 2  # the package and its modules
    floats = [
        (module.__name__, n)
        for module in modules
        for n in ast.walk(ast.parse(inspect.getsource(module)))
        if (isinstance(n, ast.Constant) and isinstance(n.value, float))
        or (isinstance(n, ast.Name) and n.id == "float")
    ]
    assert floats == []


# ---------------------------------------------------------------- properties

prices = st.decimals(
    min_value=D("0.01"), max_value=D("100000"), places=2, allow_nan=False, allow_infinity=False
)
quantities = st.decimals(
    min_value=D("0.001"), max_value=D("1000"), places=3, allow_nan=False, allow_infinity=False
)
fees = st.decimals(min_value=D(0), max_value=D("10"), places=2, allow_nan=False, allow_infinity=False)
sides = st.sampled_from([BUY, SELL])
buys = st.builds(lambda q, p: Fill(SYM, BUY, q, p), quantities, prices)
fills_st = st.builds(lambda s, q, p, fee: Fill(SYM, s, q, p, fee), sides, quantities, prices, fees)


@given(q=quantities, p=prices)
def test_round_trip_at_one_price_leaves_nothing(q: D, p: D) -> None:
    for first, second in ((BUY, SELL), (SELL, BUY)):
        fills = [Fill(SYM, first, q, p), Fill(SYM, second, q, p)]
        position = apply_fills(Position(SYM), fills)
        assert position.quantity == 0 and position.average_price is None
        assert position.realized_pnl == 0
        assert cash_after(fills) == DEFAULT_STARTING_CASH


@given(fills=st.lists(fills_st, min_size=1, max_size=12), data=st.data())
def test_quantity_cash_and_equity_do_not_depend_on_fill_order(fills: list[Fill], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(fills))
    mark = {SYM: Mark(data.draw(prices))}
    one = apply_fills(Position(SYM), fills)
    two = apply_fills(Position(SYM), shuffled)
    assert one.quantity == two.quantity
    assert one.fees_paid == two.fees_paid
    assert cash_after(fills) == cash_after(shuffled)
    equity_one = value_portfolio(cash_after(fills), [one], mark).equity
    equity_two = value_portfolio(cash_after(shuffled), [two], mark).equity
    assert equity_one == equity_two


@given(fills=st.lists(fills_st, min_size=1, max_size=12), m=prices)
@settings(max_examples=200)
def test_pnl_explains_equity(fills: list[Fill], m: D) -> None:
    """equity - starting cash == realised + unrealised - fees, up to the
    12-digit rounding of re-weighted averages (exact when none was needed)."""
    position = apply_fills(Position(SYM), fills)
    value = value_portfolio(cash_after(fills), [position], {SYM: Mark(m)})
    lhs = value.equity - DEFAULT_STARTING_CASH
    rhs = value.total_realized_pnl + value.total_unrealized_pnl - value.total_fees
    tolerance = len(fills) * sum((x.quantity for x in fills), D(0)) * D("1e-12")
    assert abs(lhs - rhs) <= tolerance


@given(
    opening=st.lists(
        st.builds(lambda q, p: Fill(SYM, BUY, q, p), quantities, prices), min_size=1, max_size=5
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=6),
    exit_price=prices,
)
def test_realized_pnl_does_not_depend_on_how_a_close_is_split(
    opening: list[Fill], cuts: list[int], exit_price: D
) -> None:
    held = apply_fills(Position(SYM), opening)
    # Split the whole quantity into parts proportional to `cuts` (exactly).
    total = held.quantity
    parts = [total * c / sum(cuts) for c in cuts[:-1]]
    parts = [p.quantize(D("0.001")) for p in parts if p.quantize(D("0.001")) > 0]
    parts.append(total - sum(parts, D(0)))
    if parts[-1] <= 0:
        parts = [total]
    in_one = apply_fill(held, Fill(SYM, SELL, total, exit_price)).position
    in_parts = apply_fills(held, [Fill(SYM, SELL, q, exit_price) for q in parts])
    assert in_parts.quantity == in_one.quantity == 0
    assert in_parts.realized_pnl == in_one.realized_pnl == (exit_price - held.average_price) * total  # type: ignore[operator]


@given(fills=st.lists(fills_st, min_size=1, max_size=12))
def test_reductions_never_move_the_average_price(fills: list[Fill]) -> None:
    position = Position(SYM)
    for fill in fills:
        after = apply_fill(position, fill).position
        reducing = position.quantity != 0 and (fill.signed_quantity > 0) != (position.quantity > 0)
        if reducing and after.quantity != 0 and (after.quantity > 0) == (position.quantity > 0):
            assert after.average_price == position.average_price
        if after.quantity == 0:
            assert after.average_price is None
        position = after
