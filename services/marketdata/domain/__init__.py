"""Marketdata's pure logic: no I/O, no clock.

- `ticks`: raw updates, rejections and their reasons, timestamps, quotes;
- `normalization`: the :class:`Normalizer` that checks each raw update and
  turns it into a contract Tick or a Rejection;
- `batches`: the partition of a symbol's ticks and the TickBatch events of a
  feed batch.

The public names are re-exported here (``from services.marketdata.domain import X``).
"""

from services.marketdata.domain.batches import (
    TICK_PARTITIONS,
    partition_of,
    partitions_of_share,
    tick_batches,
)
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
    "TICK_PARTITIONS",
    "Normalizer",
    "RawTick",
    "RejectReason",
    "Rejection",
    "decimal_text",
    "partition_of",
    "partitions_of_share",
    "quote_of",
    "set_timestamp_ns",
    "tick_batches",
    "timestamp_ns",
]
