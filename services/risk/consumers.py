"""Risk's own position and PnL view, from execution's fills; and the
correlation clusters, from analytics.

Portfolio is the book of record; risk keeps just enough (signed quantity and
average price per tenant and symbol, realised PnL per UTC day) in Redis to
check orders without a call to portfolio on the hot path. Fills arrive as
`OrderFillReported` on Kafka `trading.execution.fills` (group `risk.fills`,
at-least-once); each is applied once, keyed by the fill's execution id (the
contract's dedup key; the envelope's event id when it is missing).

The correlation clusters (``CorrelationClustersComputed``) come twice: on
core NATS (queue group ``risk-correlations``: applied within milliseconds of
the computation, also while Kafka is down) and on Kafka (group
``risk.correlations``: a risk that was down applies the latest on its
return). Both apply through :meth:`RiskStore.set_clusters`, which keeps the
newest computation only, so the second copy changes nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from trading.analytics.v1 import events_pb2 as analytics_events
from trading.execution.v1 import events_pb2 as exec_events

from runtime import decimals
from runtime.config import Settings
from runtime.contracts import event_registry
from runtime.messaging.base import Event, RetryPolicy
from runtime.messaging.kafka import KafkaPublisher, KafkaSubscriber
from runtime.messaging.nats import NatsSubscriber
from services.risk import domain
from services.risk.events import RiskEvents
from services.risk.ports import RiskStore
from services.risk.wire import limits_to_domain

log = logging.getLogger(__name__)

FILLS_GROUP = "risk.fills"
FILL_EVENT = exec_events.OrderFillReported.DESCRIPTOR.full_name
CLUSTERS_GROUP = "risk.correlations"
CLUSTERS_NATS_NAME = "risk-correlations"
CLUSTERS_EVENT = analytics_events.CorrelationClustersComputed.DESCRIPTOR.full_name


class FillHandler:
    """Applies one fill event to risk's positions, then re-evaluates the daily loss."""

    def __init__(self, store: RiskStore, events: RiskEvents) -> None:
        self._store = store
        self._events = events

    async def __call__(self, event: Event) -> None:
        payload = event.payload
        assert isinstance(payload, exec_events.OrderFillReported)
        fill = payload.fill
        tenant = event.envelope.tenant_id
        if not tenant or not fill.symbol or fill.side not in (1, 2):
            log.warning("fill event %s without tenant, symbol or side: ignored", event.envelope.event_id)
            return
        executed = fill.executed_at if fill.HasField("executed_at") else event.envelope.occurred_at
        applied = await self._store.apply_fill(
            tenant,
            domain.Fill(
                fill.execution_id or event.envelope.event_id,
                symbol=fill.symbol,
                side=domain.Side(fill.side),
                quantity=decimals.from_proto(fill.quantity),
                price=decimals.from_proto(fill.price),
                fee=decimals.from_proto(fill.fee.amount),
                day=datetime.fromtimestamp(executed.ToNanoseconds() / 1e9 or time.time(), UTC).date(),
            ),
        )
        if not applied:
            # A delivery again: maybe of a fill whose evaluation a crash cut
            # short. Evaluating is idempotent (the state switch happens once,
            # alerts are throttled), so evaluate anyway.
            log.debug("fill %s already applied", fill.execution_id or event.envelope.event_id)
        stored = await self._store.get_limits(tenant)
        limits = limits_to_domain(stored.limits) if stored is not None else domain.DEFAULT_LIMITS
        await self._events.evaluate_daily_loss(tenant, limits)


def fill_subscriber(
    settings: Settings,
    store: RiskStore,
    events: RiskEvents,
    dead_letters: KafkaPublisher,
    *,
    group: str = FILLS_GROUP,
) -> KafkaSubscriber:
    return KafkaSubscriber(
        settings.kafka,
        event_registry(),
        FillHandler(store, events),
        group=group,
        dead_letters=dead_letters,
        event_types=[FILL_EVENT],
        retry=RetryPolicy(max_attempts=5),
        client_id="risk",
    )


class ClustersHandler:
    """Stores the correlation clusters of one CorrelationClustersComputed,
    unless a newer computation is stored already."""

    def __init__(self, store: RiskStore) -> None:
        self._store = store

    async def __call__(self, event: Event) -> None:
        payload = event.payload
        assert isinstance(payload, analytics_events.CorrelationClustersComputed)
        if not payload.HasField("computed_at"):
            log.warning("clusters event %s without computed_at: ignored", event.envelope.event_id)
            return
        clusters = {c.cluster_id: list(c.symbols) for c in payload.clusters if len(c.symbols) >= 2}
        replaced = await self._store.set_clusters(payload.computed_at.ToMicroseconds(), clusters)
        if replaced:
            log.info("correlation clusters replaced: %d clusters", len(clusters))


def clusters_subscribers(
    settings: Settings,
    store: RiskStore,
    nats: NatsClient,
    dead_letters: KafkaPublisher,
    *,
    group: str = CLUSTERS_GROUP,
) -> tuple[KafkaSubscriber, NatsSubscriber]:
    """The Kafka and the NATS consumer of the clusters (one handler)."""
    handler = ClustersHandler(store)
    kafka = KafkaSubscriber(
        settings.kafka,
        event_registry(),
        handler,
        group=group,
        dead_letters=dead_letters,
        event_types=[CLUSTERS_EVENT],
        retry=RetryPolicy(max_attempts=5),
        client_id="risk-clusters",  # not the fills consumer's: two members of one process stay apart
    )
    core = NatsSubscriber(
        nats,
        event_registry(),
        handler,
        event_types=[CLUSTERS_EVENT],
        queue=CLUSTERS_NATS_NAME,
        name=CLUSTERS_NATS_NAME,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.5),
    )
    return kafka, core
