"""Marketdata's pure logic: no I/O, no clock.

- `ticks`: raw updates, rejections and their reasons, timestamps, quotes;
- `normalization`: the :class:`Normalizer` that checks each raw update and
  turns it into a contract Tick or a Rejection.

The public names are re-exported here (``from services.marketdata.domain import X``).
"""

from services.marketdata.domain.normalization import Normalizer
from services.marketdata.domain.ticks import (
    RawTick,
    Rejection,
    RejectReason,
    decimal_text,
    quote_of,
    set_timestamp_ns,
    timestamp_ns,
)

__all__ = [
    "Normalizer",
    "RawTick",
    "RejectReason",
    "Rejection",
    "decimal_text",
    "quote_of",
    "set_timestamp_ns",
    "timestamp_ns",
]
