"""The append-only PostgreSQL event store of the audit service (schema `audit`):
the AuditStore port of services.audit.ports.

Every statement runs in a transaction that has switched to the role
:data:`AUDIT_ROLE` (``SET LOCAL ROLE``) with ``app.tenant_id`` set to the
chain's tenant, so

- the service itself can only SELECT and INSERT: the table belongs to
  ``trading_audit_owner``; the service's login role and :data:`AUDIT_ROLE`
  (its tenant role) get SELECT and INSERT from the migration runner
  (``POSTGRES_GRANTS`` in runtime/security/postgres_roles.py) and nothing
  else, and :meth:`PostgresAuditStore.secure` (run at every start) refuses to start
  if PostgreSQL reports any more than that;
- row-level security limits every query to one tenant's chain, whatever its
  WHERE clause says.

Appends of one chain serialize on a transaction-scoped advisory lock keyed by
the tenant; the chain head (last sequence and hash) is read from the last row
under that lock, so there is no head row that could be edited apart from the
records. :meth:`PostgresAuditStore.append_batch` stores many events of one chain in
one such transaction: one lock, one query for the event ids already stored,
the hashes computed here in order, one multi-row INSERT.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2

from runtime.security.postgres_roles import app_role, tenant_role
from runtime.storage.postgres import TENANT_ROLE, TENANT_SETTING
from services.audit.domain import (
    GENESIS_HASH,
    RecordColumns,
    StoredRecord,
    chain_hash,
    chain_links,
)
from services.audit.ports import Appended, EventFilter, NewRecord, Row, new_record

# NOLOGIN, NOSUPERUSER, NOBYPASSRLS; SELECT and INSERT on audit.events only:
# audit's tenant role, which every statement here runs as.
AUDIT_ROLE = tenant_role("audit")
# First key of the two-int advisory locks taken here ("audt" in ASCII).
_LOCK_NAMESPACE = 0x61756474

_COLUMNS = (
    "tenant_id, sequence, event_id, event_type, correlation_id, causation_id, aggregate_type, "
    "aggregate_id, producer, occurred_at, recorded_at, envelope_bytes, prev_hash, hash"
)


def _chain_lock_key(tenant_id: str) -> int:
    # Signed 32-bit, as the two-int advisory lock functions want. Two tenants
    # sharing a key only serialize each other's appends a little more.
    return zlib.crc32(tenant_id.encode()) - (1 << 31)


class _ForeignEventId(Exception):
    """A batch held an event id that another chain already stores (row-level
    security hides it from this chain's duplicate check)."""


def _row(row: asyncpg.Record) -> Row:
    columns = RecordColumns(
        tenant_id=row["tenant_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        correlation_id=row["correlation_id"],
        causation_id=row["causation_id"],
        producer=row["producer"],
        occurred_at=row["occurred_at"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
    )
    record = StoredRecord(
        columns=columns,
        sequence=row["sequence"],
        envelope_bytes=bytes(row["envelope_bytes"]),
        prev_hash=bytes(row["prev_hash"]),
        hash=bytes(row["hash"]),
    )
    return Row(record, row["recorded_at"])


class PostgresAuditStore:
    """The AuditStore port (services.audit.ports) on PostgreSQL: appends to and
    reads the per-tenant hash chains."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def secure(self) -> None:
        """Refuse to run unless PostgreSQL reports that the service's roles
        may SELECT and INSERT audit.events and nothing else (the grants
        themselves are the migration runner's, run as the migrator)."""
        async with self._pool.acquire() as conn:
            for role in (AUDIT_ROLE, app_role("audit"), TENANT_ROLE):
                for privilege in (
                    "SELECT",
                    "INSERT",
                    "UPDATE",
                    "DELETE",
                    "TRUNCATE",
                    "REFERENCES",
                    "TRIGGER",
                ):
                    held = await conn.fetchval(
                        "SELECT has_table_privilege($1, 'audit.events', $2)", role, privilege
                    )
                    if held != (privilege in ("SELECT", "INSERT")):
                        raise RuntimeError(
                            f"audit.events is not append-only for {role}: {privilege} "
                            f"{'held' if held else 'missing'}; run the audit migrations as the migrator"
                        )

    @asynccontextmanager
    async def _chain(self, tenant_id: str) -> AsyncIterator[asyncpg.Connection]:
        """A transaction as AUDIT_ROLE scoped to one chain (tenant_id '' is the
        platform chain, which runtime's tenant_transaction would refuse)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT set_config($1, $2, true), set_config('role', $3, true)",
                TENANT_SETTING,
                tenant_id,
                AUDIT_ROLE,
            )
            yield conn

    async def append(
        self, envelope: event_pb2.EventEnvelope, payload: pb_message.Message, partition_key: str = ""
    ) -> Appended | None:
        """Store an event at the end of its tenant's chain; None when its event
        id is already stored (a redelivery changes nothing)."""
        return await self.append_record(new_record(envelope, payload, partition_key))

    async def append_record(self, record: NewRecord) -> Appended | None:
        """:meth:`append` of a prepared record."""
        columns, data = record.columns, record.envelope_bytes
        tenant = columns.tenant_id
        async with self._chain(tenant) as conn:
            if await conn.fetchval("SELECT 1 FROM audit.events WHERE event_id = $1", columns.event_id):
                return None  # the common redelivery, answered before taking the chain lock
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", _LOCK_NAMESPACE, _chain_lock_key(tenant)
            )
            head = await conn.fetchrow(
                "SELECT sequence, hash FROM audit.events WHERE tenant_id = $1 ORDER BY sequence DESC LIMIT 1",
                tenant,
            )
            sequence = 1 if head is None else head["sequence"] + 1
            prev_hash = GENESIS_HASH if head is None else bytes(head["hash"])
            digest = chain_hash(prev_hash, sequence, data)
            recorded_at = await conn.fetchval(
                """INSERT INTO audit.events (tenant_id, sequence, event_id, event_type, correlation_id,
                       causation_id, aggregate_type, aggregate_id, producer, occurred_at, envelope_bytes,
                       envelope_json, prev_hash, hash)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                   ON CONFLICT (event_id) DO NOTHING
                   RETURNING recorded_at""",
                tenant,
                sequence,
                columns.event_id,
                columns.event_type,
                columns.correlation_id,
                columns.causation_id,
                columns.aggregate_type,
                columns.aggregate_id,
                columns.producer,
                columns.occurred_at,
                data,
                record.document,
                prev_hash,
                digest,
            )
        if recorded_at is None:
            return None  # stored meanwhile by a concurrent delivery (maybe in another chain)
        return Appended(sequence, digest, recorded_at)

    async def append_batch(self, tenant_id: str, records: Sequence[NewRecord]) -> list[Appended | None]:
        """Store `records` (all of `tenant_id`'s chain) at its end in the given
        order, in one transaction; the result is aligned with `records`, None
        for an event id already stored (or earlier in the batch).

        All or nothing: a record PostgreSQL refuses (say, a NUL character in
        a text column) fails the whole call and stores nothing. An event id
        that another chain holds, which this chain's duplicate check cannot
        see, makes the batch fall back to :meth:`append_record` one by one,
        which skips it as before."""
        if any(r.columns.tenant_id != tenant_id for r in records):
            raise ValueError(f"append_batch of chain {tenant_id!r} got records of another tenant")
        first: dict[str, NewRecord] = {}
        for record in records:
            first.setdefault(record.event_id, record)
        try:
            stored = await self._append_new(tenant_id, list(first.values()))
        except _ForeignEventId:
            stored = {}
            for record in first.values():
                appended = await self.append_record(record)
                if appended is not None:
                    stored[record.event_id] = appended
        return [stored.pop(r.event_id, None) for r in records]

    async def _append_new(self, tenant_id: str, records: list[NewRecord]) -> dict[str, Appended]:
        """The records of `records` not stored yet, appended; by event id."""
        async with self._chain(tenant_id) as conn:
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, $2)", _LOCK_NAMESPACE, _chain_lock_key(tenant_id)
            )
            # Under the lock, so no append of this chain can slip in between.
            known = {
                row["event_id"]
                for row in await conn.fetch(
                    "SELECT event_id FROM audit.events WHERE event_id = ANY($1::text[])",
                    [r.event_id for r in records],
                )
            }
            fresh = [r for r in records if r.event_id not in known]
            if not fresh:
                return {}
            head = await conn.fetchrow(
                "SELECT sequence, hash FROM audit.events WHERE tenant_id = $1 ORDER BY sequence DESC LIMIT 1",
                tenant_id,
            )
            links = chain_links(
                0 if head is None else head["sequence"],
                GENESIS_HASH if head is None else bytes(head["hash"]),
                (r.envelope_bytes for r in fresh),
            )
            # One statement for the whole batch: a row per array position.
            rows = await conn.fetch(
                """INSERT INTO audit.events (tenant_id, sequence, event_id, event_type, correlation_id,
                       causation_id, aggregate_type, aggregate_id, producer, occurred_at, envelope_bytes,
                       envelope_json, prev_hash, hash)
                   SELECT $1, b.sequence, b.event_id, b.event_type, b.correlation_id, b.causation_id,
                          b.aggregate_type, b.aggregate_id, b.producer, b.occurred_at, b.envelope_bytes,
                          b.envelope_json::jsonb, b.prev_hash, b.hash
                   FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                               $8::text[], $9::text[], $10::timestamptz[], $11::bytea[], $12::text[],
                               $13::bytea[], $14::bytea[])
                        AS b(sequence, event_id, event_type, correlation_id, causation_id, aggregate_type,
                             aggregate_id, producer, occurred_at, envelope_bytes, envelope_json,
                             prev_hash, hash)
                   ORDER BY b.sequence
                   ON CONFLICT (event_id) DO NOTHING
                   RETURNING event_id, sequence, hash, recorded_at""",
                tenant_id,
                [link.sequence for link in links],
                [r.columns.event_id for r in fresh],
                [r.columns.event_type for r in fresh],
                [r.columns.correlation_id for r in fresh],
                [r.columns.causation_id for r in fresh],
                [r.columns.aggregate_type for r in fresh],
                [r.columns.aggregate_id for r in fresh],
                [r.columns.producer for r in fresh],
                [r.columns.occurred_at for r in fresh],
                [r.envelope_bytes for r in fresh],
                [json.dumps(r.document) for r in fresh],
                [link.prev_hash for link in links],
                [link.hash for link in links],
            )
            if len(rows) != len(fresh):
                # A skipped row would leave a gap that the rows after it link
                # across: roll the whole batch back instead.
                raise _ForeignEventId
        return {
            row["event_id"]: Appended(row["sequence"], bytes(row["hash"]), row["recorded_at"]) for row in rows
        }

    async def head(self, tenant_id: str) -> int:
        """The last sequence of the tenant's chain (0 when empty)."""
        async with self._chain(tenant_id) as conn:
            value = await conn.fetchval(
                "SELECT max(sequence) FROM audit.events WHERE tenant_id = $1", tenant_id
            )
        return int(value or 0)

    async def page(self, tenant_id: str, where: EventFilter, *, after: int, limit: int) -> list[Row]:
        """Records matching `where` with sequence > `after`, ascending, at most `limit`."""
        clauses = ["tenant_id = $1", "sequence > $2"]
        args: list[Any] = [tenant_id, _bigint(max(after, where.from_sequence - 1))]
        for column, value in (
            ("correlation_id", where.correlation_id),
            ("aggregate_type", where.aggregate_type),
            ("aggregate_id", where.aggregate_id),
            ("event_type", where.event_type),
        ):
            if value:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        if where.occurred_from is not None:
            args.append(where.occurred_from)
            clauses.append(f"occurred_at >= ${len(args)}")
        if where.occurred_to is not None:
            args.append(where.occurred_to)
            clauses.append(f"occurred_at < ${len(args)}")
        args.append(limit)
        sql = (
            f"SELECT {_COLUMNS} FROM audit.events WHERE {' AND '.join(clauses)} "
            f"ORDER BY sequence LIMIT ${len(args)}"
        )
        async with self._chain(tenant_id) as conn:
            rows = await conn.fetch(sql, *args)
        return [_row(r) for r in rows]

    async def records(
        self, tenant_id: str, *, from_sequence: int, to_sequence: int, batch: int
    ) -> AsyncIterator[list[StoredRecord]]:
        """The chain from `from_sequence` to `to_sequence` (0: the end) in
        ascending batches. Each batch is its own short transaction, so a
        caller that stops early holds no connection."""
        after, to_sequence = _bigint(max(from_sequence, 1) - 1), _bigint(to_sequence)
        while True:
            async with self._chain(tenant_id) as conn:
                rows = await conn.fetch(
                    f"""SELECT {_COLUMNS} FROM audit.events
                        WHERE tenant_id = $1 AND sequence > $2::bigint
                          -- bigint: "$3 = 0" alone would make PostgreSQL infer int4 (a uint64 bound fails)
                          AND ($3::bigint = 0 OR sequence <= $3::bigint)
                        ORDER BY sequence LIMIT $4""",
                    tenant_id,
                    after,
                    to_sequence,
                    batch,
                )
            if not rows:
                return
            yield [_row(r).record for r in rows]
            after = rows[-1]["sequence"]
            if len(rows) < batch:
                return

    async def events_of_types(
        self, tenant_id: str, event_types: Sequence[str], *, up_to: int, batch: int
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        """(sequence, envelope bytes) of the tenant's events of `event_types`
        up to sequence `up_to`, ascending, in batches."""
        after = 0
        while True:
            async with self._chain(tenant_id) as conn:
                rows = await conn.fetch(
                    """SELECT sequence, envelope_bytes FROM audit.events
                       WHERE tenant_id = $1 AND event_type = ANY($2::text[]) AND sequence > $3
                         AND sequence <= $4
                       ORDER BY sequence LIMIT $5""",
                    tenant_id,
                    list(event_types),
                    after,
                    up_to,
                    batch,
                )
            if not rows:
                return
            yield [(r["sequence"], bytes(r["envelope_bytes"])) for r in rows]
            after = rows[-1]["sequence"]
            if len(rows) < batch:
                return


# Sequences are uint64 in the contract and bigint in PostgreSQL: a bound
# beyond bigint (no sequence gets there) is the same bound as bigint's maximum.
_BIGINT_MAX = 2**63 - 1


def _bigint(value: int) -> int:
    return min(value, _BIGINT_MAX)
