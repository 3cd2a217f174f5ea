"""Audit's pure logic: no I/O, no clock.

- `chain`: the hash chain, what a record holds (columns, aggregates) and the
  chain verifier;
- `replay`: orders and positions rebuilt from stored events with execution's
  and portfolio's own domain logic, and their comparison with the live state;
- `lineage`: the lineage graph's nodes and edges proved by each event.

The chain's and the replay's public names are re-exported here
(``from services.audit import domain``); `lineage` is imported as a module
(``from services.audit.domain import lineage``).
"""

from services.audit.domain.chain import (
    AGGREGATES,
    GENESIS_HASH,
    HASH_SIZE,
    PLATFORM_CHAIN,
    BreakReason,
    ChainBreak,
    ChainVerifier,
    Link,
    RecordColumns,
    StoredRecord,
    aggregate_of,
    canonical_bytes,
    chain_hash,
    chain_links,
    columns_of,
    timestamp_to_datetime,
)
from services.audit.domain.replay import (
    FILL_EVENT_TYPE,
    ORDER_EVENT_TYPES,
    ORDER_PAYLOADS,
    POSITION_CHANGED_TYPE,
    REPLAY_EVENT_TYPES,
    Difference,
    DifferenceKind,
    OrderPayload,
    OrderReplay,
    PositionReplay,
    ReplayedOrder,
    compare_orders,
    compare_positions,
    initial_order,
    order_input,
    text,
)

__all__ = [
    "AGGREGATES",
    "FILL_EVENT_TYPE",
    "GENESIS_HASH",
    "HASH_SIZE",
    "ORDER_EVENT_TYPES",
    "ORDER_PAYLOADS",
    "PLATFORM_CHAIN",
    "POSITION_CHANGED_TYPE",
    "REPLAY_EVENT_TYPES",
    "BreakReason",
    "ChainBreak",
    "ChainVerifier",
    "Difference",
    "DifferenceKind",
    "Link",
    "OrderPayload",
    "OrderReplay",
    "PositionReplay",
    "RecordColumns",
    "ReplayedOrder",
    "StoredRecord",
    "aggregate_of",
    "canonical_bytes",
    "chain_hash",
    "chain_links",
    "columns_of",
    "compare_orders",
    "compare_positions",
    "initial_order",
    "order_input",
    "text",
    "timestamp_to_datetime",
]
