"""The interfaces audit's servicer and consumers depend on, and their values.

- :class:`AuditStore`: the append-only, hash-chained event store
  (`adapters.postgres`, `adapters.memory`; one suite for both,
  ``tests/suites/audit_ports.py``);
- :class:`LiveState`: the live orders and positions a replay is compared
  with (`services.audit.live` over gRPC, `adapters.memory`);
- :class:`AlertPublisher`: where AuditChainBroken goes (the Kafka
  publisher, `adapters.memory`);
- the lineage graph is runtime's graph port, :class:`runtime.graph.GraphStore`
  (PostgreSQL and ArangoDB adapters in runtime/graph, its suite in
  ``tests/integration/storage/test_graph_port.py``).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from google.protobuf import json_format
from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2
from trading.execution.v1 import types_pb2 as execution_types
from trading.portfolio.v1 import types_pb2 as portfolio_types

from services.audit.domain import RecordColumns, StoredRecord, canonical_bytes, columns_of


@dataclass(frozen=True, slots=True)
class Appended:
    """A newly stored record (an append of a known event id returns None instead)."""

    sequence: int
    hash: bytes
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class NewRecord:
    """An event ready to be appended: its columns, the bytes hashed and stored,
    and their JSON form."""

    columns: RecordColumns
    envelope_bytes: bytes
    document: dict[str, Any]

    @property
    def event_id(self) -> str:
        return self.columns.event_id


def new_record(
    envelope: event_pb2.EventEnvelope, payload: pb_message.Message, partition_key: str = ""
) -> NewRecord:
    """What the store keeps of an event (pure; raises ValueError or
    OverflowError for a timestamp PostgreSQL cannot hold)."""
    return NewRecord(columns_of(envelope, payload, partition_key), canonical_bytes(envelope), _json(envelope))


def _json(envelope: event_pb2.EventEnvelope) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(envelope)
    except (TypeError, ValueError, KeyError) as exc:
        # The bytes are what is hashed and kept; the JSON is a convenience.
        return {"eventId": envelope.event_id, "eventType": envelope.event_type, "jsonError": str(exc)}


@dataclass(frozen=True, slots=True)
class Row:
    """A stored record with its storage time."""

    record: StoredRecord
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class EventFilter:
    """QueryEvents filters; empty/None fields do not filter."""

    correlation_id: str = ""
    aggregate_type: str = ""
    aggregate_id: str = ""
    event_type: str = ""
    occurred_from: datetime | None = None  # inclusive
    occurred_to: datetime | None = None  # exclusive
    from_sequence: int = 0

    def fingerprint(self) -> str:
        """A short digest of the filters, kept in page tokens so a token is
        only accepted with the filters it was issued for."""
        raw = repr(
            (
                self.correlation_id,
                self.aggregate_type,
                self.aggregate_id,
                self.event_type,
                self.occurred_from.isoformat() if self.occurred_from else "",
                self.occurred_to.isoformat() if self.occurred_to else "",
                self.from_sequence,
            )
        )
        return f"{zlib.crc32(raw.encode()):08x}"


class AuditStore(Protocol):
    """Per-tenant hash chains of events, append-only.

    Chains: one per tenant id; ``""`` (domain.PLATFORM_CHAIN) is the chain of
    platform-wide events. Every read answers from its tenant's chain only.

    Appends: a record goes at the end of its tenant's chain with the next
    sequence (1, 2, ...; no gaps) and ``hash = chain_hash(prev_hash,
    sequence, envelope_bytes)`` (domain.chain_hash; the first record's
    prev_hash is domain.GENESIS_HASH). Event ids are unique across all
    chains: an append of an id stored anywhere stores nothing and answers
    None (a redelivery changes nothing). Appends of one chain are serialized.
    A record the engine cannot hold (PostgreSQL text holds no NUL character:
    asyncpg's PostgresError) fails its call, which stores nothing.

    Reads are ascending by sequence; sequences are bounded by 2**63 - 1
    (a larger bound reads as that one).
    """

    async def append(
        self, envelope: event_pb2.EventEnvelope, payload: pb_message.Message, partition_key: str = ""
    ) -> Appended | None:
        """Store an event at the end of its tenant's chain; None when its event id is already stored."""
        ...

    async def append_record(self, record: NewRecord) -> Appended | None:
        """:meth:`append` of a prepared record."""
        ...

    async def append_batch(self, tenant_id: str, records: Sequence[NewRecord]) -> list[Appended | None]:
        """Store `records` (all of `tenant_id`'s chain; ValueError otherwise) at
        its end in the given order, all or nothing; the answer is aligned
        with `records`, None for an event id already stored (or earlier in
        the batch)."""
        ...

    async def head(self, tenant_id: str) -> int:
        """The last sequence of the tenant's chain (0 when empty)."""
        ...

    async def page(self, tenant_id: str, where: EventFilter, *, after: int, limit: int) -> list[Row]:
        """Records matching `where` with sequence > `after`, ascending, at most `limit`."""
        ...

    def records(
        self, tenant_id: str, *, from_sequence: int, to_sequence: int, batch: int
    ) -> AsyncIterator[list[StoredRecord]]:
        """The chain from `from_sequence` to `to_sequence` (0: the end) in
        ascending batches of at most `batch`."""
        ...

    def events_of_types(
        self, tenant_id: str, event_types: Sequence[str], *, up_to: int, batch: int
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        """(sequence, envelope bytes) of the tenant's events of `event_types`
        up to sequence `up_to`, ascending, in batches of at most `batch`."""
        ...


class AlertPublisher(Protocol):
    """Publishes audit's alerts (AuditChainBroken) where the event registry
    routes them (Kafka); at least once."""

    async def publish(
        self, envelope: event_pb2.EventEnvelope, *, payload: pb_message.Message | None = None
    ) -> None:
        """Publish one envelope (`payload`: its unpacked payload, if at hand)."""
        ...


class LiveState(Protocol):
    """The live state a replay compares with; reads the tenant of the current
    request context (runtime.context)."""

    async def orders(self) -> list[execution_types.Order]:
        """Every order of the tenant."""
        ...

    async def positions(self) -> list[portfolio_types.Position]:
        """Every position of the tenant."""
        ...
