"""Pre-trade checks over an explicit state snapshot. No I/O, no clock, no protobuf.

The service reads everything a check needs (limits, trading state, position,
order-rate count, daily PnL, last quote and its age) in one Redis round trip
into a :class:`RiskSnapshot`; :func:`check_order` then evaluates *every* check
and returns all denials in the fixed order of :data:`CHECK_ORDER`, so clients
and tests see the same list for the same state.

Decisions worth knowing:

- A denial never blocks an order that only *reduces* the absolute position
  except where the contract says so (HALTED denies everything): the daily loss
  limit and the position limit deny only orders that do not reduce, so a
  trader over a (lowered) limit can always get back under it.
- "Reduces" means: an open position exists, the order is on the opposite side
  and its quantity is at most the position (a flip to the other side is not a
  reduction).
- The collar compares the limit price with the contract's reference price:
  the ask for buys, the bid for sells (symmetric band of ``price_collar_bps``;
  exactly on the edge passes). Market orders have no collar: their price *is*
  the touch.
- The cluster limit bounds the gross exposure (sum of |quantity| x price) to
  the cluster of correlated instruments (analytics' correlation clusters)
  the order's instrument is in: its own position after a full fill priced as
  the order, the tenant's other positions in the cluster at their mark (the
  average entry price without one). Like the position limit it denies only
  orders that raise the exposure, so one that lowers it always passes. An
  instrument in no cluster, or a tenant without the limit, is not limited.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from types import MappingProxyType
from typing import Final

from domain.numbers import ZERO
from domain.orders import OrderType
from domain.positions import Side
from domain.prices import mark_price

BPS: Final = Decimal(10_000)


class TradingState(enum.IntEnum):
    """trading.risk.v1.TradingState (same numbers)."""

    ACTIVE = 1
    REDUCING = 2
    HALTED = 3


class DenialReason(enum.IntEnum):
    """trading.risk.v1.DenialReason (same numbers); `.code` is the stable string."""

    ORDER_RATE = 1
    MAX_NOTIONAL = 2
    MAX_POSITION = 3
    PRICE_COLLAR = 4
    DAILY_LOSS = 5
    TRADING_HALTED = 6
    REDUCING_ONLY = 7
    NO_QUOTE = 8
    CLUSTER_EXPOSURE = 9

    @property
    def code(self) -> str:
        return _CODES[self]


_CODES: Final[Mapping[DenialReason, str]] = MappingProxyType(
    {
        DenialReason.ORDER_RATE: "RISK_ORDER_RATE_EXCEEDED",
        DenialReason.MAX_NOTIONAL: "RISK_MAX_NOTIONAL_EXCEEDED",
        DenialReason.MAX_POSITION: "RISK_MAX_POSITION_EXCEEDED",
        DenialReason.PRICE_COLLAR: "RISK_PRICE_COLLAR_BREACHED",
        DenialReason.DAILY_LOSS: "RISK_DAILY_LOSS_LIMIT_REACHED",
        DenialReason.TRADING_HALTED: "RISK_TRADING_HALTED",
        DenialReason.REDUCING_ONLY: "RISK_REDUCING_ONLY",
        DenialReason.NO_QUOTE: "RISK_NO_QUOTE",
        DenialReason.CLUSTER_EXPOSURE: "RISK_CLUSTER_EXPOSURE_EXCEEDED",
    }
)

# The order denials are reported in: the tenant-wide state first (what an
# operator did or what the day's losses forced), then the order rate, then
# what is specific to this order (its pricing, size and resulting position).
CHECK_ORDER: Final[tuple[DenialReason, ...]] = (
    DenialReason.TRADING_HALTED,
    DenialReason.REDUCING_ONLY,
    DenialReason.DAILY_LOSS,
    DenialReason.ORDER_RATE,
    DenialReason.NO_QUOTE,
    DenialReason.PRICE_COLLAR,
    DenialReason.MAX_NOTIONAL,
    DenialReason.MAX_POSITION,
    DenialReason.CLUSTER_EXPOSURE,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's limits (trading.risk.v1.RiskLimits in domain form)."""

    max_orders_per_second: int
    max_order_notional: Decimal
    default_max_position: Decimal
    price_collar_bps: int
    daily_loss_limit: Decimal
    max_quote_age_s: float
    max_position_by_symbol: Mapping[str, Decimal] = field(default_factory=dict)
    # Gross notional allowed in one correlation cluster; None: no cluster limit.
    max_cluster_gross_notional: Decimal | None = None

    def max_position(self, symbol: str) -> Decimal:
        return self.max_position_by_symbol.get(symbol, self.default_max_position)


