"""What a tick is before and after the checks: the raw update a feed reads,
a rejection and its reason, timestamps and quotes. Pure: no I/O, no clock."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from google.protobuf import timestamp_pb2
from trading.common.v1 import market_pb2
from trading.marketdata.v1 import events_pb2

_NS: Final = 1_000_000_000


class RejectReason(enum.IntEnum):
    """The contract's TickRejectReason values (label names lower-case)."""

    CROSSED_BOOK = events_pb2.TICK_REJECT_REASON_CROSSED_BOOK
    NON_POSITIVE_PRICE = events_pb2.TICK_REJECT_REASON_NON_POSITIVE_PRICE
    UNKNOWN_SYMBOL = events_pb2.TICK_REJECT_REASON_UNKNOWN_SYMBOL
    OUT_OF_ORDER = events_pb2.TICK_REJECT_REASON_OUT_OF_ORDER
    MALFORMED = events_pb2.TICK_REJECT_REASON_MALFORMED

    @property
    def label(self) -> str:
        """Prometheus label value, e.g. ``crossed_book``."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class RawTick:
    """One update as a feed read it, before any check.

    Prices and sizes are Decimals (None: the update did not carry them; a
    ``last_size`` of 0 or None means no trade came with it). ``error`` is set
    by a feed that could not parse the update at all.
    """

    symbol: str
    bid_price: Decimal | None
    bid_size: Decimal | None
    ask_price: Decimal | None
    ask_size: Decimal | None
    last_price: Decimal | None
    last_size: Decimal | None
    exchange_time_ns: int
    sequence: int
    source: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an update was dropped, and the update as far as it could be read."""

    reason: RejectReason
    detail: str
    tick: events_pb2.Tick
    last_accepted_sequence: int = 0

    def to_event(self, rejected_at_ns: int) -> events_pb2.TickRejected:
        """The TickRejected payload."""
        event = events_pb2.TickRejected(
            symbol=self.tick.symbol[:64],
            reason=int(self.reason),  # type: ignore[arg-type]  # IntEnum of the same values
            detail=self.detail[:1024],
            tick=self.tick,
            last_accepted_sequence=self.last_accepted_sequence,
            source=self.tick.source[:64],
        )
        set_timestamp_ns(event.rejected_at, rejected_at_ns)
        return event


def set_timestamp_ns(ts: timestamp_pb2.Timestamp, ns: int) -> None:
    """Fill a Timestamp from Unix nanoseconds (cheaper than FromNanoseconds)."""
    ts.seconds, ts.nanos = divmod(ns, _NS)


def timestamp_ns(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * _NS + ts.nanos


def decimal_text(value: Decimal) -> str:
    """The contract's canonical decimal string (as runtime.decimals.to_proto)."""
    return format(value.normalize(), "f") if value else "0"


def quote_of(tick: events_pb2.Tick) -> market_pb2.Quote:
    """The last quote a tick makes. Tick and Quote share their fields (1-11,
    same names and types), so the tick's bytes are the quote's bytes."""
    return market_pb2.Quote.FromString(tick.SerializeToString())
