"""The fill consumer of the portfolio and the events it publishes.

`FillConsumer.handle` is the handler of a runtime.messaging KafkaSubscriber
(group `portfolio.fills`) on `trading.execution.fills`. It is idempotent: the
event id (and the fill's execution id) is recorded in the same PostgreSQL
transaction as the position and cash update, so a redelivered or re-emitted
fill changes nothing. A fill the books cannot take raises InvalidFillError;
the subscriber retries it a few times and then dead-letters it to
`trading.execution.fills.dlq`, and consumption goes on. Database outages are
not the fill's fault: they are retried in the handler for up to a minute
before the subscriber's own attempts (and then the DLQ, from which
`tradingctl deadletters` re-drives) take over.

`PositionChanged` (NATS core `portfolio.positions.{tenant}` for live streams,
and Kafka) is written into portfolio's outbox in the fill's transaction and
published by the shared relay (runtime/outbox.py), woken after the commit:
a fill applied is announced, at least once, whatever crashes in between.
A `PortfolioSnapshot` follows at most once per second per tenant, published
directly and best effort: it is no state change but a view of the books,
and the next one carries the whole portfolio again.

Fills of one order stay in order (the topic is keyed by order_id); fills of
different orders of one symbol may be applied in another order than they
executed, which changes the average price path but not quantity or cash.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import protovalidate
from google.protobuf import message as pb_message
from prometheus_client import Counter
from trading.common.v1 import event_pb2
from trading.execution.v1 import events_pb2 as execution_events
from trading.portfolio.v1 import events_pb2 as portfolio_events

from runtime import decimals
from runtime.context import RequestContext, use_context
from runtime.messaging import Event, new_envelope
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsPublisher
from runtime.outbox import KAFKA, NATS, OutboxRelay, OutboxRow, outbox_row
from runtime.storage.postgres import retry_transient
from services.portfolio import domain
from services.portfolio.ports import AppliedFill, BookStore, FillRecord, QuoteCache
from services.portfolio.views import PortfolioViews, money, position_message

log = logging.getLogger(__name__)

FILL_EVENT = execution_events.OrderFillReported.DESCRIPTOR.full_name
PRODUCER = "portfolio"

FILLS = Counter("portfolio_fills", "Fill events handled by the portfolio.", ["outcome"])

# PostgreSQL errors that say "briefly unavailable" (runtime.storage.postgres.
# TRANSIENT_ERRORS) are retried here for up to TRANSIENT_RETRY_S, instead of in
# the subscriber, whose few quick attempts would dead-letter good fills during
# a short PostgreSQL outage.
TRANSIENT_RETRY_S = 60.0
# Snapshot times kept per tenant before old ones are pruned.
_MAX_REMEMBERED = 10_000


def parse_fill(event: Event) -> tuple[str, FillRecord, domain.Fill]:
    """Tenant, identity and domain fill of an OrderFillReported event; raises
    InvalidFillError for anything the books cannot take."""
    payload = event.payload
    if not isinstance(payload, execution_events.OrderFillReported):
        raise domain.InvalidFillError(f"expected {FILL_EVENT}, got {type(payload).__name__}")
    tenant = event.envelope.tenant_id
    if not tenant:
        raise domain.InvalidFillError("fill event without tenant_id")
    try:
        protovalidate.validate(payload)
    except protovalidate.ValidationError as exc:
        raise domain.InvalidFillError(f"invalid fill event: {exc}") from exc
    f = payload.fill
    if not f.execution_id:
        raise domain.InvalidFillError("fill without execution_id")
    if f.fee.currency and f.fee.currency != domain.BASE_CURRENCY:
        raise domain.InvalidFillError(f"fee in {f.fee.currency}, the books are in {domain.BASE_CURRENCY}")
    try:
        side = domain.Side(f.side)
        fill = domain.Fill(
            symbol=f.symbol,
            side=side,
            quantity=decimals.from_proto(f.quantity),
            price=decimals.from_proto(f.price),
            fee=decimals.from_proto(f.fee.amount),
        )
    except domain.InvalidFillError:
        raise
    except (ValueError, ArithmeticError) as exc:  # unknown side, unparsable decimal
        raise domain.InvalidFillError(f"invalid fill: {exc!r}") from exc
    record = FillRecord(event.envelope.event_id, f.execution_id, payload.order_id or f.order_id)
    return tenant, record, fill


class SnapshotPublisher:
    """Publishes a tenant's PortfolioSnapshot after changes, at most once per
    `interval_s` per tenant: a change within the interval is merged into one
    trailing snapshot, computed when it is sent (so it is never stale)."""

    def __init__(
        self,
        views: PortfolioViews,
        nats: NatsPublisher,
        kafka: KafkaPublisher | None,
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._views = views
        self._nats = nats
        self._kafka = kafka
        self._interval_s = interval_s
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[str, float] = {}

    def notify(self, tenant_id: str, correlation_id: str = "") -> None:
        """The tenant's portfolio changed: schedule a snapshot unless one is pending."""
        if tenant_id in self._pending:
            return
        if len(self._last) > _MAX_REMEMBERED:
            # Forget tenants whose interval has passed: they need no delay.
            horizon = time.monotonic() - self._interval_s
            self._last = {t: at for t, at in self._last.items() if at > horizon}
        delay = max(0.0, self._last.get(tenant_id, -math.inf) + self._interval_s - time.monotonic())
        task = asyncio.create_task(self._publish_after(tenant_id, delay, correlation_id))
        self._pending[tenant_id] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_after(self, tenant_id: str, delay: float, correlation_id: str) -> None:
        if delay:
            await asyncio.sleep(delay)
        # From here on, a new change schedules the next snapshot.
        self._pending.pop(tenant_id, None)
        self._last[tenant_id] = time.monotonic()
        try:
            portfolio = await self._views.portfolio(tenant_id)
            payload = portfolio_events.PortfolioSnapshot(portfolio=portfolio)
            envelope = new_envelope(
                payload, tenant_id=tenant_id, correlation_id=correlation_id, producer=PRODUCER
            )
            await _publish(self._nats, self._kafka, envelope, payload)
        except Exception:
            log.exception("portfolio snapshot of tenant %s not published", tenant_id)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()


