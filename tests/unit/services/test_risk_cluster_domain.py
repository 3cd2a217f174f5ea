"""The correlated-cluster exposure limit: pure check (services.risk.domain),
its limits conversion and the stored cluster form (services.risk.wire, services.risk.adapters.redis),
and how the API values the other holdings (services.risk.api)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

from trading.common.v1 import decimal_pb2
from trading.risk.v1 import risk_service_pb2 as pb

from services.risk import domain
from services.risk.adapters.redis import cluster_value, parse_cluster
from services.risk.check import cluster_holdings
from services.risk.domain import (
    ClusterHoldings,
    OrderIntent,
    OrderType,
    QuoteView,
    RiskSnapshot,
    Side,
    TradingState,
    check_order,
)
from services.risk.domain import DenialReason as R
from services.risk.ports import CheckRead, StoredCluster
from services.risk.wire import limits_to_domain, limits_to_proto

# Per instrument: 10 units, 10,000 per order; per cluster: 25,000 gross.
LIMITS = domain.Limits(
    max_orders_per_second=10,
    max_order_notional=D(10_000),
    default_max_position=D(10),
    price_collar_bps=100,
    daily_loss_limit=D(1_000),
    max_quote_age_s=5.0,
    max_cluster_gross_notional=D(25_000),
)
QUOTE = QuoteView(bid=D(999), ask=D(1001), last=D(1000), age_s=0.1)
# BTC and ETH move together; the tenant is long 8 ETH (at 1,000) and short 10 SOL (at 1,000).
CLUSTER = ClusterHoldings(
    "BTC-USD",
    frozenset({"BTC-USD", "ETH-USD", "SOL-USD"}),
    {"ETH-USD": (D(8), D(1000)), "SOL-USD": (D(-10), D(1000))},
)
SNAP = RiskSnapshot(
    limits=LIMITS,
    state=TradingState.ACTIVE,
    position=D(0),
    orders_in_window=0,
    daily_pnl=D(0),
    quote=QUOTE,
    cluster=CLUSTER,
)


def buy(qty: str, price: str | None = None) -> OrderIntent:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return OrderIntent("BTC-USD", Side.BUY, D(qty), kind, D(price) if price is not None else None)


def sell(qty: str) -> OrderIntent:
    return OrderIntent("BTC-USD", Side.SELL, D(qty), OrderType.MARKET)


def test_an_order_the_position_limit_allows_is_denied_by_the_cluster_limit() -> None:
    # 8 BTC is within the 10-unit position limit and 8,008 within the order
    # notional, but the cluster would hold 8,000 + 10,000 + 8 x 1,001 = 26,008.
    result = check_order(buy("8"), SNAP)
    assert result.reasons == (R.CLUSTER_EXPOSURE,)
    denial = result.denials[0]
    assert denial.code == "RISK_CLUSTER_EXPOSURE_EXCEEDED"
    assert (denial.limit, denial.actual) == (D(25_000), D(26_008))
    assert "BTC-USD" in denial.message and "ETH-USD, SOL-USD" in denial.message
    # Without the cluster (or the limit) the same order passes.
    assert check_order(buy("8"), replace(SNAP, cluster=None)).approved
    unlimited = replace(LIMITS, max_cluster_gross_notional=None)
    assert check_order(buy("8"), replace(SNAP, limits=unlimited)).approved
    # Up to the limit passes: 7 x 1,001 + 18,000 = 25,007 > 25,000; 6 is 24,006.
    assert check_order(buy("6"), SNAP).approved
    assert check_order(buy("7"), SNAP).reasons == (R.CLUSTER_EXPOSURE,)


def test_gross_counts_shorts_and_orders_that_lower_the_exposure_pass() -> None:
    # Selling 8 from flat adds as much gross as buying 8.
    assert check_order(sell("8"), SNAP).reasons == (R.CLUSTER_EXPOSURE,)
    # Over the limit already (long 9 BTC): adding is denied, reducing passes.
    over = replace(SNAP, position=D(9))
    assert check_order(buy("1"), over).reasons == (R.CLUSTER_EXPOSURE,)
    assert check_order(sell("3"), over).approved
    # A flip that ends with less gross passes too: 9 long -> 1 short.
    assert check_order(sell("10"), over).approved


def test_limit_orders_are_valued_at_their_price_and_other_denials_come_first() -> None:
    # 8 at a limit of 1,000 (within the collar): 26,000 gross.
    result = check_order(buy("8", "1000"), SNAP)
    assert result.reasons == (R.CLUSTER_EXPOSURE,) and result.denials[0].actual == D(26_000)
    # Without a usable quote the order cannot be valued: only NO_QUOTE.
    assert check_order(buy("8"), replace(SNAP, quote=None)).reasons == (R.NO_QUOTE,)
    both = check_order(buy("12"), SNAP)
    assert both.reasons == (R.MAX_NOTIONAL, R.MAX_POSITION, R.CLUSTER_EXPOSURE)


def test_limits_round_trip_with_and_without_the_cluster_limit() -> None:
    assert limits_to_domain(limits_to_proto(LIMITS)) == LIMITS
    message = limits_to_proto(replace(LIMITS, max_cluster_gross_notional=None))
    assert not message.HasField("max_cluster_gross_notional")
    assert limits_to_domain(message).max_cluster_gross_notional is None
    stored = pb.RiskLimits(max_cluster_gross_notional=decimal_pb2.Decimal(value="25000.50"))
    assert limits_to_domain(stored).max_cluster_gross_notional == D("25000.5")


def test_the_stored_cluster_form() -> None:
    value = cluster_value("BTC-USD", ["SOL-USD", "BTC-USD", "ETH-USD"])
    assert value == "BTC-USD BTC-USD,ETH-USD,SOL-USD"
    assert parse_cluster(value.encode()) == StoredCluster(
        "BTC-USD", frozenset({"BTC-USD", "ETH-USD", "SOL-USD"})
    )
    assert parse_cluster(None) is None and parse_cluster(b"") is None


def test_other_holdings_are_valued_at_their_mark_else_their_entry_price() -> None:
    read = CheckRead(
        orders_in_window=0,
        counted=False,
        prior_check_id=None,
        limits_pb=None,
        status_pb=None,
        positions={
            "BTC-USD": domain.Position(D(1), D(900)),
            "ETH-USD": domain.Position(D(2), D(50)),
            "SOL-USD": domain.Position(D(-3), D(20)),
            "XRP-USD": domain.Position(D(100), D(1)),  # not in the cluster
        },
        realized_today=D(0),
        quotes={},
        cluster=StoredCluster("BTC-USD", frozenset({"BTC-USD", "ETH-USD", "SOL-USD"})),
    )
    found = cluster_holdings(read, "BTC-USD", {"ETH-USD": D(60), "SOL-USD": None})
    assert found == ClusterHoldings(
        "BTC-USD",
        frozenset({"BTC-USD", "ETH-USD", "SOL-USD"}),
        {"ETH-USD": (D(2), D(60)), "SOL-USD": (D(-3), D(20))},
    )
    assert found.gross_elsewhere("BTC-USD") == D(180)
    # An order on an instrument the stored cluster does not hold, or no cluster: none.
    assert cluster_holdings(read, "XRP-USD", {}) is None
    assert cluster_holdings(replace(read, cluster=None), "BTC-USD", {}) is None
