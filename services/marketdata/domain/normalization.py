"""Pure tick normalisation and validation of the marketdata service: no I/O, no clock.

Feeds hand over :class:`RawTick` updates as they read them; the
:class:`Normalizer` turns each into either a contract ``Tick`` or a
:class:`Rejection` with a ``TickRejectReason``. Checks, in order (the first
failure decides the reason):

1. malformed: the feed could not parse the update, or it has no bid/ask
   (a quote-only or trade-only update without a book is not a tick here),
   a price or size is not a finite number, or a size is negative or zero
   (the contract has no size reason; the detail says which size);
2. unknown symbol: not one of the instruments marketdata was given;
3. non-positive price: bid, ask or a traded last price <= 0;
4. crossed book: bid >= ask;
5. out of order: sequence not greater than the last accepted one of the
   symbol, or exchange time earlier than the last accepted one.

Only accepted ticks advance the per-symbol sequence and time, so a burst of
bad updates cannot move the bar for good ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from trading.marketdata.v1 import events_pb2

from services.marketdata.domain.ticks import RawTick, Rejection, RejectReason, decimal_text, set_timestamp_ns


def _finite(*values: Decimal | None) -> bool:
    return all(v is None or v.is_finite() for v in values)


@dataclass(slots=True)
class _SymbolState:
    sequence: int = 0
    exchange_time_ns: int = 0
    accepted: bool = False


class Normalizer:
    """Validates raw updates against the known instruments and the per-symbol
    order of what was accepted before. One instance per feed source."""

    __slots__ = ("_known", "_state")

    def __init__(self, known_symbols: Iterable[str]) -> None:
        self._known = frozenset(known_symbols)
        self._state: dict[str, _SymbolState] = {}

    @property
    def known_symbols(self) -> frozenset[str]:
        return self._known

    def last_sequence(self, symbol: str) -> int:
        state = self._state.get(symbol)
        return state.sequence if state is not None else 0

    def normalize(self, raw: RawTick, receive_time_ns: int) -> events_pb2.Tick | Rejection:
        """The contract Tick of an accepted update, or why it was rejected."""
        tick = _to_tick(raw, receive_time_ns)
        reason, detail = self._check(raw)
        if reason is not None:
            last = self.last_sequence(raw.symbol) if reason is RejectReason.OUT_OF_ORDER else 0
            return Rejection(reason, detail, tick, last)
        state = self._state.get(raw.symbol)
        if state is None:
            state = self._state[raw.symbol] = _SymbolState()
        state.sequence = raw.sequence
        state.exchange_time_ns = raw.exchange_time_ns
        state.accepted = True
        return tick

    def _check(self, raw: RawTick) -> tuple[RejectReason | None, str]:
        malformed = RejectReason.MALFORMED
        if raw.error:
            return malformed, raw.error
        if not 0 <= raw.sequence < 2**64:
            return malformed, f"sequence {raw.sequence} is not an unsigned 64-bit number"
        bid, ask, last = raw.bid_price, raw.ask_price, raw.last_price
        if bid is None or ask is None or raw.bid_size is None or raw.ask_size is None:
            return malformed, "bid and ask price and size are required"
        if not _finite(bid, ask, last, raw.bid_size, raw.ask_size, raw.last_size):
            return malformed, "prices and sizes must be finite numbers"
        if raw.bid_size <= 0 or raw.ask_size <= 0:
            return malformed, f"sizes must be positive: bid size {raw.bid_size}, ask size {raw.ask_size}"
        if raw.last_size is not None and raw.last_size < 0:
            return malformed, f"last size {raw.last_size} is negative"
        if raw.symbol not in self._known:
            return RejectReason.UNKNOWN_SYMBOL, f"unknown symbol {raw.symbol!r}"
        if bid <= 0 or ask <= 0:
            return RejectReason.NON_POSITIVE_PRICE, f"bid {bid} and ask {ask} must be positive"
        traded = raw.last_size is not None and raw.last_size > 0
        if traded and (last is None or last <= 0):
            return RejectReason.NON_POSITIVE_PRICE, f"last price {last} of a trade must be positive"
        if bid >= ask:
            return RejectReason.CROSSED_BOOK, f"bid {decimal_text(bid)} >= ask {decimal_text(ask)}"
        state = self._state.get(raw.symbol)
        if state is not None and state.accepted:
            if raw.sequence <= state.sequence:
                return RejectReason.OUT_OF_ORDER, f"sequence {raw.sequence} <= last accepted {state.sequence}"
            if raw.exchange_time_ns < state.exchange_time_ns:
                return (
                    RejectReason.OUT_OF_ORDER,
                    f"exchange time {raw.exchange_time_ns} ns before the last accepted"
                    f" {state.exchange_time_ns} ns",
                )
        return None, ""


def _to_tick(raw: RawTick, receive_time_ns: int) -> events_pb2.Tick:
    """The update in contract form, fields it carries only (also for rejections)."""
    tick = events_pb2.Tick(
        symbol=raw.symbol, sequence=raw.sequence if 0 <= raw.sequence < 2**64 else 0, source=raw.source
    )
    # Non-finite values have no contract form: leave them unset.
    if raw.bid_price is not None and raw.bid_price.is_finite():
        tick.bid_price.value = decimal_text(raw.bid_price)
    if raw.bid_size is not None and raw.bid_size.is_finite():
        tick.bid_size.value = decimal_text(raw.bid_size)
    if raw.ask_price is not None and raw.ask_price.is_finite():
        tick.ask_price.value = decimal_text(raw.ask_price)
    if raw.ask_size is not None and raw.ask_size.is_finite():
        tick.ask_size.value = decimal_text(raw.ask_size)
    if raw.last_price is not None and raw.last_price.is_finite():
        tick.last_price.value = decimal_text(raw.last_price)
    if raw.last_size is not None and raw.last_size.is_finite():
        tick.last_size.value = decimal_text(raw.last_size)
    if raw.exchange_time_ns > 0:
        set_timestamp_ns(tick.exchange_time, raw.exchange_time_ns)
    set_timestamp_ns(tick.receive_time, receive_time_ns)
    return tick
