"""The tick path of features: NATS TickBatch -> BatchFeatureEngine ->
FeatureVectorComputed.

marketdata publishes each feed batch's ticks once more as one TickBatch per
symbol partition (``marketdata.tickbatches.<partition>``); features
subscribes to the partitions of its share of the symbols (all of them by
default; ``features.partition``: see :func:`tick_subjects`) and takes a
batch at a time: the engine updates the indicators (``features.engine``:
symbol by symbol, or RSI and volatility across the batch's symbols at once,
services.features.domain.batch), and the vectors go out as one
``publish_many`` on NATS, one per tick, each exactly as before (decision
reads them). The same vectors are handed to a
:class:`runtime.messaging.background.BackgroundPublisher`, which sends Kafka
events in batches in the background: awaiting each Kafka ack inside the
handler would cap the consumer at one batch per broker round trip. The
latest vector per symbol is kept in memory and copied to the vector store
(Redis ``features:vector:{symbol}``) a few times a second (for replicas and
restarts; a write per tick would cost a round trip per tick).

A single Tick event (a re-driven dead letter of the per-tick consumer this
replaced, or a test) is handled as a batch of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from google.protobuf import message as pb_message
from trading.common.v1 import event_pb2
from trading.features.v1 import features_service_pb2
from trading.marketdata.v1 import events_pb2 as marketdata_events_pb2

from runtime.messaging import Event, new_envelope
from runtime.messaging.telemetry import MessagingMetrics, default_metrics
from runtime.tasks import stop_task
from services.features.domain import BatchFeatureEngine, FeatureEngine, tick_from_quote
from services.features.ports import LiveEvents, ReplayEvents, VectorStore
from services.marketdata.domain import TICK_PARTITIONS, partitions_of_share

log = logging.getLogger(__name__)

PRODUCER = "features"
TICK_EVENT = marketdata_events_pb2.Tick.DESCRIPTOR.full_name
TICK_BATCH_EVENT = marketdata_events_pb2.TickBatch.DESCRIPTOR.full_name
# Every partition's batches (a features process that takes every symbol).
TICK_BATCH_SUBJECTS = "marketdata.tickbatches.*"
# The consumer name under which the ticks taken from batches are counted
# (trading_messaging_consumed{consumer="features-ticks"}: ticks, as when
# each came as a message of its own; the batches count under the subscriber's name).
TICKS_CONSUMER = "features-ticks"


def tick_subjects(index: int = 0, shares: int = 1) -> list[str]:
    """The TickBatch subjects of share ``index`` of ``shares`` of the symbols
    (services.marketdata.domain.partitions_of_share)."""
    if shares == 1:
        return [TICK_BATCH_SUBJECTS]
    return [f"marketdata.tickbatches.{p}" for p in partitions_of_share(index, shares, TICK_PARTITIONS)]


class FeatureProcessor:
    """Handler of TickBatch (and Tick) events, and the latest vector per symbol."""

    def __init__(
        self,
        engine: FeatureEngine | BatchFeatureEngine,
        *,
        nats: LiveEvents,
        kafka: ReplayEvents,
        vectors: VectorStore,
        save_interval_s: float = 0.25,
        publishes: Callable[[str], bool] | None = None,
        metrics: MessagingMetrics | None = None,
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
        self._metrics = metrics or default_metrics()
        self._latest: dict[str, features_service_pb2.FeatureVector] = {}
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.processed = 0

    def latest(self, symbol: str) -> features_service_pb2.FeatureVector | None:
        return self._latest.get(symbol)

    async def handle(self, event: Event) -> None:
        payload = event.payload
        envelope = event.envelope
        if envelope.event_type == TICK_BATCH_EVENT:
            assert isinstance(payload, marketdata_events_pb2.TickBatch)
            ids: Sequence[str] = payload.tick_event_ids
            if len(ids) != len(payload.ticks):
                ids = [""] * len(payload.ticks)  # an older producer: no causation per tick
            await self._apply(payload.ticks, ids, envelope.correlation_id)
        elif envelope.event_type == TICK_EVENT:
            assert isinstance(payload, marketdata_events_pb2.Tick)
            await self._apply([payload], [envelope.event_id], envelope.correlation_id)

    async def _apply(
        self, ticks: Sequence[marketdata_events_pb2.Tick], tick_ids: Sequence[str], correlation_id: str
    ) -> None:
        vectors = self._engine.update_many([tick_from_quote(t) for t in ticks])
        computed_at = datetime.now(UTC)
        publishes = self._publishes
        out: list[tuple[event_pb2.EventEnvelope, pb_message.Message | None]] = []
        for vector, tick_id in zip(vectors, tick_ids, strict=True):
            if vector is None:
                continue  # out of order or invalid: counted by the engine
            if publishes is not None and not publishes(vector.symbol):
                continue  # another replica publishes this symbol
            payload = vector.to_event(computed_at)
            # The tick's event id is the vector's correlation (as per-tick
            # events had it): the benchmark and traces link the two by it.
            envelope = new_envelope(
                payload,
                tenant_id="",
                correlation_id=correlation_id or tick_id,
                causation_id=tick_id,
                producer=PRODUCER,
            )
            self._latest[payload.symbol] = payload.vector
            self._dirty.add(payload.symbol)
            out.append((envelope, payload))
        self.processed += len(out)
        self._metrics.consumed_many("nats", TICKS_CONSUMER, TICK_EVENT, len(ticks))
        if out:
            await self._nats.publish_many(out)
            await self._kafka.submit_many(out)

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
