"""The tick path of features: NATS Tick -> FeatureEngine -> FeatureVectorComputed.

Each tick from the core NATS subscription on ``marketdata.ticks.>`` is fed to
the engine; the resulting vector is published on NATS at once (core publish,
buffered by the client) and handed to a
:class:`runtime.messaging.background.BackgroundPublisher`, which sends Kafka
events in batches in the background: awaiting each Kafka ack inside the
handler would cap the consumer at one tick per broker round trip. The
latest vector per symbol is kept in memory and copied to the vector store
(Redis ``features:vector:{symbol}``) a few times a second (for replicas and
restarts; a write per tick would cost a round trip per tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from trading.features.v1 import features_service_pb2
from trading.marketdata.v1 import events_pb2 as marketdata_events_pb2

from runtime.messaging import Event, new_envelope
from runtime.tasks import stop_task
from services.features.domain import FeatureEngine, tick_from_quote
from services.features.ports import LiveEvents, ReplayEvents, VectorStore

log = logging.getLogger(__name__)

PRODUCER = "features"
TICK_EVENT = marketdata_events_pb2.Tick.DESCRIPTOR.full_name
TICK_SUBJECTS = "marketdata.ticks.>"


class FeatureProcessor:
    """Handler of Tick events, and the latest vector per symbol."""

    def __init__(
        self,
        engine: FeatureEngine,
        *,
        nats: LiveEvents,
        kafka: ReplayEvents,
        vectors: VectorStore,
        save_interval_s: float = 0.25,
        publishes: Callable[[str], bool] | None = None,
    ) -> None:
        """``publishes(symbol)``: whether this replica publishes the symbol's
        vectors (runtime.membership: replicas share the symbols). Every
        replica keeps every symbol's indicators up to date, so the one that
        takes a symbol over publishes at once, without a warm-up."""
        self._publishes = publishes
        self._engine = engine
        self._nats = nats
        self._kafka = kafka
        self._vectors = vectors
        self._save_interval_s = save_interval_s
        self._latest: dict[str, features_service_pb2.FeatureVector] = {}
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.processed = 0

    def latest(self, symbol: str) -> features_service_pb2.FeatureVector | None:
        return self._latest.get(symbol)

    async def handle(self, event: Event) -> None:
        if event.envelope.event_type != TICK_EVENT:
            return
        assert isinstance(event.payload, marketdata_events_pb2.Tick)
        vector = self._engine.update(tick_from_quote(event.payload))
        if vector is None:
            return  # out of order or invalid: counted by the engine
        if self._publishes is not None and not self._publishes(vector.symbol):
            return  # another replica publishes this symbol
        payload = vector.to_event(datetime.now(UTC))
        envelope = new_envelope(
            payload,
            tenant_id="",
            correlation_id=event.envelope.correlation_id or event.envelope.event_id,
            causation_id=event.envelope.event_id,
            producer=PRODUCER,
        )
        self._latest[payload.symbol] = payload.vector
        self._dirty.add(payload.symbol)
        self.processed += 1
        await self._nats.publish(envelope, payload=payload)
        await self._kafka.submit(envelope, payload)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="features-redis-flush")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._save_interval_s)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("saving feature vectors failed: %r", exc)

    async def flush(self) -> None:
        """Save the vectors changed since the last flush."""
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        try:
            await self._vectors.save({symbol: self._latest[symbol] for symbol in dirty})
        except Exception:
            self._dirty |= dirty  # try again next time
            raise

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task, name="the features flusher")
        with contextlib.suppress(Exception):
            await self.flush()