# The platform defaults, in force until a tenant calls SetLimits. Chosen to be
# safe for a new (paper) tenant rather than to be never hit: 50 orders/s is far
# above what a strategy needs but stops a runaway loop; 100,000 per order and
# a position of 100 units per instrument bound a fat finger; a 5% collar
# passes normal limit orders and stops mistyped prices; 10,000 of daily loss;
# quotes older than 5 s (the contract's default) cannot price an order.
DEFAULT_LIMITS: Final = Limits(
    max_orders_per_second=50,
    max_order_notional=Decimal(100_000),
    default_max_position=Decimal(100),
    price_collar_bps=500,
    daily_loss_limit=Decimal(10_000),
    max_quote_age_s=5.0,
)
DEFAULT_MAX_QUOTE_AGE_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class QuoteView:
    """What a check needs of the last quote: touch prices (None when the feed has
    not provided one) and the age in seconds (None when it cannot be told)."""

    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None = None
    age_s: float | None = None

    def touch(self, side: Side) -> Decimal | None:
        """The price a marketable order of `side` trades against."""
        return self.ask if side is Side.BUY else self.bid

    def mark(self) -> Decimal | None:
        """Mark-to-market price: the mid when both sides exist, else the last
        trade (:func:`domain.prices.mark_price`, as portfolio marks)."""
        return mark_price(self.bid, self.ask, self.last)


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """The order being checked."""

    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    limit_price: Decimal | None = None

    @property
    def signed_quantity(self) -> Decimal:
        return self.side.signed(self.quantity)


@dataclass(frozen=True, slots=True)
class ClusterHoldings:
    """The correlation cluster of the order's instrument, and the tenant's
    positions in its *other* instruments: signed quantity and the price each
    is valued at (its mark, else its average entry price)."""

    cluster_id: str
    symbols: frozenset[str]
    holdings: Mapping[str, tuple[Decimal, Decimal]] = field(default_factory=dict)

    def gross_elsewhere(self, symbol: str) -> Decimal:
        """Gross notional of the cluster's instruments other than `symbol`."""
        return sum((abs(q) * p for s, (q, p) in self.holdings.items() if s != symbol), ZERO)


@dataclass(frozen=True, slots=True)
class RiskSnapshot:
    """Everything one check reads, taken at one instant.

    `orders_in_window` counts the tenant's *other* counted orders in the last
    second; `already_counted` is true when this very order (same client order
    id) was already counted by an earlier check, so it is not limited again.
    `daily_pnl` is realised plus unrealised PnL of the UTC day (negative: loss).
    """

    limits: Limits
    state: TradingState
    position: Decimal
    orders_in_window: int
    daily_pnl: Decimal
    quote: QuoteView | None
    already_counted: bool = False
    # The cluster of the order's instrument; None when it is in none.
    cluster: ClusterHoldings | None = None