async def _publish(
    nats: NatsPublisher,
    kafka: KafkaPublisher | None,
    envelope: event_pb2.EventEnvelope,
    payload: pb_message.Message,
) -> None:
    """NATS first (live streams wait on it), then Kafka; each failure logged apart."""
    try:
        await nats.publish(envelope, payload=payload)
    except Exception:
        log.exception("%s %s not published on NATS", envelope.event_type, envelope.event_id)
    if kafka is not None:
        try:
            await kafka.publish(envelope, payload=payload)
        except Exception:
            log.exception("%s %s not published on Kafka", envelope.event_type, envelope.event_id)


class FillConsumer:
    """Applies OrderFillReported events to the books (see the module doc)."""

    def __init__(
        self,
        store: BookStore,
        quotes: QuoteCache,
        relay: OutboxRelay | None,
        snapshots: SnapshotPublisher,
        *,
        transient_retry_s: float = TRANSIENT_RETRY_S,
    ) -> None:
        self._transient_retry_s = transient_retry_s
        self._store = store
        self._quotes = quotes
        self._relay = relay
        self._snapshots = snapshots

    async def handle(self, event: Event) -> None:
        tenant, record, fill = parse_fill(event)
        envelope = event.envelope
        context = RequestContext(tenant_id=tenant, correlation_id=envelope.correlation_id)
        with use_context(context):
            # The mark is read before the transaction: PositionChanged is built inside it.
            try:
                marks = await self._quotes.marks([fill.symbol])
            except Exception:
                log.exception("quotes unavailable: PositionChanged of %s marked at cost", fill.symbol)
                marks = {}

            def announce(applied: AppliedFill) -> list[OutboxRow]:
                return self._position_changed(tenant, event, record, applied, marks)

            applied = await retry_transient(
                lambda: self._store.apply_fill(tenant, record, fill, announce=announce),
                within_s=self._transient_retry_s,
                what="applying a fill",
            )
            if applied is None:
                FILLS.labels("duplicate").inc()
                log.info("fill %s (event %s) already applied: skipped", record.execution_id, record.event_id)
                return
            FILLS.labels("applied").inc()
            if self._relay is not None:
                self._relay.wake()
            self._snapshots.notify(tenant, envelope.correlation_id)

    def _position_changed(
        self,
        tenant: str,
        event: Event,
        record: FillRecord,
        applied: AppliedFill,
        marks: dict[str, domain.Mark],
    ) -> list[OutboxRow]:
        """PositionChanged of an applied fill, for NATS and Kafka (one envelope), keyed by symbol."""
        outcome = applied.outcome
        position = outcome.position
        currency = applied.account.currency
        mark = marks.get(position.symbol) if position.is_open else None
        valued = domain.value_position(position, mark)
        payload = portfolio_events.PositionChanged(
            symbol=position.symbol,
            position=position_message(valued, currency, applied.updated_at),
            previous_quantity=decimals.to_proto(domain.wire(outcome.previous_quantity)),
            realized_pnl_change=money(outcome.realized_pnl_change, currency),
            fee=money(outcome.fee, currency),
            execution_id=record.execution_id,
            order_id=record.order_id,
        )
        envelope = new_envelope(
            payload,
            tenant_id=tenant,
            correlation_id=event.envelope.correlation_id,
            causation_id=event.envelope.event_id,
            producer=PRODUCER,
        )
        key = f"{tenant}/{position.symbol}"
        return [outbox_row(envelope, NATS, partition_key=key), outbox_row(envelope, KAFKA, partition_key=key)]
