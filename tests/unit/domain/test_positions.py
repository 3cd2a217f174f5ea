"""The shared position arithmetic (domain/positions.py), and that risk's and
portfolio's views of a position, both built on it, agree on any fill sequence."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.numbers import ZERO
from domain.positions import Side, after_fill
from services.portfolio import domain as books
from services.risk import domain as risk

D = Decimal


def test_open_add_reduce_flip_and_close() -> None:
    opened = after_fill(ZERO, None, Side.BUY, D(2), D(100))
    assert (opened.quantity, opened.average_price, opened.realized) == (D(2), D(100), ZERO)
    added = after_fill(opened.quantity, opened.average_price, Side.BUY, D(1), D(130))
    assert (added.quantity, added.average_price) == (D(3), D(110))
    reduced = after_fill(added.quantity, added.average_price, Side.SELL, D(1), D(120))
    assert (reduced.quantity, reduced.average_price, reduced.realized) == (D(2), D(110), D(10))
    flipped = after_fill(reduced.quantity, reduced.average_price, Side.SELL, D(5), D(100))
    assert (flipped.quantity, flipped.average_price, flipped.realized) == (D(-3), D(100), D(-20))
    closed = after_fill(flipped.quantity, flipped.average_price, Side.BUY, D(3), D(90))
    assert (closed.quantity, closed.average_price, closed.realized) == (ZERO, None, D(30))


def test_the_average_is_rounded_half_even_to_twelve_digits() -> None:
    change = after_fill(D(1), D(1), Side.BUY, D(2), D(2))  # (1 + 4) / 3
    assert change.average_price == D("1.666666666667")


_fills = st.lists(
    st.tuples(
        st.sampled_from([Side.BUY, Side.SELL]),
        st.decimals(min_value=D("0.001"), max_value=D(50), places=3),
        st.decimals(min_value=D("0.01"), max_value=D(1000), places=2),
    ),
    max_size=30,
)


@given(_fills)
def test_risk_and_portfolio_agree_on_every_fill_sequence(fills: list[tuple[Side, Decimal, Decimal]]) -> None:
    book = books.Position("BTC-USD")
    view = risk.Position()
    realized_by_risk = ZERO
    for side, quantity, price in fills:
        book = books.apply_fill(book, books.Fill("BTC-USD", side, quantity, price)).position
        view, realized = risk.apply_fill(view, side, quantity, price)
        realized_by_risk += realized
        assert view.quantity == book.quantity
        assert view.average_price == (book.average_price if book.average_price is not None else ZERO)
    assert realized_by_risk == book.realized_pnl
