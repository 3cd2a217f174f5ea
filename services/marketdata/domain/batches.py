"""Ticks in batches: which partition a symbol's ticks travel in, and the
TickBatch events of one feed batch (the contract: trading.marketdata.v1.TickBatch).

A symbol's partition is FNV-1a (32-bit) of its UTF-8 bytes modulo the
partition count: stable across processes and Python versions (``hash()`` is
salted per process), so marketdata and every consumer agree on it without
talking to each other. A consumer that takes a share of the symbols
subscribes to the subjects of its partitions only (features:
``partition: i/n``, see :func:`partitions_of_share`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Final

from trading.marketdata.v1 import events_pb2

# Fixed by the contract's comment; a change re-partitions every consumer at once.
TICK_PARTITIONS: Final = 16
_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193


@cache
def partition_of(symbol: str, count: int = TICK_PARTITIONS) -> int:
    """The partition of a symbol's ticks (cached: a feed has few symbols)."""
    h = _FNV_OFFSET
    for byte in symbol.encode():
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h % count


def partitions_of_share(index: int, shares: int, count: int = TICK_PARTITIONS) -> tuple[int, ...]:
    """The partitions of share ``index`` of ``shares`` (partition p belongs to
    share p mod shares): every partition to exactly one share. With more shares
    than partitions, some shares get none."""
    if shares < 1 or not 0 <= index < shares:
        raise ValueError(f"share {index} of {shares}: need 0 <= index < shares")
    return tuple(p for p in range(count) if p % shares == index)


def tick_batches(
    ticks: Iterable[tuple[str, events_pb2.Tick]], count: int = TICK_PARTITIONS
) -> list[events_pb2.TickBatch]:
    """The TickBatch events of accepted ticks (``(event id, tick)`` in feed
    order): one per partition present, ticks in their order, partitions in
    the order they first appear."""
    grouped: dict[int, tuple[list[events_pb2.Tick], list[str]]] = {}
    for event_id, tick in ticks:
        p = partition_of(tick.symbol, count)
        group = grouped.get(p)
        if group is None:
            group = grouped[p] = ([], [])
        group[0].append(tick)
        group[1].append(event_id)
    return [
        events_pb2.TickBatch(partition=p, partition_count=count, ticks=batch, tick_event_ids=ids)
        for p, (batch, ids) in grouped.items()
    ]
