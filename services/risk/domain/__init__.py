"""Pure risk logic, no I/O, no clock, no protobuf: :mod:`.checks` (the pre-trade
checks over a state snapshot), :mod:`.rate` (the order-rate window), :mod:`.pnl`
(risk's own positions and daily PnL from fills). Their public names, and the
shared :class:`domain.positions.Side` and :class:`domain.orders.OrderType`,
are re-exported here."""

from domain.numbers import ZERO
from domain.orders import OrderType
from domain.positions import Side
from services.risk.domain.checks import (
    BPS,
    CHECK_ORDER,
    DEFAULT_LIMITS,
    DEFAULT_MAX_QUOTE_AGE_S,
    CheckResult,
    ClusterHoldings,
    Denial,
    DenialReason,
    Limits,
    OrderIntent,
    QuoteView,
    RiskSnapshot,
    TradingState,
    check_order,
    reduces_position,
    usable_quote,
)
from services.risk.domain.pnl import (
    LOSS_WARNING_SHARE,
    Fill,
    LossLevel,
    Position,
    apply_fill,
    daily_pnl,
    held_symbols,
    loss_level,
)
from services.risk.domain.rate import (
    RATE_WINDOW_US,
    SubmissionTimeBound,
    orders_near,
    rate_admits,
    rate_instant_us,
)

__all__ = [
    "BPS",
    "CHECK_ORDER",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_QUOTE_AGE_S",
    "LOSS_WARNING_SHARE",
    "RATE_WINDOW_US",
    "ZERO",
    "CheckResult",
    "ClusterHoldings",
    "Denial",
    "DenialReason",
    "Fill",
    "Limits",
    "LossLevel",
    "OrderIntent",
    "OrderType",
    "Position",
    "QuoteView",
    "RiskSnapshot",
    "Side",
    "SubmissionTimeBound",
    "TradingState",
    "apply_fill",
    "check_order",
    "daily_pnl",
    "held_symbols",
    "loss_level",
    "orders_near",
    "rate_admits",
    "rate_instant_us",
    "reduces_position",
    "usable_quote",
]
