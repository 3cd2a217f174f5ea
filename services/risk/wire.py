"""Risk's contract messages <-> its domain: limits (and their canonical stored
form) and the view of a stored last quote."""

from __future__ import annotations

from trading.common.v1 import market_pb2
from trading.risk.v1 import risk_service_pb2 as pb

from runtime import decimals
from services.risk import domain


def limits_to_domain(limits: pb.RiskLimits) -> domain.Limits:
    age = limits.max_quote_age.ToNanoseconds() / 1e9 if limits.HasField("max_quote_age") else 0.0
    return domain.Limits(
        max_orders_per_second=limits.max_orders_per_second,
        max_order_notional=decimals.from_proto(limits.max_order_notional),
        default_max_position=decimals.from_proto(limits.default_max_position),
        price_collar_bps=limits.price_collar_bps,
        daily_loss_limit=decimals.from_proto(limits.daily_loss_limit),
        max_quote_age_s=age or domain.DEFAULT_MAX_QUOTE_AGE_S,
        max_position_by_symbol={s: decimals.from_proto(v) for s, v in limits.max_position_by_symbol.items()},
        max_cluster_gross_notional=decimals.from_proto(limits.max_cluster_gross_notional)
        if limits.HasField("max_cluster_gross_notional")
        else None,
    )


def limits_to_proto(limits: domain.Limits) -> pb.RiskLimits:
    message = pb.RiskLimits(
        max_orders_per_second=limits.max_orders_per_second,
        max_order_notional=decimals.to_proto(limits.max_order_notional),
        default_max_position=decimals.to_proto(limits.default_max_position),
        price_collar_bps=limits.price_collar_bps,
        daily_loss_limit=decimals.to_proto(limits.daily_loss_limit),
    )
    for symbol, value in limits.max_position_by_symbol.items():
        message.max_position_by_symbol[symbol].CopyFrom(decimals.to_proto(value))
    message.max_quote_age.FromNanoseconds(round(limits.max_quote_age_s * 1e9))
    if limits.max_cluster_gross_notional is not None:
        message.max_cluster_gross_notional.CopyFrom(decimals.to_proto(limits.max_cluster_gross_notional))
    return message


def canonical_limits(limits: pb.RiskLimits) -> pb.RiskLimits:
    """The stored form: decimals normalised ("100.0" -> "100") and the quote
    age made explicit, so equal limits serialize to equal bytes."""
    return limits_to_proto(limits_to_domain(limits))


def quote_view(data: bytes | None, now_ns: int) -> domain.QuoteView | None:
    """The domain view of a stored Quote; its age from receive_time (or exchange_time)."""
    if not data:
        return None
    quote = market_pb2.Quote.FromString(data)
    stamp = quote.receive_time if quote.HasField("receive_time") else quote.exchange_time
    age = (now_ns - stamp.ToNanoseconds()) / 1e9 if stamp.seconds or stamp.nanos else None
    return domain.QuoteView(
        bid=decimals.from_proto(quote.bid_price) if quote.bid_price.value else None,
        ask=decimals.from_proto(quote.ask_price) if quote.ask_price.value else None,
        last=decimals.from_proto(quote.last_price) if quote.last_price.value else None,
        age_s=age,
    )
