"""The audit store's consumer: every Kafka topic of the event registry, one
consumer group, each event appended once to its tenant's chain.

`AuditConsumer.handle` is the handler of a runtime.messaging KafkaSubscriber.
Idempotent by event id: a redelivered event finds its record and changes
nothing. Envelopes that do not decode, or name an event type no contract
declares, never reach it: the subscriber dead-letters them to `<topic>.dlq`
(see `tradingctl deadletters`). PostgreSQL outages are retried here for up to
`transient_retry_s` before the subscriber's own few attempts, so a short
outage does not dead-letter good events.
"""

from __future__ import annotations

import logging

import asyncpg
from prometheus_client import Counter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from runtime.messaging import Event
from runtime.messaging.base import Registry
from services.audit.storage import AuditStore

log = logging.getLogger(__name__)

EVENTS = Counter("audit_events", "Events handled by the audit store.", ["outcome"])

# "The database is briefly unavailable or busy", not "this event is bad".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    OSError,
    TimeoutError,
)


def _log_transient(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("appending an event failed (attempt %d), retrying: %r", state.attempt_number, error)


class AuditConsumer:
    """Appends every consumed event to the audit store."""

    def __init__(self, store: AuditStore, registry: Registry, *, transient_retry_s: float = 60.0) -> None:
        self._store = store
        self._registry = registry
        self._transient_retry_s = transient_retry_s

    async def handle(self, event: Event) -> None:
        envelope = event.envelope
        partition_key = self._registry.route(envelope.event_type).partition_key
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
            stop=stop_after_delay(self._transient_retry_s),
            before_sleep=_log_transient,
            reraise=True,
        ):
            with attempt:
                appended = await self._store.append(envelope, event.payload, partition_key)
        if appended is None:
            EVENTS.labels("duplicate").inc()
            log.debug("event %s already stored: skipped", envelope.event_id)
        else:
            EVENTS.labels("stored").inc()