@dataclass(frozen=True, slots=True)
class Denial:
    """One failed check (trading.risk.v1.Denial in domain form)."""

    reason: DenialReason
    message: str
    limit: Decimal | None = None
    actual: Decimal | None = None

    @property
    def code(self) -> str:
        return self.reason.code


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of a check: denials in :data:`CHECK_ORDER` order (empty: approved)."""

    denials: tuple[Denial, ...]
    reference_price: Decimal | None
    notional: Decimal | None
    projected_position: Decimal
    # True when the quote exists but is too old (for the STALE_QUOTE alert).
    stale_quote: bool = False

    @property
    def approved(self) -> bool:
        return not self.denials

    @property
    def reasons(self) -> tuple[DenialReason, ...]:
        return tuple(d.reason for d in self.denials)


def reduces_position(position: Decimal, side: Side, quantity: Decimal) -> bool:
    """True when the order only shrinks the absolute position (no flip)."""
    if position > 0:
        return side is Side.SELL and quantity <= position
    if position < 0:
        return side is Side.BUY and quantity <= -position
    return False


def usable_quote(quote: QuoteView | None, max_age_s: float) -> tuple[QuoteView | None, bool]:
    """The quote if fresh enough (else None), and whether it was dropped for age."""
    if quote is None:
        return None, False
    if quote.age_s is None or quote.age_s > max_age_s:
        return None, True
    return quote, False


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != 0 else "0"


def check_order(order: OrderIntent, snap: RiskSnapshot) -> CheckResult:
    """Run every pre-trade check of `order` against `snap`; report every failure."""
    limits = snap.limits
    found: dict[DenialReason, Denial] = {}
    reducing = reduces_position(snap.position, order.side, order.quantity)
    projected = snap.position + order.signed_quantity

    if snap.state is TradingState.HALTED:
        found[DenialReason.TRADING_HALTED] = Denial(
            DenialReason.TRADING_HALTED, "trading is halted for the tenant (kill switch)"
        )
    if snap.state is TradingState.REDUCING and not reducing:
        found[DenialReason.REDUCING_ONLY] = Denial(
            DenialReason.REDUCING_ONLY,
            f"only position-reducing orders are allowed; position {_fmt(snap.position)} "
            f"would become {_fmt(projected)}",
        )
    loss = -snap.daily_pnl
    if loss >= limits.daily_loss_limit and not reducing:
        found[DenialReason.DAILY_LOSS] = Denial(
            DenialReason.DAILY_LOSS,
            f"daily loss {_fmt(loss)} has reached the limit {_fmt(limits.daily_loss_limit)}",
            limits.daily_loss_limit,
            loss,
        )
    if not snap.already_counted and snap.orders_in_window >= limits.max_orders_per_second:
        found[DenialReason.ORDER_RATE] = Denial(
            DenialReason.ORDER_RATE,
            f"{snap.orders_in_window} orders in the last second; at most "
            f"{limits.max_orders_per_second} per second",
            Decimal(limits.max_orders_per_second),
            Decimal(snap.orders_in_window + 1),
        )

    quote, stale = usable_quote(snap.quote, limits.max_quote_age_s)
    touch = quote.touch(order.side) if quote is not None else None
    if touch is None:
        found[DenialReason.NO_QUOTE] = Denial(
            DenialReason.NO_QUOTE,
            (
                f"the last quote of {order.symbol} is older than {limits.max_quote_age_s:g}s"
                if stale
                else f"no {'ask' if order.side is Side.BUY else 'bid'} quote for {order.symbol}"
            ),
        )

    if order.order_type is OrderType.LIMIT and order.limit_price is not None:
        reference: Decimal | None = order.limit_price
        if touch is not None:
            distance_bps = abs(order.limit_price - touch) * BPS / touch
            if distance_bps > limits.price_collar_bps:
                distance = distance_bps.quantize(Decimal("0.01"), rounding=ROUND_CEILING)
                found[DenialReason.PRICE_COLLAR] = Denial(
                    DenialReason.PRICE_COLLAR,
                    f"limit price {_fmt(order.limit_price)} is {_fmt(distance)} "
                    f"bps from the {'ask' if order.side is Side.BUY else 'bid'} {_fmt(touch)}; "
                    f"at most {limits.price_collar_bps} bps",
                    Decimal(limits.price_collar_bps),
                    distance,
                )
    else:
        reference = touch

    notional = order.quantity * reference if reference is not None else None
    if notional is not None and notional > limits.max_order_notional:
        found[DenialReason.MAX_NOTIONAL] = Denial(
            DenialReason.MAX_NOTIONAL,
            f"notional {_fmt(notional)} exceeds {_fmt(limits.max_order_notional)}",
            limits.max_order_notional,
            notional,
        )

    max_position = limits.max_position(order.symbol)
    if abs(projected) > max_position and abs(projected) > abs(snap.position):
        found[DenialReason.MAX_POSITION] = Denial(
            DenialReason.MAX_POSITION,
            f"position in {order.symbol} would be {_fmt(projected)}; at most {_fmt(max_position)} either way",
            max_position,
            abs(projected),
        )

    cluster_limit = limits.max_cluster_gross_notional
    if cluster_limit is not None and snap.cluster is not None and reference is not None:
        elsewhere = snap.cluster.gross_elsewhere(order.symbol)
        before = elsewhere + abs(snap.position) * reference
        after = elsewhere + abs(projected) * reference
        if after > cluster_limit and after > before:
            found[DenialReason.CLUSTER_EXPOSURE] = Denial(
                DenialReason.CLUSTER_EXPOSURE,
                f"gross exposure to the correlated cluster {snap.cluster.cluster_id} "
                f"({', '.join(sorted(snap.cluster.symbols))}) would be {_fmt(after)}; "
                f"at most {_fmt(cluster_limit)}",
                cluster_limit,
                after,
            )

    return CheckResult(
        denials=tuple(found[r] for r in CHECK_ORDER if r in found),
        reference_price=reference,
        notional=notional,
        projected_position=projected,
        stale_quote=stale,
    )
