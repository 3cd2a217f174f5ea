"""The interfaces notification's servicer and consumers depend on.

Implementations: `adapters.postgres` (PostgreSQL under row-level security),
`adapters.nats` (JetStream) and `adapters.memory` (in process). One test
suite per port (``tests/suites/notification_ports.py``) runs against both
storage adapters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from runtime.outbox import OutboxRow
from services.notification.targets import ResolvedTarget


@dataclass(frozen=True, slots=True)
class WebhookRow:
    """A registered webhook (ids are UUID text; the secret is sealed, see signing.SecretBox)."""

    webhook_id: str
    url: str
    event_types: tuple[str, ...]
    description: str
    secret_sealed: bytes
    secret_prefix: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A delivery that failed every attempt, with the envelope a redrive sends again."""

    dead_letter_id: str
    webhook_id: str
    delivery_id: str
    url: str
    event_id: str
    event_type: str
    attempts: int
    last_error: str
    last_http_status: int
    first_attempt_at: datetime
    last_attempt_at: datetime
    dead_lettered_at: datetime
    envelope: bytes
    dlq_seq: int | None = None


class DuplicateIdError(ValueError):
    """A webhook or dead letter id the tenant has stored already."""


class WebhookStore(Protocol):
    """Webhooks, their dead letters and the fanned-out event ids, per tenant.

    Tenancy: every method acts on `tenant_id`'s rows only; another tenant's
    rows do not exist for it (reads find nothing, deletes delete nothing). An
    empty `tenant_id` raises ValueError; storing an id the tenant has
    already raises DuplicateIdError.

    Ids (webhook, dead letter, delivery) are UUIDs, new ones UUIDv7 (callers
    make them), so ordering by id is ordering by creation; an id that is not
    a UUID raises ValueError. Listings are newest first (id descending),
    keyset-paged: `before` is the last id of the previous page, `limit` the
    most rows answered.
    """

    async def create_webhook(self, tenant_id: str, webhook: WebhookRow) -> None:
        """Store a new webhook (its id is new: callers make a UUIDv7)."""
        ...

    async def list_webhooks(self, tenant_id: str, limit: int, before: str | None) -> list[WebhookRow]:
        """Newest first; `before` is the last id of the previous page."""
        ...

    async def get_webhook(self, tenant_id: str, webhook_id: str) -> WebhookRow | None:
        """The webhook, or None (none such, or another tenant's)."""
        ...

    async def webhooks_for(self, tenant_id: str, event_type: str, *, event_id: str = "") -> list[WebhookRow]:
        """The tenant's webhooks subscribed to `event_type` (or to every type:
        empty `event_types`), oldest first; none when `event_id` was recorded
        by :meth:`fanned_out` (its jobs were published already)."""
        ...

    async def delete_webhook(self, tenant_id: str, webhook_id: str) -> list[int] | None:
        """Delete a webhook and its dead letters; None if there was no such
        webhook, else the DLQ stream sequences of the dropped dead letters
        (those that have one)."""
        ...

    async def fanned_out(
        self, tenant_id: str, event_id: str, *, prune_before: datetime | None = None
    ) -> None:
        """Record that `event_id`'s delivery jobs were published (idempotent);
        with `prune_before`, forget the tenant's records made before it."""
        ...

    async def add_dead_letter(
        self, tenant_id: str, letter: DeadLetterRow, *, events: Sequence[OutboxRow] = ()
    ) -> bool:
        """Store a dead letter and, atomically with it, the outbox rows
        announcing it; False (and nothing stored) when its webhook is gone."""
        ...

    async def set_dlq_seq(self, tenant_id: str, dead_letter_id: str, seq: int) -> None:
        """Note the DLQ stream sequence of a dead letter (nothing if it is gone)."""
        ...

    async def list_dead_letters(
        self, tenant_id: str, limit: int, before: str | None, webhook_id: str | None
    ) -> list[DeadLetterRow]:
        """Newest first, of every webhook or of `webhook_id`'s."""
        ...

    async def take_dead_letter(self, tenant_id: str, dead_letter_id: str) -> DeadLetterRow | None:
        """Remove a dead letter and return it (None when there is none): it is
        taken exactly once, however many calls race."""
        ...

    def taking_dead_letter(
        self, tenant_id: str, dead_letter_id: str
    ) -> AbstractAsyncContextManager[DeadLetterRow | None]:
        """Remove a dead letter only if the block succeeds (an exception keeps
        it); a concurrent take waits for the block and then finds none."""
        ...


class DeliveryJobs(Protocol):
    """Publishes webhook delivery jobs (one per event and webhook).

    At most one job per `msg_id` within the duplicate window (a republished
    job is dropped); jobs of one webhook are delivered in publish order."""

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
        """Publish one job; returns its new delivery id. `dead_letter_id` names
        the dead letter a redrive comes from (the worker removes it)."""
        ...


class DeadLetterEntries(Protocol):
    """The platform DLQ stream's copies of webhook dead letters (what
    ``tradingctl deadletters`` lists), by stream sequence."""

    async def delete(self, seq: int) -> None:
        """Best effort: remove an entry that is done with; one already gone is no error."""
        ...


class TargetResolver(Protocol):
    """The webhook target policy (services.notification.targets) with name resolution."""

    async def resolve(self, url: str) -> ResolvedTarget:
        """The parsed target and its addresses; TargetRefusedError when the policy refuses it."""
        ...
