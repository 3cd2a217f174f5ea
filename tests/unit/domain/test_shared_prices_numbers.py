"""The shared numbers, prices and open PnL (domain/numbers.py, domain/prices.py,
domain/positions.py): what portfolio and risk both compute with."""

from __future__ import annotations

from decimal import Decimal, Inexact

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.numbers import EXACT, exact_sum, wire
from domain.positions import unrealized_pnl
from domain.prices import mark_price
from services.portfolio import domain as books
from services.risk import domain as risk

D = Decimal


def test_the_mark_is_the_mid_else_the_last_trade_else_none() -> None:
    assert mark_price(D("99.5"), D("100.25"), D("1")) == D("99.875")
    assert mark_price(D("99"), None, D("98.5")) == D("98.5")
    assert mark_price(D(0), D("101"), D("98.5")) == D("98.5")  # an unset contract decimal reads 0
    assert mark_price(None, D("101"), None) is None
    assert mark_price(D(0), D(0), D(0)) is None


def test_wire_rounds_half_even_to_twelve_digits_and_sums_are_exact() -> None:
    assert wire(D("0.0000000000005")) == 0
    assert wire(D("0.0000000000015")) == D("0.000000000002")
    assert exact_sum([D("0.1")] * 10) == 1
    with pytest.raises(Inexact):
        EXACT.add(D(10) ** 100, D(1))


def test_open_pnl_of_a_long_a_short_and_a_flat_position() -> None:
    assert unrealized_pnl(D(2), D(100), D(110)) == 20
    assert unrealized_pnl(D(-3), D(50), D(45)) == 15
    assert unrealized_pnl(D(0), None, D(45)) == 0


@given(
    st.decimals(min_value=D("-1000"), max_value=D("1000"), places=3).filter(lambda q: q != 0),
    st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2),
    st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2),
)
def test_portfolio_and_risk_value_an_open_position_alike(quantity: D, average: D, mark: D) -> None:
    valued = books.value_position(books.Position("BTC-USD", quantity, average), books.Mark(mark))
    assert valued.unrealized_pnl == risk.Position(quantity, average).unrealized(mark)
    assert risk.QuoteView(bid=mark, ask=mark).mark() == books.mark_price(mark, mark, D(0))
