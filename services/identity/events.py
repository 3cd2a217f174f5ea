"""Identity's events, through the shared transactional outbox (runtime/outbox.py).

`record()` adds the event to ``identity.outbox`` inside the caller's (tenant)
transaction, so an event exists exactly when its change committed; the
shared :class:`runtime.outbox.OutboxRelay` publishes it to Kafka (woken after
each commit, polling for rows left by a crash or a broker outage;
at-least-once, consumers dedupe by event id). Keyed by tenant: one tenant's
events go out in the order they were written. Events never carry
passwords, secrets or hashes (the payload types have no such fields).
"""

from __future__ import annotations

import asyncpg
from google.protobuf import message as pb_message

from runtime.context import current_context
from runtime.messaging import new_envelope
from runtime.outbox import KAFKA, OutboxWriter

PRODUCER = "identity"
OUTBOX = OutboxWriter("identity")


async def record(conn: asyncpg.Connection, tenant_id: str, payload: pb_message.Message) -> None:
    """Add an event of `tenant_id` to the outbox in `conn`'s transaction."""
    envelope = new_envelope(
        payload,
        tenant_id=tenant_id,
        correlation_id=current_context().correlation_id,
        producer=PRODUCER,
    )
    await OUTBOX.add(conn, KAFKA, envelope)
