"""The tick path of marketdata: feed batch -> normalise -> Redis, NATS, Kafka.

Per batch, in this order:

1. every update is normalised (services.marketdata.domain); rejections are
   counted by reason and become TickRejected events (Kafka only);
2. the last accepted tick of each symbol in the batch is written to the
   quote cache (Redis ``md:quote:{symbol}``) in one pipelined round trip (earlier ticks of the
   batch would be overwritten at once anyway), so whoever reacts to a NATS
   tick finds a quote at least as new in Redis;
3. every accepted tick goes to NATS core (buffered by the client, no round
   trip) as its own Tick event (for per-symbol subscribers: execution's
   venue, StreamQuotes) and, once more, inside one TickBatch event per symbol
   partition (``marketdata.tickbatches.<partition>``, for features: one
   message per partition and batch instead of one per tick);
4. the batch goes to Kafka in the background
   (:class:`runtime.messaging.background.BackgroundPublisher`, in order,
   batched: one produce request per linger, services/marketdata/main.py)
   while the next batch is prepared; at most ``kafka_max_pending`` events
   wait (backpressure on the feed when Kafka is slower than the feed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from functools import cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from trading.common.v1 import event_pb2
from trading.marketdata.v1 import events_pb2

from runtime.messaging import new_envelope
from runtime.messaging.background import BackgroundPublisher
from runtime.messaging.kafka import KafkaPublisher
from runtime.messaging.nats import NatsPublisher
from runtime.tasks import stop_task
from services.marketdata.domain import Normalizer, RawTick, Rejection, RejectReason, tick_batches
from services.marketdata.feeds import Feed
from services.marketdata.ports import QuoteCache

log = logging.getLogger(__name__)

PRODUCER = "marketdata"


class MarketDataMetrics:
    """Prometheus counters of the tick path (labels: bounded reason/source names)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else REGISTRY
        self.accepted = Counter(
            "trading_marketdata_ticks_accepted", "Feed updates accepted and published as ticks.", ["source"],
            registry=reg,
        )  # fmt: skip
        self.rejected = Counter(
            "trading_marketdata_ticks_rejected", "Feed updates rejected by normalisation.", ["reason"],
            registry=reg,
        )  # fmt: skip
        self.publish_failures = Counter(
            "trading_marketdata_publish_failures", "Batches whose publishing failed.", ["stage"], registry=reg
        )
        self._rejected = {r: self.rejected.labels(r.label) for r in RejectReason}

    def reject(self, reason: RejectReason) -> None:
        self._rejected[reason].inc()


@cache
def default_metrics() -> MarketDataMetrics:
    return MarketDataMetrics()


class TickPipeline:
    """Normalises and publishes feed batches (see the module docstring)."""

    def __init__(
        self,
        normalizer: Normalizer,
        *,
        quotes: QuoteCache,
        nats: NatsPublisher,
        kafka: KafkaPublisher,
        metrics: MarketDataMetrics | None = None,
        kafka_max_pending: int = 20_000,
    ) -> None:
        self._normalizer = normalizer
        self._quotes = quotes
        self._nats = nats
        self._metrics = metrics or default_metrics()
        self._kafka = BackgroundPublisher(
            kafka,
            name="marketdata-ticks",
            max_pending=kafka_max_pending,
            max_batch=kafka_max_pending,
            on_failure=lambda _events, _exc: self._metrics.publish_failures.labels("kafka").inc(),
        )
        self.accepted = 0
        self.rejected = 0

    async def publish(self, batch: Sequence[RawTick]) -> None:
        now_ns = time.time_ns()
        normalize = self._normalizer.normalize
        accepted: list[tuple[event_pb2.EventEnvelope, events_pb2.Tick]] = []
        rejected: list[tuple[event_pb2.EventEnvelope, events_pb2.TickRejected]] = []
        latest: dict[str, bytes] = {}
        for raw in batch:
            result = normalize(raw, now_ns)
            if isinstance(result, Rejection):
                self._metrics.reject(result.reason)
                event = result.to_event(now_ns)
                rejected.append(
                    (new_envelope(event, tenant_id="", correlation_id="", producer=PRODUCER), event)
                )
                continue
            envelope = new_envelope(
                result, tenant_id="", correlation_id="", producer=PRODUCER, occurred_at=result.receive_time
            )
            accepted.append((envelope, result))
            # The packed payload is the tick's bytes, which are the Quote's bytes.
            latest[result.symbol] = envelope.payload.value
        if accepted:
            self._metrics.accepted.labels(accepted[0][1].source).inc(len(accepted))
        self.accepted += len(accepted)
        self.rejected += len(rejected)
        if latest:
            try:
                await self._quotes.put_latest(latest)
            except Exception as exc:
                self._metrics.publish_failures.labels("redis").inc()
                log.warning("writing %d quotes to Redis failed: %r", len(latest), exc)
        # The batches carry each tick's event id: features names it as its
        # vector's causation and correlation, as with per-tick events.
        batches = [
            (
                new_envelope(
                    b, tenant_id="", correlation_id="", producer=PRODUCER, occurred_at=b.ticks[0].receive_time
                ),
                b,
            )
            for b in tick_batches((envelope.event_id, tick) for envelope, tick in accepted)
        ]
        try:
            await self._nats.publish_many([*accepted, *batches])
        except Exception as exc:
            self._metrics.publish_failures.labels("nats").inc()
            log.warning("publishing ticks on NATS failed: %r", exc)
        self._kafka.start()
        await self._kafka.submit_many([*accepted, *rejected])

    async def drain(self) -> None:
        """Wait for the Kafka sends queued so far (logged and counted, not raised, on failure)."""
        await self._kafka.drain()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is queued for Kafka (bounded), then stop the background sender."""
        await self._kafka.stop(timeout_s)


class FeedRunner:
    """Runs one feed through a pipeline in a background task."""

    def __init__(self, feed: Feed, pipeline: TickPipeline) -> None:
        self._feed = feed
        self._pipeline = pipeline
        self._task: asyncio.Task[None] | None = None
        # Set by stop(): the loop ends at its next batch. A cancel alone is not
        # enough: a client library can swallow it (seen in CI: a Redis read),
        # and the feed would then run on after its service stopped.
        self._stopping = False
        self.finished = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"feed-{self._feed.name}")

    async def _run(self) -> None:
        try:
            async for batch in self._feed.batches():
                if self._stopping:
                    return
                await self._pipeline.publish(batch)
            await self._pipeline.drain()
            log.info("feed %s ended", self._feed.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("feed %s failed; no more ticks from it", self._feed.name)
        finally:
            self.finished.set()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the feed; bounded, so a stuck publish cannot hold the service's shutdown."""
        task, self._task = self._task, None
        self._stopping = True
        await stop_task(task, name=f"feed {self._feed.name}", timeout_s=timeout_s)
        await self._pipeline.stop(timeout_s)
