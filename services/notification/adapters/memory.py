"""Notification's ports in process memory: the behaviour of the PostgreSQL and
JetStream adapters (tenancy, ordering, paging, idempotency, errors) without
I/O, for servicer tests. Passes the same port suite as the PostgreSQL store
(``tests/suites/notification_ports.py``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from runtime.messaging import uuid7
from runtime.outbox import OutboxRow
from services.notification.ports import DeadLetterRow, DuplicateIdError, WebhookRow


def _tenant(tenant_id: str) -> str:
    if not tenant_id:
        raise ValueError("tenant_id must not be empty")
    return tenant_id


def _id(value: str) -> uuid.UUID:
    """The UUID `value` names (ValueError if none, as the PostgreSQL adapter)."""
    return uuid.UUID(value)


@dataclass
class _Tenant:
    webhooks: dict[uuid.UUID, WebhookRow] = field(default_factory=dict)
    dead_letters: dict[uuid.UUID, DeadLetterRow] = field(default_factory=dict)
    fanned_out: dict[str, datetime] = field(default_factory=dict)
    # One lock per dead letter being taken (PostgreSQL's row lock).
    taking: dict[uuid.UUID, asyncio.Lock] = field(default_factory=dict)


class MemoryWebhookStore:
    """The WebhookStore port in memory; `outbox` holds the rows added with dead letters."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}
        self.outbox: list[OutboxRow] = []

    def _of(self, tenant_id: str) -> _Tenant:
        return self._tenants.setdefault(_tenant(tenant_id), _Tenant())

    # ---- webhooks

    async def create_webhook(self, tenant_id: str, webhook: WebhookRow) -> None:
        key = _id(webhook.webhook_id)
        tenant = self._of(tenant_id)
        if key in tenant.webhooks:
            raise DuplicateIdError(f"webhook {webhook.webhook_id} exists")
        tenant.webhooks[key] = replace(webhook, webhook_id=str(key))

    async def list_webhooks(self, tenant_id: str, limit: int, before: str | None) -> list[WebhookRow]:
        last = _id(before) if before else None
        tenant = self._of(tenant_id)
        keys = sorted((k for k in tenant.webhooks if last is None or k < last), reverse=True)
        return [tenant.webhooks[k] for k in keys[:limit]]

    async def get_webhook(self, tenant_id: str, webhook_id: str) -> WebhookRow | None:
        return self._of(tenant_id).webhooks.get(_id(webhook_id))

    async def webhooks_for(self, tenant_id: str, event_type: str, *, event_id: str = "") -> list[WebhookRow]:
        tenant = self._of(tenant_id)
        if event_id in tenant.fanned_out:
            return []
        return [
            tenant.webhooks[k]
            for k in sorted(tenant.webhooks)
            if not tenant.webhooks[k].event_types or event_type in tenant.webhooks[k].event_types
        ]

    async def delete_webhook(self, tenant_id: str, webhook_id: str) -> list[int] | None:
        key = _id(webhook_id)
        tenant = self._of(tenant_id)
        if tenant.webhooks.pop(key, None) is None:
            return None
        dropped = [k for k, letter in tenant.dead_letters.items() if letter.webhook_id == str(key)]
        seqs = [tenant.dead_letters[k].dlq_seq for k in dropped]
        for k in dropped:
            del tenant.dead_letters[k]
        return [seq for seq in seqs if seq is not None]

    async def fanned_out(
        self, tenant_id: str, event_id: str, *, prune_before: datetime | None = None
    ) -> None:
        tenant = self._of(tenant_id)
        tenant.fanned_out.setdefault(event_id, datetime.now(UTC))
        if prune_before is not None:
            tenant.fanned_out = {e: at for e, at in tenant.fanned_out.items() if at >= prune_before}

    # ---- dead letters

    async def add_dead_letter(
        self, tenant_id: str, letter: DeadLetterRow, *, events: Sequence[OutboxRow] = ()
    ) -> bool:
        tenant = self._of(tenant_id)
        key, webhook = _id(letter.dead_letter_id), _id(letter.webhook_id)
        if webhook not in tenant.webhooks:
            return False
        if key in tenant.dead_letters:
            raise DuplicateIdError(f"dead letter {letter.dead_letter_id} exists")
        tenant.dead_letters[key] = replace(
            letter,
            dead_letter_id=str(key),
            webhook_id=str(webhook),
            delivery_id=str(_id(letter.delivery_id)),
        )
        self.outbox.extend(events)
        return True

    async def set_dlq_seq(self, tenant_id: str, dead_letter_id: str, seq: int) -> None:
        tenant, key = self._of(tenant_id), _id(dead_letter_id)
        letter = tenant.dead_letters.get(key)
        if letter is not None:
            tenant.dead_letters[key] = replace(letter, dlq_seq=seq)

    async def list_dead_letters(
        self, tenant_id: str, limit: int, before: str | None, webhook_id: str | None
    ) -> list[DeadLetterRow]:
        last = _id(before) if before else None
        webhook = str(_id(webhook_id)) if webhook_id else None
        tenant = self._of(tenant_id)
        keys = sorted(
            (
                k
                for k, letter in tenant.dead_letters.items()
                if (last is None or k < last) and (webhook is None or letter.webhook_id == webhook)
            ),
            reverse=True,
        )
        return [tenant.dead_letters[k] for k in keys[:limit]]

    async def take_dead_letter(self, tenant_id: str, dead_letter_id: str) -> DeadLetterRow | None:
        async with self.taking_dead_letter(tenant_id, dead_letter_id) as letter:
            return letter

    @asynccontextmanager
    async def taking_dead_letter(
        self, tenant_id: str, dead_letter_id: str
    ) -> AsyncIterator[DeadLetterRow | None]:
        tenant, key = self._of(tenant_id), _id(dead_letter_id)
        lock = tenant.taking.setdefault(key, asyncio.Lock())
        async with lock:
            letter = tenant.dead_letters.get(key)
            yield letter
            if letter is not None:
                tenant.dead_letters.pop(key, None)


@dataclass(frozen=True, slots=True)
class Job:
    """One published delivery job."""

    tenant_id: str
    webhook_id: str
    delivery_id: str
    msg_id: str
    dead_letter_id: str
    envelope: bytes
    headers: Mapping[str, str]


class MemoryDeliveryJobs:
    """The DeliveryJobs port in memory: `jobs` in publish order, a repeated
    `msg_id` dropped (JetStream's duplicate window, here unbounded)."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self._seen: set[str] = set()

    async def publish(
        self,
        envelope_bytes: bytes,
        headers: Mapping[str, str],
        *,
        tenant_id: str,
        webhook_id: str,
        msg_id: str,
        dead_letter_id: str = "",
    ) -> str:
        delivery_id = str(uuid7())
        if msg_id not in self._seen:
            self._seen.add(msg_id)
            job = Job(
                tenant_id, webhook_id, delivery_id, msg_id, dead_letter_id, envelope_bytes, dict(headers)
            )
            self.jobs.append(job)
        return delivery_id


class MemoryDeadLetterEntries:
    """The DeadLetterEntries port in memory: the sequences in `entries`."""

    def __init__(self, entries: Sequence[int] = ()) -> None:
        self.entries: set[int] = set(entries)

    async def delete(self, seq: int) -> None:
        self.entries.discard(seq)
