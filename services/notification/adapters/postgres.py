"""PostgreSQL storage of webhooks and their dead letters (schema `notification`):
the WebhookStore port of services.notification.ports.

Every query runs in `tenant_transaction`, so row-level security limits it to
one tenant's rows whoever calls it (API or delivery worker).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg

from runtime.outbox import OutboxRow, OutboxWriter
from runtime.storage.postgres import tenant_transaction
from services.notification.ports import DeadLetterRow, DuplicateIdError, WebhookRow

# Notification's outbox (runtime/outbox.py): WebhookDeliveryFailed, written with its dead letter.
OUTBOX = OutboxWriter("notification")


_WEBHOOK_COLUMNS = "webhook_id, url, event_types, description, secret_sealed, secret_prefix, created_at"
_DEAD_LETTER_COLUMNS = (
    "dead_letter_id, webhook_id, delivery_id, url, event_id, event_type, attempts, last_error, "
    "last_http_status, first_attempt_at, last_attempt_at, dead_lettered_at, envelope, dlq_seq"
)


def _webhook(row: asyncpg.Record) -> WebhookRow:
    return WebhookRow(
        webhook_id=str(row["webhook_id"]),
        url=row["url"],
        event_types=tuple(row["event_types"]),
        description=row["description"],
        secret_sealed=bytes(row["secret_sealed"]),
        secret_prefix=row["secret_prefix"],
        created_at=row["created_at"],
    )


def _dead_letter(row: asyncpg.Record) -> DeadLetterRow:
    return DeadLetterRow(
        dead_letter_id=str(row["dead_letter_id"]),
        webhook_id=str(row["webhook_id"]),
        delivery_id=str(row["delivery_id"]),
        url=row["url"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        last_http_status=row["last_http_status"],
        first_attempt_at=row["first_attempt_at"],
        last_attempt_at=row["last_attempt_at"],
        dead_lettered_at=row["dead_lettered_at"],
        envelope=bytes(row["envelope"]),
        dlq_seq=row["dlq_seq"],
    )


class PostgresWebhookStore:
    """The WebhookStore port (services.notification.ports) on PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # ---- webhooks

    async def create_webhook(self, tenant_id: str, webhook: WebhookRow) -> None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            try:
                await conn.execute(
                    f"INSERT INTO notification.webhooks (tenant_id, {_WEBHOOK_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    tenant_id,
                    uuid.UUID(webhook.webhook_id),
                    webhook.url,
                    list(webhook.event_types),
                    webhook.description,
                    webhook.secret_sealed,
                    webhook.secret_prefix,
                    webhook.created_at,
                )
            except asyncpg.UniqueViolationError as exc:
                raise DuplicateIdError(f"webhook {webhook.webhook_id} exists") from exc

    async def list_webhooks(self, tenant_id: str, limit: int, before: str | None) -> list[WebhookRow]:
        """Newest first; `before` is the last id of the previous page."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"SELECT {_WEBHOOK_COLUMNS} FROM notification.webhooks "
                "WHERE ($1::uuid IS NULL OR webhook_id < $1::uuid) ORDER BY webhook_id DESC LIMIT $2",
                uuid.UUID(before) if before else None,
                limit,
            )
        return [_webhook(r) for r in rows]

    async def get_webhook(self, tenant_id: str, webhook_id: str) -> WebhookRow | None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"SELECT {_WEBHOOK_COLUMNS} FROM notification.webhooks WHERE webhook_id = $1",
                uuid.UUID(webhook_id),
            )
        return _webhook(row) if row is not None else None

    async def webhooks_for(self, tenant_id: str, event_type: str, *, event_id: str = "") -> list[WebhookRow]:
        """The tenant's webhooks subscribed to `event_type` (or to every type);
        none when `event_id` was fanned out before (see :meth:`fanned_out`)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"SELECT {_WEBHOOK_COLUMNS} FROM notification.webhooks "
                "WHERE (event_types = '{}' OR $1 = ANY(event_types))"
                " AND NOT EXISTS (SELECT 1 FROM notification.fanned_out f"
                " WHERE f.tenant_id = $3 AND f.event_id = $2)"
                " ORDER BY webhook_id",
                event_type,
                event_id,
                tenant_id,
            )
        return [_webhook(r) for r in rows]

    async def delete_webhook(self, tenant_id: str, webhook_id: str) -> list[int] | None:
        """Delete a webhook and its dead letters; None if there was no such
        webhook, else the DLQ stream sequences of the dropped dead letters."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            seqs = await conn.fetch(
                "SELECT dlq_seq FROM notification.dead_letters WHERE webhook_id = $1 AND dlq_seq IS NOT NULL",
                uuid.UUID(webhook_id),
            )
            deleted = await conn.fetchval(
                "DELETE FROM notification.webhooks WHERE webhook_id = $1 RETURNING webhook_id",
                uuid.UUID(webhook_id),
            )
        if deleted is None:
            return None
        return [r["dlq_seq"] for r in seqs]

    async def fanned_out(
        self, tenant_id: str, event_id: str, *, prune_before: datetime | None = None
    ) -> None:
        """Record that `event_id`'s delivery jobs were published (after they were:
        a crash in between re-publishes them, and JetStream drops those copies
        by job id); with `prune_before`, forget the tenant's older records."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            await conn.execute(
                "INSERT INTO notification.fanned_out (tenant_id, event_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                tenant_id,
                event_id,
            )
            if prune_before is not None:
                await conn.execute(
                    "DELETE FROM notification.fanned_out WHERE tenant_id = $1 AND fanned_out_at < $2",
                    tenant_id,
                    prune_before,
                )

    # ---- dead letters

    async def add_dead_letter(
        self, tenant_id: str, letter: DeadLetterRow, *, events: Sequence[OutboxRow] = ()
    ) -> bool:
        """Store a dead letter with the outbox rows announcing it; False (and
        nothing stored) when its webhook is gone (deleted meanwhile)."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            try:
                await conn.execute(
                    f"INSERT INTO notification.dead_letters (tenant_id, {_DEAD_LETTER_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                    tenant_id,
                    uuid.UUID(letter.dead_letter_id),
                    uuid.UUID(letter.webhook_id),
                    uuid.UUID(letter.delivery_id),
                    letter.url,
                    letter.event_id,
                    letter.event_type,
                    letter.attempts,
                    letter.last_error,
                    letter.last_http_status,
                    letter.first_attempt_at,
                    letter.last_attempt_at,
                    letter.dead_lettered_at,
                    letter.envelope,
                    letter.dlq_seq,
                )
            except asyncpg.ForeignKeyViolationError:
                return False
            except asyncpg.UniqueViolationError as exc:
                raise DuplicateIdError(f"dead letter {letter.dead_letter_id} exists") from exc
            await OUTBOX.add_rows(conn, events)
        return True

    async def set_dlq_seq(self, tenant_id: str, dead_letter_id: str, seq: int) -> None:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            await conn.execute(
                "UPDATE notification.dead_letters SET dlq_seq = $2 WHERE dead_letter_id = $1",
                uuid.UUID(dead_letter_id),
                seq,
            )

    async def list_dead_letters(
        self, tenant_id: str, limit: int, before: str | None, webhook_id: str | None
    ) -> list[DeadLetterRow]:
        """Newest first, of every webhook or one."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            rows = await conn.fetch(
                f"SELECT {_DEAD_LETTER_COLUMNS} FROM notification.dead_letters "
                "WHERE ($1::uuid IS NULL OR dead_letter_id < $1::uuid) "
                "AND ($2::uuid IS NULL OR webhook_id = $2::uuid) "
                "ORDER BY dead_letter_id DESC LIMIT $3",
                uuid.UUID(before) if before else None,
                uuid.UUID(webhook_id) if webhook_id else None,
                limit,
            )
        return [_dead_letter(r) for r in rows]

    async def take_dead_letter(self, tenant_id: str, dead_letter_id: str) -> DeadLetterRow | None:
        """Remove a dead letter and return it (None when there is none): a
        redrive takes it exactly once, however many calls race."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                "DELETE FROM notification.dead_letters WHERE dead_letter_id = $1 "
                f"RETURNING {_DEAD_LETTER_COLUMNS}",
                uuid.UUID(dead_letter_id),
            )
        return _dead_letter(row) if row is not None else None

    @asynccontextmanager
    async def taking_dead_letter(
        self, tenant_id: str, dead_letter_id: str
    ) -> AsyncIterator[DeadLetterRow | None]:
        """Remove a dead letter in a transaction that commits only if the
        block succeeds (a redrive whose publish fails keeps its dead letter);
        a concurrent second redrive waits on the row and then finds none."""
        async with tenant_transaction(self._pool, tenant_id) as conn:
            row = await conn.fetchrow(
                "DELETE FROM notification.dead_letters WHERE dead_letter_id = $1 "
                f"RETURNING {_DEAD_LETTER_COLUMNS}",
                uuid.UUID(dead_letter_id),
            )
            yield _dead_letter(row) if row is not None else None
