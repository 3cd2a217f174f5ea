"""Audit's ports in process memory, for servicer tests: the hash chains with
the PostgreSQL store's behaviour (sequences, hashes, event ids unique across
chains, batches all or nothing, filters and ordering; the same port suite,
``tests/suites/audit_ports.py``), a live state held in dicts, and a
publisher that keeps what it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2
from trading.execution.v1 import types_pb2 as execution_types
from trading.portfolio.v1 import types_pb2 as portfolio_types

from runtime.context import current_context
from services.audit.domain import GENESIS_HASH, StoredRecord, chain_links
from services.audit.ports import Appended, EventFilter, NewRecord, Row, new_record


def _matches(row: Row, where: EventFilter) -> bool:
    columns = row.record.columns
    for wanted, value in (
        (where.correlation_id, columns.correlation_id),
        (where.aggregate_type, columns.aggregate_type),
        (where.aggregate_id, columns.aggregate_id),
        (where.event_type, columns.event_type),
    ):
        if wanted and wanted != value:
            return False
    if where.occurred_from is not None and columns.occurred_at < where.occurred_from:
        return False
    return where.occurred_to is None or columns.occurred_at < where.occurred_to


class MemoryAuditStore:
    """The AuditStore port in memory. Every method runs without awaiting
    between reading a chain's head and appending to it, so appends of one
    chain are serialized by the event loop."""

    def __init__(self) -> None:
        self._chains: dict[str, list[Row]] = {}
        self._event_ids: set[str] = set()

    def _chain(self, tenant_id: str) -> list[Row]:
        return self._chains.setdefault(tenant_id, [])

    async def append(
        self, envelope: event_pb2.EventEnvelope, payload: pb_message.Message, partition_key: str = ""
    ) -> Appended | None:
        return await self.append_record(new_record(envelope, payload, partition_key))

    async def append_record(self, record: NewRecord) -> Appended | None:
        return self._append(record.columns.tenant_id, [record]).get(record.event_id)

    async def append_batch(self, tenant_id: str, records: Sequence[NewRecord]) -> list[Appended | None]:
        if any(r.columns.tenant_id != tenant_id for r in records):
            raise ValueError(f"append_batch of chain {tenant_id!r} got records of another tenant")
        stored = self._append(tenant_id, records)
        return [stored.pop(r.event_id, None) for r in records]

    def _append(self, tenant_id: str, records: Sequence[NewRecord]) -> dict[str, Appended]:
        fresh: dict[str, NewRecord] = {}
        for record in records:
            if record.event_id not in self._event_ids:
                fresh.setdefault(record.event_id, record)
        chain = self._chain(tenant_id)
        head = chain[-1].record if chain else None
        links = chain_links(
            0 if head is None else head.sequence,
            GENESIS_HASH if head is None else head.hash,
            (r.envelope_bytes for r in fresh.values()),
        )
        recorded_at = datetime.now(UTC)
        appended: dict[str, Appended] = {}
        for record, link in zip(fresh.values(), links, strict=True):
            stored = StoredRecord(
                columns=record.columns,
                sequence=link.sequence,
                envelope_bytes=record.envelope_bytes,
                prev_hash=link.prev_hash,
                hash=link.hash,
            )
            chain.append(Row(stored, recorded_at))
            self._event_ids.add(record.event_id)
            appended[record.event_id] = Appended(link.sequence, link.hash, recorded_at)
        return appended

    async def head(self, tenant_id: str) -> int:
        chain = self._chains.get(tenant_id)
        return chain[-1].record.sequence if chain else 0

    async def page(self, tenant_id: str, where: EventFilter, *, after: int, limit: int) -> list[Row]:
        after = max(after, where.from_sequence - 1)
        rows = self._chains.get(tenant_id, [])
        found = (row for row in rows if row.record.sequence > after and _matches(row, where))
        return [row for _, row in zip(range(limit), found, strict=False)]

    async def records(
        self, tenant_id: str, *, from_sequence: int, to_sequence: int, batch: int
    ) -> AsyncIterator[list[StoredRecord]]:
        after = max(from_sequence, 1) - 1
        while True:
            rows = [
                row.record
                for row in self._chains.get(tenant_id, [])
                if row.record.sequence > after and (to_sequence == 0 or row.record.sequence <= to_sequence)
            ][:batch]
            if not rows:
                return
            yield rows
            after = rows[-1].sequence
            if len(rows) < batch:
                return

    async def events_of_types(
        self, tenant_id: str, event_types: Sequence[str], *, up_to: int, batch: int
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        wanted, after = set(event_types), 0
        while True:
            rows = [
                (row.record.sequence, row.record.envelope_bytes)
                for row in self._chains.get(tenant_id, [])
                if row.record.columns.event_type in wanted and after < row.record.sequence <= up_to
            ][:batch]
            if not rows:
                return
            yield rows
            after = rows[-1][0]
            if len(rows) < batch:
                return


class MemoryLiveState:
    """The LiveState port from dicts by tenant (what execution and portfolio would answer)."""

    def __init__(
        self,
        orders: Mapping[str, Sequence[execution_types.Order]] | None = None,
        positions: Mapping[str, Sequence[portfolio_types.Position]] | None = None,
    ) -> None:
        self.orders_by_tenant: dict[str, list[execution_types.Order]] = {
            tenant: list(found) for tenant, found in (orders or {}).items()
        }
        self.positions_by_tenant: dict[str, list[portfolio_types.Position]] = {
            tenant: list(found) for tenant, found in (positions or {}).items()
        }

    async def orders(self) -> list[execution_types.Order]:
        return list(self.orders_by_tenant.get(current_context().tenant_id, []))

    async def positions(self) -> list[portfolio_types.Position]:
        return list(self.positions_by_tenant.get(current_context().tenant_id, []))


class MemoryPublisher:
    """The AlertPublisher port in memory: what audit publishes (AuditChainBroken
    alerts) kept in `published`, in order."""

    def __init__(self) -> None:
        self.published: list[event_pb2.EventEnvelope] = []

    async def publish(
        self, envelope: event_pb2.EventEnvelope, *, payload: pb_message.Message | None = None
    ) -> None:
        self.published.append(envelope)
