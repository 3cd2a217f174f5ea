"""protovalidate rules of the portfolio contracts."""

from __future__ import annotations

from trading.common.v1 import decimal_pb2
from trading.portfolio.v1 import events_pb2, portfolio_service_pb2, types_pb2

from tests.support.validation import violations

EXECUTION_ID = "0190f4a2-7c1e-7d3a-9b2f-1a2b3c4d5e6f"


def test_get_positions_symbol_filter() -> None:
    assert violations(portfolio_service_pb2.GetPositionsRequest()) == set()
    assert violations(portfolio_service_pb2.GetPositionsRequest(symbol="AAPL", include_closed=True)) == set()
    assert violations(portfolio_service_pb2.GetPositionsRequest(symbol="aapl")) == {
        ("symbol", "string.pattern")
    }
    assert violations(portfolio_service_pb2.GetPositionsRequest(symbol="A" * 13)) == {
        ("symbol", "string.pattern")
    }


def test_get_portfolio_has_nothing_to_validate() -> None:
    assert violations(portfolio_service_pb2.GetPortfolioRequest()) == set()


def test_stream_portfolio_interval_is_bounded() -> None:
    assert violations(portfolio_service_pb2.StreamPortfolioRequest()) == set()
    ok = portfolio_service_pb2.StreamPortfolioRequest()
    ok.min_interval.FromMilliseconds(250)
    assert violations(ok) == set()

    for millis in (50, 61_000):
        bad = portfolio_service_pb2.StreamPortfolioRequest()
        bad.min_interval.FromMilliseconds(millis)
        assert violations(bad) == {("min_interval", "duration.gte_lte")}, millis


def test_position_changed_event() -> None:
    event = events_pb2.PositionChanged(
        symbol="BTC-USD",
        position=types_pb2.Position(symbol="BTC-USD"),
        previous_quantity=decimal_pb2.Decimal(value="0"),
        realized_pnl_change=decimal_pb2.Money(currency="USD", amount=decimal_pb2.Decimal(value="0")),
        execution_id=EXECUTION_ID,
        order_id=EXECUTION_ID,
    )
    assert violations(event) == set()

    event.ClearField("position")
    event.symbol = "btc"
    event.realized_pnl_change.currency = "usd"
    assert violations(event) == {
        ("position", "required"),
        ("symbol", "string.pattern"),
        ("realized_pnl_change.currency", "string.pattern"),
    }


def test_portfolio_snapshot_needs_a_portfolio() -> None:
    assert violations(events_pb2.PortfolioSnapshot(portfolio=types_pb2.Portfolio())) == set()
    assert violations(events_pb2.PortfolioSnapshot()) == {("portfolio", "required")}
